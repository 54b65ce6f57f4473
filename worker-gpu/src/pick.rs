//! Which queued request an executor that has just become free runs next: the earliest
//! deadline among those whose model has an idle session now (the queue is kept in
//! deadline order by [`crate::apps::enqueue`]), so that a request waiting for a busy or
//! loading model does not hold up requests of other models.

use protocol::messages::AgentRequest;
use std::collections::VecDeque;

/// The position in `queue` of the next request to start, if any can start now.
pub fn next_runnable(
    queue: &VecDeque<AgentRequest>,
    has_idle: impl Fn(&str) -> bool,
) -> Option<usize> {
    queue.iter().position(|r| has_idle(&r.model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::enqueue;

    fn req(id: u64, model: &str, deadline_ms: u64) -> AgentRequest {
        crate::test_requests::request(id, &format!("{model}#0"), model, deadline_ms)
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
        while let Some(i) = next_runnable(&all, |_| true) {
            picked.extend(all.remove(i).map(|r| r.id));
        }
        assert_eq!(picked, vec![3, 2, 4, 1]);
        // P-Net's sessions are all busy: the free executor takes R-Net's request, the
        // earliest of the others, instead of waiting behind P-Net's.
        let i = next_runnable(&q, |m| m != "pnet").expect("one can run");
        assert_eq!(q[i].id, 2);
        // Nothing idle: nothing starts.
        assert_eq!(next_runnable(&q, |_| false), None);
    }
}
