//! Helpers for SmartPipe's end-to-end tests: locating the built binaries, making
//! temporary app folders and test media, and inspecting processes.
