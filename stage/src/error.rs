//! The one error type of every stage program (user programs, `worker-cpu` and
//! `worker-gpu`: the GPU stage and the agent): what its function returns and what the
//! runtime below it can fail with.

use protocol::messages::AgentError;
use protocol::node::NodeError;
use protocol::shm::ShmError;

/// Non-exhaustive: a later SDK may add variants, so a user program that matches on it keeps a
/// wildcard arm and still compiles.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The task's params do not parse into its function's typed params.
    #[error("task '{task}' ({function}): params: {detail}")]
    Params {
        task: String,
        function: String,
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
    /// A file the stage reads or writes.
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    /// The stage's ffmpeg child (a video source or sink).
    #[error("ffmpeg: {0}")]
    Ffmpeg(String),
    /// The task asks for something this stage cannot do (a model family, a format).
    #[error("{0}")]
    Unsupported(String),
    /// The input cannot be processed (a model's outputs, an item's state): the stage
    /// fails; unlike [`StageError::BadInput`] it does not go on.
    #[error("{0}")]
    Input(String),
    /// The device agent answered a request of the GPU stage with an error.
    #[error("model {model}: {error}")]
    Agent { model: String, error: AgentError },
    /// The device agent answered none of the GPU stage's requests in time.
    #[error("model {model}: the GPU agent did not answer within {waited_s} s")]
    AgentSilent { model: String, waited_s: u64 },
    /// Anything else the stage's own code reports: the stage fails.
    #[error("{0}")]
    Failed(String),
}

impl StageError {
    /// A file's error: `path: err`.
    pub fn io(path: impl std::fmt::Display, err: impl std::fmt::Display) -> StageError {
        StageError::Io {
            path: path.to_string(),
            detail: err.to_string(),
        }
    }

    /// The supervisor stopped the stage: a clean end (exit status 0), not a failure.
    pub fn is_stop(&self) -> bool {
        matches!(self, StageError::Node(NodeError::Stopped))
    }
}
