//! The supervisor's environment and the OS: settings and per-app variables (`appenv`), the
//! machine and the runtime folder (`runtime`), cgroups, the console of a followed app, and
//! spawning and bootstrapping child processes (`launch`), the agent's malloc settings (`malloc`).
//! The lowest room: it uses no other.

pub mod appenv;
pub mod cgroup;
pub mod console;
pub mod launch;
pub mod malloc;
pub mod runtime;
