//! The apps a node's shared GPU agent serves: each attaches its pools, the inboxes of
//! its GPU stages and its models (loaded once when two apps use the same file), and
//! detaches when it ends. The residency budget is the sum of the attached apps' shares
//! while every app states one (the device's memory otherwise), and requests are queued
//! earliest deadline first across apps.

use crate::residency::{AgentModel, Residency};
use protocol::messages::AgentRequest;
use protocol::node::{Node, NodeError};
use protocol::PoolId;
use stage::StageError;
use std::collections::{BTreeMap, VecDeque};

/// What the agent keeps of an attached app.
struct Share {
    pools: Vec<PoolId>,
    budget_mb: Option<u64>,
}

/// Every app attached to this agent.
pub struct Apps {
    apps: BTreeMap<String, Share>,
    /// The device's own budget (its memory), for when an app states no share.
    device_budget: Option<u64>,
}

impl Apps {
    pub fn new(device_budget: Option<u64>) -> Apps {
        Apps {
            apps: BTreeMap::new(),
            device_budget,
        }
    }

    /// Take app `app`'s attach wire in: pools, GPU-stage inboxes, models, budget. An
    /// app attached again (after an agent restart, or by mistake) replaces its entry.
    pub fn attach(
        &mut self,
        node: &mut Node,
        res: &mut Residency,
        order: &mut Vec<String>,
        app: &str,
    ) -> Result<(), StageError> {
        let wire = node.receive_attach()?;
        if wire.app != app {
            return Err(NodeError::Bootstrap(format!(
                "attach of app '{app}' carries app '{}'",
                wire.app
            ))
            .into());
        }
        if self.apps.contains_key(app) {
            self.detach(node, res, order, app);
        }
        let models: Vec<AgentModel> = serde_json::from_str(&wire.models_json)
            .map_err(|e| NodeError::Bootstrap(format!("models of app '{app}': {e}")))?;
        res.add_models(app, models.clone(), wire.guaranteed)
            .map_err(StageError::Failed)?;
        for m in models {
            if !order.contains(&m.name) {
                order.push(m.name);
            }
        }
        node.add_pools(&wire.pools, wire.handles, wire.holder)?;
        node.place_outputs(wire.first_output, wire.outputs)?;
        self.apps.insert(
            app.to_string(),
            Share {
                pools: wire.pools.iter().map(|p| p.id).collect(),
                budget_mb: wire.budget_mb,
            },
        );
        res.set_budget(self.budget());
        tracing::info!(app, pools = wire.pools.len(), first_output = wire.first_output, budget_mb = ?self.budget().map(|b| b >> 20), "app attached");
        Ok(())
    }

    /// App `app` has ended: its pools unmapped, the models only it used unloaded.
    pub fn detach(
        &mut self,
        node: &mut Node,
        res: &mut Residency,
        order: &mut Vec<String>,
        app: &str,
    ) {
        let Some(share) = self.apps.remove(app) else {
            return;
        };
        node.remove_pools(&share.pools);
        let gone = res.remove_app(app);
        order.retain(|n| !gone.contains(n));
        res.set_budget(self.budget());
        tracing::info!(app, unloaded = ?gone, "app detached");
    }

    /// Bytes resident models may use: the sum of the apps' shares when every app has
    /// one, else the device's own budget (none = unlimited).
    fn budget(&self) -> Option<u64> {
        let shares: Option<u64> = self
            .apps
            .values()
            .map(|s| s.budget_mb.map(|mb| mb.saturating_mul(1024 * 1024)))
            .sum();
        shares.or(self.device_budget)
    }
}

/// How the agent orders its queue: earliest deadline first, or first come first served
/// (`SMARTPIPE_AGENT_ORDER=fcfs`, kept for the benchmark that compares the two).
pub fn fcfs_from_env() -> bool {
    std::env::var("SMARTPIPE_AGENT_ORDER").is_ok_and(|v| v.eq_ignore_ascii_case("fcfs"))
}

/// Queue `req` earliest deadline first (after every request due no later, so requests
/// of one stage keep their order), or at the back when `fcfs`.
pub fn enqueue(queue: &mut VecDeque<AgentRequest>, req: AgentRequest, fcfs: bool) {
    if fcfs {
        queue.push_back(req);
        return;
    }
    let at = queue
        .iter()
        .position(|q| q.deadline_ns > req.deadline_ns)
        .unwrap_or(queue.len());
    queue.insert(at, req);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64, stage: &str, deadline_ms: u64) -> AgentRequest {
        crate::test_requests::request(id, stage, "m", deadline_ms)
    }

    #[test]
    fn a_guaranteed_request_overtakes_a_best_effort_burst_queued_before_it() {
        let mut q = VecDeque::new();
        // A best-effort burst (an hour's deadline), then a guaranteed request due in 200 ms.
        for id in 0..50 {
            enqueue(&mut q, req(id, "be#0", 3_600_000 + id), false);
        }
        enqueue(&mut q, req(100, "rg#0", 200), false);
        assert_eq!(q.front().map(|r| r.id), Some(100));
        // Requests of one stage with equal deadlines keep their order.
        enqueue(&mut q, req(101, "rg#0", 200), false);
        enqueue(&mut q, req(102, "rg#0", 200), false);
        let ids: Vec<u64> = q.iter().take(3).map(|r| r.id).collect();
        assert_eq!(ids, vec![100, 101, 102]);
        // And the burst still runs in its own order after them.
        let rest: Vec<u64> = q.iter().skip(3).map(|r| r.id).collect();
        assert_eq!(rest, (0..50).collect::<Vec<_>>());
    }
}
