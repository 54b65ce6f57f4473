//! Agent requests for the agent's unit tests: only the fields that scheduling looks at
//! (id, stage, model, deadline, guaranteed) are meaningful; the output reference points nowhere.

use protocol::messages::AgentRequest;
use protocol::shm::ShmRef;
use protocol::PoolId;

/// A request of `stage` for `model`, due at `deadline_ms` on the agent's clock.
pub(crate) fn request(id: u64, stage: &str, model: &str, deadline_ms: u64) -> AgentRequest {
    AgentRequest {
        id,
        stage: stage.into(),
        reply_to: 0,
        model: model.into(),
        inputs: vec![],
        output: ShmRef {
            pool: PoolId::new(1),
            slot: 0,
            generation: 0,
            offset: 0,
            len: 0,
        },
        deadline_ns: deadline_ms * 1_000_000,
        guaranteed: false,
    }
}
