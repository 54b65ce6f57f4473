//! The agent-client role: a GPU stage's view of its device agent. It sends requests,
//! matches the replies to them by id, ignores the replies of a killed incarnation of
//! this stage, sends the unanswered requests again when the agent was restarted, gives
//! up after [`AGENT_TIMEOUT`] without a reply, and keeps the items that arrive on the
//! stage's inbox meanwhile (the stage takes them back with [`AgentClient::take_arrived`]).

use crate::{Item, StageError};
use protocol::messages::{AgentError, AgentRequest, Command, Inbox, Setup, TensorRef};
use protocol::node::{Event, Node, NodeError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a stage waits for its agent's replies before giving up on it (counted again
/// from a restart of the agent).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long one look at the inbox waits while replies are due.
const POLL: Duration = Duration::from_millis(200);

/// Answered requests whose time at the agent is kept for [`AgentClient::latency_line`].
const MAX_LATENCIES: usize = 1_000_000;

/// One request's answer: the outputs (sub-ranges of its output slot) or the agent's
/// typed error.
pub type AgentResult = Result<Vec<TensorRef>, AgentError>;

/// What arrived on the stage's inbox while the client waited for replies.
#[derive(Default)]
pub struct Arrived {
    /// Data items, in arrival order (handles: they hold their shared memory).
    pub items: VecDeque<Item>,
    /// Every upstream replica ended its stream.
    pub ended: bool,
}

/// The GPU stage's client of its device agent.
pub struct AgentClient {
    /// The agent among the node's outputs.
    agent: u32,
    /// This stage's inbox among the agent's outputs (the requests' `reply_to`).
    reply_to: u32,
    /// The last request id used.
    last_id: u64,
    arrived: Arrived,
    /// How long each answered request took at the agent (queue + run), ms.
    agent_ms: Vec<f64>,
}

/// Where a process's request ids start: request ids of one replica never repeat across
/// its restarts, so the agent's reply to a request of a killed incarnation (still queued
/// at the agent, now answered into the rewired inbox) is told apart and ignored instead
/// of being taken for the new process's own request with the same number.
fn first_request_id(incarnation: u32) -> u64 {
    u64::from(incarnation) << 40
}

impl AgentClient {
    /// The client of the agent named in the stage's setup (`agent_output`,
    /// `agent_reply_to`); its request ids are this incarnation's.
    pub fn new(setup: &Setup) -> Result<AgentClient, StageError> {
        let agent = setup
            .agent_output
            .ok_or_else(|| NodeError::Bootstrap("GPU stage without an agent".into()))?;
        let reply_to = setup
            .agent_reply_to
            .ok_or_else(|| NodeError::Bootstrap("GPU stage without a reply route".into()))?;
        Ok(AgentClient {
            agent,
            reply_to,
            last_id: first_request_id(setup.incarnation),
            arrived: Arrived::default(),
            agent_ms: Vec::new(),
        })
    }

    /// This stage's inbox among the agent's outputs: every request's `reply_to`.
    pub fn reply_to(&self) -> u32 {
        self.reply_to
    }

    /// Send every request at once (the agent may run them side by side; their ids are
    /// set here) and wait for all their replies: the answers come back in the requests'
    /// order. Items and the end of stream that arrive meanwhile are kept for
    /// [`AgentClient::take_arrived`]. Fails when the supervisor stops the stage or the
    /// agent answers nothing for [`AGENT_TIMEOUT`].
    pub fn call_all(
        &mut self,
        node: &mut Node,
        requests: Vec<AgentRequest>,
    ) -> Result<Vec<AgentResult>, StageError> {
        let model = requests
            .first()
            .map(|r| r.model.clone())
            .unwrap_or_default();
        let first = self.last_id + 1;
        let mut sent = Vec::with_capacity(requests.len());
        for mut request in requests {
            self.last_id += 1;
            request.id = self.last_id;
            let request = Inbox::AgentRequest(request);
            node.send_to(self.agent, &request)?;
            sent.push(request);
        }
        let mut answers: Vec<Option<AgentResult>> = vec![None; sent.len()];
        let asked = Instant::now();
        let mut deadline = asked + AGENT_TIMEOUT;
        while answers.iter().any(Option::is_none) {
            if Instant::now() > deadline {
                return Err(StageError::AgentSilent {
                    model,
                    waited_s: AGENT_TIMEOUT.as_secs(),
                });
            }
            match node.next(POLL)? {
                Event::Reply(r) => match r.id.checked_sub(first).map(|k| k as usize) {
                    Some(k) if k < answers.len() => {
                        if answers[k].is_none() && self.agent_ms.len() < MAX_LATENCIES {
                            self.agent_ms.push(asked.elapsed().as_secs_f64() * 1e3);
                        }
                        answers[k] = Some(r.result);
                    }
                    _ => tracing::warn!(id = r.id, "stale agent reply ignored"),
                },
                Event::Item(env) => self.arrived.items.push_back(Item::new(node, env)?),
                Event::End => self.arrived.ended = true,
                Event::Command(Command::Stop) => return Err(NodeError::Stopped.into()),
                // The agent was restarted: it lost the requests, so ask again.
                Event::Rewired(k) if k == self.agent => {
                    self.send_again(node, &sent, &answers)?;
                    deadline = Instant::now() + AGENT_TIMEOUT;
                }
                _ => {}
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Send the requests that have no answer yet to a restarted agent.
    fn send_again(
        &self,
        node: &Node,
        sent: &[Inbox],
        answers: &[Option<AgentResult>],
    ) -> Result<(), StageError> {
        let left = answers.iter().filter(|a| a.is_none()).count();
        tracing::info!(
            left,
            "the GPU agent was restarted; sending the requests again"
        );
        for (request, answer) in sent.iter().zip(answers) {
            if answer.is_none() {
                node.send_to(self.agent, request)?;
            }
        }
        Ok(())
    }

    /// The items (and the end of stream) that arrived while the client waited, for the
    /// stage to process next; the client keeps none of them.
    pub fn take_arrived(&mut self) -> Arrived {
        std::mem::take(&mut self.arrived)
    }

    /// Requests answered, p50 and p99 of their time at the agent: the stage's last log
    /// line, the app's view of the agent's schedule.
    pub fn latency_line(&mut self) -> String {
        let ms = &mut self.agent_ms;
        if ms.is_empty() {
            return "no agent requests".into();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        format!(
            "agent requests: {}, p50 {:.2} ms, p99 {:.2} ms",
            ms.len(),
            at(0.5),
            at(0.99)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::first_request_id;

    #[test]
    fn request_ids_of_a_restarted_stage_never_meet_its_earlier_processes_ids() {
        // A process sends at most 2^40 requests before its ids would reach the next
        // incarnation's range (years at a million a second).
        for inc in 0..5u32 {
            let mine = first_request_id(inc) + 1..=first_request_id(inc) + 1_000_000;
            let next = first_request_id(inc + 1) + 1;
            assert!(!mine.contains(&next), "incarnation {inc}");
        }
        assert_eq!(
            first_request_id(0),
            0,
            "a first process counts from 1 as before"
        );
    }
}
