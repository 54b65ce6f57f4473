//! Which queued request an executor that has just become free runs next: the earliest
//! deadline among those whose model has an idle session now (the queue is kept in
//! deadline order by [`crate::apps::enqueue`]), so that a request waiting for a busy or
//! loading model does not hold up requests of other models. While the agent serves a
//! request-guarantee app, a best-effort run never takes the last free executor
//! ([`Executors::may_start`]): earliest deadline first can put a guaranteed request ahead
//! of queued ones, not ahead of runs already started, so without a free executor it
//! would wait for a best-effort run to finish.

use protocol::messages::AgentRequest;
use std::collections::VecDeque;

/// What the pick needs to know of the executors.
#[derive(Debug, Clone, Copy)]
pub struct Executors {
    pub busy: usize,
    pub size: usize,
    /// Keep one executor for guaranteed requests (the agent serves a guaranteed app and
    /// `SMARTPIPE_AGENT_KEEP` is not `0`).
    pub keep_one: bool,
}

impl Executors {
    /// Nothing kept: any request may start (a test that looks at models and deadlines).
    #[cfg(test)]
    pub const ANY: Executors = Executors {
        busy: 0,
        size: 2,
        keep_one: false,
    };

    /// Whether `req` may start on a free executor now.
    pub fn may_start(&self, req: &AgentRequest) -> bool {
        req.guaranteed || !self.keep_one || self.size < 2 || self.busy + 1 < self.size
    }
}

/// Whether the agent keeps an executor for guaranteed requests (default yes;
/// `SMARTPIPE_AGENT_KEEP=0` turns it off, for the benchmark that compares the two).
pub fn keep_from_env() -> bool {
    std::env::var("SMARTPIPE_AGENT_KEEP").map_or(true, |v| v != "0")
}

/// The position in `queue` of the next request to start, if any can start now.
pub fn next_runnable(
    queue: &VecDeque<AgentRequest>,
    has_idle: impl Fn(&str) -> bool,
    executors: Executors,
) -> Option<usize> {
    queue
        .iter()
        .position(|r| has_idle(&r.model) && executors.may_start(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::enqueue;

    fn req(id: u64, model: &str, deadline_ms: u64) -> AgentRequest {
        crate::test_requests::request(id, &format!("{model}#0"), model, deadline_ms)
    }

    const ANY: Executors = Executors::ANY;

    #[test]
    fn a_best_effort_run_never_takes_the_last_executor_from_a_guaranteed_app() {
        let mut q = VecDeque::new();
        // A best-effort burst (an hour's deadline) queued before a guaranteed request.
        for id in 1..=3 {
            enqueue(&mut q, req(id, "pnet", 3_600_000), false);
        }
        let guaranteed = AgentRequest {
            guaranteed: true,
            ..req(9, "rnet", 7_200_000)
        };
        enqueue(&mut q, guaranteed, false);
        let one_busy = Executors {
            busy: 1,
            size: 2,
            keep_one: true,
        };
        // Both free: a best-effort request may take one of them.
        let both_free = Executors {
            busy: 0,
            ..one_busy
        };
        assert_eq!(next_runnable(&q, |_| true, both_free), Some(0));
        // One left: only the guaranteed request may take it, even behind the burst.
        let i = next_runnable(&q, |_| true, one_busy).expect("the guaranteed one");
        assert_eq!(q[i].id, 9);
        let mut burst_only = q.clone();
        burst_only.remove(i);
        assert_eq!(next_runnable(&burst_only, |_| true, one_busy), None);
        // Not kept (no guaranteed app served, or turned off), or one executor only: as before.
        let not_kept = Executors {
            keep_one: false,
            ..one_busy
        };
        assert_eq!(next_runnable(&burst_only, |_| true, not_kept), Some(0));
        let single = Executors {
            busy: 0,
            size: 1,
            keep_one: true,
        };
        assert_eq!(next_runnable(&burst_only, |_| true, single), Some(0));
    }

    #[test]
    fn each_free_executor_takes_the_earliest_deadline_it_can_run_now() {
        let mut q = VecDeque::new();
        for (id, model, due) in [
            (1, "pnet", 300),
            (2, "rnet", 100),
            (3, "pnet", 50),
            (4, "onet", 200),
        ] {
            enqueue(&mut q, req(id, model, due), false);
        }
        let order: Vec<u64> = q.iter().map(|r| r.id).collect();
        assert_eq!(order, vec![3, 2, 4, 1]);
        // Every model has an idle session: the executors pick in deadline order.
        let mut picked = Vec::new();
        let mut all = q.clone();
        while let Some(i) = next_runnable(&all, |_| true, ANY) {
            picked.extend(all.remove(i).map(|r| r.id));
        }
        assert_eq!(picked, vec![3, 2, 4, 1]);
        // P-Net's sessions are all busy: the free executor takes R-Net's request, the
        // earliest of the others, instead of waiting behind P-Net's.
        let i = next_runnable(&q, |m| m != "pnet", ANY).expect("one can run");
        assert_eq!(q[i].id, 2);
        // Nothing idle: nothing starts.
        assert_eq!(next_runnable(&q, |_| false, ANY), None);
    }
}
