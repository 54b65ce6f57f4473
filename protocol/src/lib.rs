//! `protocol`: everything two SmartPipe processes must agree on.
//!
//! - [`spec`]: the app JSON format (the user-facing contract), its parsing with
//!   located errors and its validation ([`validate`]), the function registry
//!   ([`functions`]) and the JSON Schema generated from it ([`schema`]).
//! - [`messages`] and [`codec`]: the wire protocol between the supervisor and its
//!   children (bootstrap, control, data envelopes), encoded with bincode.
//! - [`shm`]: memfd-backed slot pools that carry frame and tensor payloads.
//! - [`predicate`]: the `table.filter {where}` language and its parser.
//! - [`limits`]: the pixel, byte and rate limits on what input can make us allocate.
//! - [`user_stage`]: user-written stages (programs): their app field, the kinds of
//!   payload they declare and the type check of their edges.
//! - [`blob`]: the content of `bench.blob` items, which its sink and `bench` check.
//! - [`clock`]: the monotonic clock every process stamps envelopes with.
//! - [`ids`]: the typed ids of tasks, shared-memory pools and holders.

pub mod blob;
pub mod child;
pub mod clock;
pub mod codec;
pub mod functions;
pub mod ids;
pub mod json_keys;
pub mod limits;
pub mod logcap;
pub mod messages;
pub mod node;
pub mod predicate;
pub mod ranges;
pub mod samples;
pub mod schema;
pub mod shm;
pub mod spec;
pub mod text;
pub mod user_stage;
pub mod validate;
pub mod validate_flow;
mod validate_limits;

pub use ids::{HolderId, IdRangeError, PoolId, TaskId};
pub use messages::PROTOCOL_VERSION;
