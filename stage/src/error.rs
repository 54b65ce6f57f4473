//! The one error type of a stage program: what its function returns and what the
//! runtime below it can fail with.

use protocol::node::NodeError;
use protocol::shm::ShmError;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// This item cannot be processed: it is dropped and counted as lost (bad input);
    /// the stage goes on with the next one.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A parameter of the task is missing or has the wrong type.
    #[error("task '{task}', params.{param}: {detail}")]
    Param {
        task: String,
        param: String,
        detail: String,
    },
    /// The output does not fit the stage's slots (the planner sizes them like the
    /// stage's largest input frame).
    #[error("an output of {wanted} bytes does not fit a slot of {slot} bytes")]
    TooBig { wanted: u64, slot: u64 },
    /// The runtime below the stage (supervisor gone, stopped, channels).
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Shm(#[from] ShmError),
    /// Anything else the stage's own code reports: the stage fails.
    #[error("{0}")]
    Failed(String),
}
