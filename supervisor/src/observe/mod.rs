//! What can be seen of a running app: its live state as the control API shows it (`live`),
//! the timeline of events, Prometheus metrics, the progress line, and the summary and
//! report a run leaves behind. Uses `env` and `plan` only.

pub mod live;
pub mod progress;
pub mod prometheus;
pub mod report;
pub mod summary;
mod summary_render;
pub mod timeline;
