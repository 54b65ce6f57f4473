//! Which model the agent loads next when a queued request needs one that is not
//! resident: the earliest such request's model, unless making room for it now would
//! evict a model that an earlier request is still waiting to run (under a budget smaller
//! than the hosted models' sum, executors running side by side otherwise make every
//! load evict a model the next request needs: loads and evictions turn after turn).

use crate::residency::{Demand, Residency};
use protocol::messages::AgentRequest;
use std::collections::VecDeque;

/// Where each model is first wanted: `ready` (the request whose inputs are copied out
/// already) first, then the queue in its order.
pub fn demand(queue: &VecDeque<AgentRequest>, ready: Option<&AgentRequest>) -> Demand {
    Demand::new(
        ready
            .into_iter()
            .chain(queue.iter())
            .map(|r| r.model.as_str()),
    )
}

/// The model to start loading now, if any: the model of the earliest queued request
/// whose model is hosted and not resident, when nothing is loading and room can be made
/// for it without evicting a model an earlier request waits for.
pub fn next_load(
    res: &Residency,
    queue: &VecDeque<AgentRequest>,
    ready: Option<&AgentRequest>,
) -> Option<String> {
    if res.loading().is_some() {
        return None;
    }
    let offset = usize::from(ready.is_some());
    let (i, req) = queue
        .iter()
        .enumerate()
        .find(|(_, r)| res.hosts(&r.model) && !res.is_resident(&r.model))?;
    let wanted = demand(queue, ready);
    res.may_load(&req.model, &wanted, i + offset)
        .then(|| req.model.clone())
}

#[cfg(test)]
#[path = "switching_tests.rs"]
mod tests;
