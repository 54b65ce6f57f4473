//! A GPU stage (GPUBody): one process per `model.inference` task replica. It batches
//! its input (batch size and max wait from the app or the plan), groups the tensors of
//! the batch by shape (dim 0 is the batch dimension; items never get dropped for
//! having another shape, they go in another group), sends the groups to its device's
//! agent as shared-memory descriptors, all at once (each into its share of the output
//! slot, so that the agent's executors may run a frame's pyramid levels side by side),
//! and forwards the results: every non-tensor part
//! of an item (frame, state) passes through untouched, its input tensors are replaced
//! by the model's outputs for them. A batch whose outputs do not fit its output slot
//! (`output_slot_mb`) goes back to the queue and batches are capped at half its size;
//! an item that does not fit alone is skipped and counted as bad input.

use protocol::clock::now_ns;
use protocol::messages::{AgentError, AgentRequest, Command, Inbox, Payload, TensorRef};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::ShmRef;
use stage::{Body, Emit, Item, StageError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a stage waits for its agent before giving up on it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Tensors of a batch that share `shape[1..]`: (item, part index, tensor) each.
type ShapeGroup = (Vec<u32>, Vec<(usize, usize, TensorRef)>);

/// An error of the stage SDK as the node's (a runtime error stays what it is).
fn sdk(e: StageError) -> NodeError {
    match e {
        StageError::Node(e) => e,
        other => NodeError::Stage(other.to_string()),
    }
}

struct Batcher {
    /// Received items (handles: their shared memory is released when dropped).
    pending: VecDeque<Item>,
    ended: bool,
    next_id: u64,
    /// How long each answered request took at the agent (queue + run), ms: logged at
    /// the end, the app's view of the agent's schedule.
    agent_ms: Vec<f64>,
    /// Shape groups go to the agent one after the other (after a group's outputs did
    /// not fit its share of the output slot), not all at once.
    sequential: bool,
}

/// Where a process's request ids start: request ids of one replica never repeat across
/// its restarts, so the agent's reply to a request of a killed incarnation (still queued
/// at the agent, now answered into the rewired inbox) is told apart and ignored instead
/// of being taken for the new process's own request with the same number.
fn first_request_id(incarnation: u32) -> u64 {
    u64::from(incarnation) << 40
}

/// Requests, p50 and p99 of `ms` (ms), for the stage's last log line.
fn latency_line(ms: &mut [f64]) -> String {
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

fn parts(p: &Payload) -> Vec<Payload> {
    match p {
        Payload::Batch(items) => items.clone(),
        other => vec![other.clone()],
    }
}

impl Batcher {
    /// Take the next event from the inbox into `pending`; true when something happened.
    fn pump(&mut self, node: &mut Node, wait: Duration) -> Result<(), NodeError> {
        match node.next(wait)? {
            Event::Item(env) => self.pending.push_back(Item::new(node, env).map_err(sdk)?),
            Event::End => self.ended = true,
            Event::Command(Command::Stop) => return Err(NodeError::Stopped),
            Event::Reply(r) => tracing::warn!(id = r.id, "stale agent reply ignored"),
            _ => {}
        }
        Ok(())
    }

    /// Up to `size` items: wait for the first, then at most `max_wait` for the rest.
    fn collect(
        &mut self,
        node: &mut Node,
        size: usize,
        max_wait: Duration,
    ) -> Result<Vec<Item>, NodeError> {
        while self.pending.is_empty() && !self.ended {
            self.pump(node, Duration::from_millis(200))?;
        }
        let deadline = Instant::now() + max_wait;
        while self.pending.len() < size && !self.ended {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            self.pump(node, deadline - now)?;
        }
        let n = self.pending.len().min(size);
        Ok(self.pending.drain(..n).collect())
    }

    /// The outputs of every shape group of a batch: all sent at once, each into its
    /// share of the output slot ([`crate::regions`]), so that the agent may run them
    /// side by side; or, once a share was too small for its group's outputs, one after
    /// the other, each after the last one's outputs.
    fn run_groups(
        &mut self,
        node: &mut Node,
        agent: u32,
        groups: &[ShapeGroup],
        template: AgentRequest,
    ) -> Result<Vec<Vec<TensorRef>>, AgentError> {
        let slot = template.output;
        let req = |members: &[(usize, usize, TensorRef)], offset: u64, len: u64| AgentRequest {
            inputs: members.iter().map(|(_, _, t)| t.clone()).collect(),
            output: ShmRef {
                offset,
                len,
                ..slot
            },
            ..template.clone()
        };
        if groups.len() > 1 && !self.sequential {
            let weights: Vec<u64> = groups
                .iter()
                .map(|(_, m)| m.iter().map(|(_, _, t)| t.shm.len).sum())
                .collect();
            let reqs = crate::regions::split(slot.len, &weights)
                .into_iter()
                .zip(groups)
                .map(|((offset, len), (_, m))| req(m, offset, len))
                .collect();
            let results = self.call_all(node, agent, reqs)?;
            let too_small =
                |r: &Result<_, AgentError>| matches!(r, Err(AgentError::OutputSlotTooSmall { .. }));
            if !results.iter().any(too_small) {
                return results.into_iter().collect();
            }
            tracing::warn!("a shape group's outputs did not fit its share of the output slot: groups go to the agent one after the other from now on");
            self.sequential = true;
        }
        let mut used = 0u64;
        let mut out = Vec::with_capacity(groups.len());
        for (_, m) in groups {
            let one = vec![req(m, used, slot.len.saturating_sub(used))];
            let outs = self
                .call_all(node, agent, one)?
                .pop()
                .unwrap_or_else(|| Err(AgentError::Failed("no reply".into())))?;
            used = outs
                .iter()
                .map(|o| (o.shm.offset + o.shm.len).div_ceil(64) * 64)
                .max()
                .unwrap_or(used);
            out.push(outs);
        }
        Ok(out)
    }

    /// Send every request at once (the agent may run them side by side) and wait for
    /// all their replies, in the requests' order, buffering data that arrives meanwhile.
    fn call_all(
        &mut self,
        node: &mut Node,
        agent: u32,
        reqs: Vec<AgentRequest>,
    ) -> Result<Vec<Result<Vec<TensorRef>, AgentError>>, AgentError> {
        let mut sent = Vec::with_capacity(reqs.len());
        for mut req in reqs {
            self.next_id += 1;
            req.id = self.next_id;
            let request = Inbox::AgentRequest(req);
            node.send_to(agent, &request)
                .map_err(|e| format!("agent unreachable: {e}"))?;
            sent.push(request);
        }
        let first = self.next_id + 1 - sent.len() as u64;
        let mut results: Vec<Option<Result<Vec<TensorRef>, AgentError>>> = vec![None; sent.len()];
        let mut left = sent.len();
        let asked = Instant::now();
        let mut deadline = Instant::now() + AGENT_TIMEOUT;
        while left > 0 {
            if Instant::now() > deadline {
                return Err(format!(
                    "the GPU agent did not answer within {} s",
                    AGENT_TIMEOUT.as_secs()
                )
                .into());
            }
            match node
                .next(Duration::from_millis(200))
                .map_err(|e| e.to_string())?
            {
                Event::Reply(r) if r.id >= first && r.id < first + sent.len() as u64 => {
                    let k = (r.id - first) as usize;
                    if results[k].is_none() {
                        left -= 1;
                        if self.agent_ms.len() < 1_000_000 {
                            self.agent_ms.push(asked.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    results[k] = Some(r.result);
                }
                Event::Reply(r) => tracing::warn!(id = r.id, "stale agent reply ignored"),
                Event::Item(env) => self
                    .pending
                    .push_back(Item::new(node, env).map_err(|e| e.to_string())?),
                Event::End => self.ended = true,
                Event::Command(Command::Stop) => return Err("stopped".into()),
                // The agent was restarted: it lost the requests, so ask again.
                Event::Rewired(k) if k == agent => {
                    tracing::info!(
                        first,
                        left,
                        "the GPU agent was restarted; sending the requests again"
                    );
                    for (request, done) in sent.iter().zip(&results) {
                        if done.is_none() {
                            node.send_to(agent, request)
                                .map_err(|e| format!("agent unreachable: {e}"))?;
                        }
                    }
                    deadline = Instant::now() + AGENT_TIMEOUT;
                }
                _ => {}
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err("no reply".into())))
            .collect())
    }
}

/// Run a GPU stage until its inputs end.
pub fn run(node: &mut Node) -> Result<(), NodeError> {
    let agent = node
        .setup
        .agent_output
        .ok_or_else(|| NodeError::Bootstrap("GPU stage without an agent".into()))?;
    let model: String = node
        .task
        .params
        .get("model")
        .and_then(|v| v.as_str())
        .ok_or_else(|| NodeError::Bootstrap("model.inference needs params.model".into()))?
        .to_string();
    // Live tuning (`Retune`) moves the batch between 1 and the capacity the
    // supervisor allows (a batch shares one output slot, sized for any batch).
    let capacity = node.setup.batch_capacity.max(node.setup.batch_size).max(1) as usize;
    let label = node.label();
    let reply_to = node
        .setup
        .agent_reply_to
        .ok_or_else(|| NodeError::Bootstrap("GPU stage without a reply route".into()))?;
    let mut b = Batcher {
        pending: VecDeque::new(),
        ended: false,
        next_id: first_request_id(node.setup.incarnation),
        agent_ms: Vec::new(),
        sequential: false,
    };
    // Lowered when a batch's outputs did not fit the output slot.
    let mut fit_cap = usize::MAX;
    loop {
        let size = (node.setup.batch_size.max(1) as usize)
            .min(capacity)
            .min(fit_cap);
        // Validated to 0..=an hour; capped here too, and a negative wait is none: never a panic.
        let max_wait = Duration::try_from_secs_f64(
            node.setup
                .batch_max_wait_ms
                .min(protocol::limits::MAX_WAIT_MS)
                / 1000.0,
        )
        .unwrap_or(Duration::ZERO);
        let batch = b.collect(node, size, max_wait)?;
        if batch.is_empty() {
            if b.ended {
                tracing::info!("{}", latency_line(&mut b.agent_ms));
                return Ok(());
            }
            continue;
        }
        let started = Instant::now();
        // (item, part index, tensor) for every input tensor of the batch.
        let item_parts: Vec<Vec<Payload>> = batch.iter().map(|i| parts(i.payload())).collect();
        let groups = shape_groups(&item_parts);
        // outputs[i][j] = the model outputs for tensor part j of item i.
        let mut outputs: Vec<Vec<Option<Vec<TensorRef>>>> =
            item_parts.iter().map(|ps| vec![None; ps.len()]).collect();
        let slot_size = node.output_pool()?.slot_size();
        // One output slot per batch; each group's outputs follow the previous group's.
        let Ok(written) = Body::new(node).write(slot_size, |_| Ok(())).map_err(sdk)? else {
            // Best-effort overload: shed the batch (counted), keep going.
            let mut body = Body::new(node);
            for item in batch {
                body.lose(item, protocol::messages::LossReason::Shed)
                    .map_err(sdk)?;
            }
            continue;
        };
        let slot = written.shm();
        // The input tensors are released by the send (they are not in the payloads
        // sent): a batch too big for the output slot goes back to the queue whole.
        let mut too_big: Option<String> = None;
        // Earliest deadline of the batch: its oldest item's creation + the app's budget.
        let deadline_ns = batch
            .iter()
            .map(|i| i.envelope().created_ns)
            .min()
            .unwrap_or_else(now_ns)
            .saturating_add(u64::from(node.setup.agent_deadline_ms) * 1_000_000);
        let template = AgentRequest {
            deadline_ns,
            id: 0,
            stage: label.clone(),
            reply_to,
            model: model.clone(),
            inputs: vec![],
            output: slot,
        };
        let group_outs = match b.run_groups(node, agent, &groups, template) {
            Ok(outs) => outs,
            Err(e @ AgentError::OutputSlotTooSmall { .. }) => {
                too_big = Some(e.to_string());
                Vec::new()
            }
            Err(e) => return Err(NodeError::Stage(format!("model {model}: {e}"))),
        };
        split_outputs(&groups, group_outs, &mut outputs);
        if let Some(e) = too_big {
            drop(written);
            if batch.len() > 1 {
                fit_cap = batch.len() / 2;
                tracing::warn!(batch = batch.len(), now = fit_cap, "batches capped: {e}");
                for item in batch.into_iter().rev() {
                    b.pending.push_front(item);
                }
            } else {
                // Alone it does not fit either: it cannot be run; counted, the app goes on.
                tracing::error!("model {model}: item skipped: {e}");
                let mut body = Body::new(node);
                for item in batch {
                    body.lose(item, protocol::messages::LossReason::BadInput)
                        .map_err(sdk)?;
                }
            }
            continue;
        }
        let busy = started.elapsed().as_nanos() as u64;
        node.note_busy(busy);
        send_batch(node, batch, item_parts, outputs, written)?;
    }
}

/// The input tensors of a batch grouped by `shape[1..]`: (item, part index, tensor) each.
fn shape_groups(item_parts: &[Vec<Payload>]) -> Vec<ShapeGroup> {
    let mut groups: Vec<ShapeGroup> = Vec::new();
    for (i, ps) in item_parts.iter().enumerate() {
        for (j, p) in ps.iter().enumerate() {
            if let Payload::Tensor { shm, shape, .. } = p {
                let key = shape.get(1..).unwrap_or(&[]).to_vec();
                let t = TensorRef {
                    shm: *shm,
                    shape: shape.clone(),
                };
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push((i, j, t)),
                    None => groups.push((key, vec![(i, j, t)])),
                }
            }
        }
    }
    groups
}

/// Split every group's outputs along dim 0 back to its members: `outputs[i][j]` gets the
/// outputs for tensor part `j` of item `i`.
fn split_outputs(
    groups: &[ShapeGroup],
    group_outs: Vec<Vec<TensorRef>>,
    outputs: &mut [Vec<Option<Vec<TensorRef>>>],
) {
    for ((_, members), outs) in groups.iter().zip(group_outs) {
        // Split every output along dim 0 back to the members.
        let total: u32 = members
            .iter()
            .map(|(_, _, t)| t.shape.first().copied().unwrap_or(1))
            .sum();
        let mut row0 = 0u32;
        for (i, j, t) in members.iter() {
            let rows = t.shape.first().copied().unwrap_or(1);
            let mine: Vec<TensorRef> = outs
                .iter()
                .map(|o| {
                    let per_row = if total == 0 {
                        0
                    } else {
                        o.shm.len / u64::from(total)
                    };
                    let mut shape = o.shape.clone();
                    if let Some(d0) = shape.first_mut() {
                        *d0 = rows;
                    }
                    TensorRef {
                        shm: ShmRef {
                            offset: o.shm.offset + per_row * u64::from(row0),
                            len: per_row * u64::from(rows),
                            ..o.shm
                        },
                        shape,
                    }
                })
                .collect();
            outputs[*i][*j] = Some(mine);
            row0 += rows;
        }
    }
}

/// Send every item of a batch on: its input tensors replaced by the model's outputs for
/// them (all in the batch's one slot, `written`), every other part passed through.
fn send_batch(
    node: &mut Node,
    batch: Vec<Item>,
    item_parts: Vec<Vec<Payload>>,
    outputs: Vec<Vec<Option<Vec<TensorRef>>>>,
    written: stage::Written,
) -> Result<(), NodeError> {
    let mut emits = Vec::with_capacity(batch.len());
    for (item, (ps, outs)) in batch.into_iter().zip(item_parts.into_iter().zip(outputs)) {
        let mut next_parts = Vec::new();
        for (p, out) in ps.into_iter().zip(outs) {
            match (p, out) {
                (Payload::Tensor { .. }, Some(out)) => {
                    next_parts.extend(out.into_iter().map(|t| Payload::Tensor {
                        shm: t.shm,
                        dtype: protocol::messages::DType::F32,
                        shape: t.shape,
                    }))
                }
                // Passes through (frame, state): the send counts its holds.
                (other, _) => next_parts.push(other),
            }
        }
        emits.push(Emit::of(item).payload(Payload::Batch(next_parts)));
    }
    // Every item's outputs lie in the batch's one slot: sent together, so that the
    // slot is held once per output reference per consumer.
    Body::new(node)
        .send_all(emits, vec![written])
        .map_err(sdk)?;
    Ok(())
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
