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
//! an item that does not fit alone is skipped and counted as bad input. The requests
//! and their replies (ids, stale replies, asking a restarted agent again, the timeout)
//! are the `stage` crate's [`AgentClient`].

use protocol::clock::now_ns;
use protocol::messages::{AgentError, AgentRequest, Command, Payload, TensorRef};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::ShmRef;
use stage::{AgentClient, AgentResult, Body, Emit, Item, StageError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tensors of a batch that share `shape[1..]`: (item, part index, tensor) each.
type ShapeGroup = (Vec<u32>, Vec<(usize, usize, TensorRef)>);

struct Batcher {
    /// Received items (handles: their shared memory is released when dropped).
    pending: VecDeque<Item>,
    ended: bool,
    /// The requests to the device agent and their replies.
    agent: AgentClient,
    /// Shape groups go to the agent one after the other (after a group's outputs did
    /// not fit its share of the output slot), not all at once.
    sequential: bool,
    /// The largest batch: lowered when a batch's outputs did not fit the output slot.
    fit_cap: usize,
}

fn parts(p: &Payload) -> Vec<Payload> {
    match p {
        Payload::Batch(items) => items.clone(),
        other => vec![other.clone()],
    }
}

impl Batcher {
    /// Take the next event from the inbox into `pending`; true when something happened.
    fn pump(&mut self, node: &mut Node, wait: Duration) -> Result<(), StageError> {
        match node.next(wait)? {
            Event::Item(env) => self.pending.push_back(Item::new(node, env)?),
            Event::End => self.ended = true,
            Event::Command(Command::Stop) => return Err(NodeError::Stopped.into()),
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
    ) -> Result<Vec<Item>, StageError> {
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
    /// the other, each after the last one's outputs. `Ok(Err(_))`: the agent's error.
    fn run_groups(
        &mut self,
        node: &mut Node,
        groups: &[ShapeGroup],
        template: AgentRequest,
    ) -> Result<Result<Vec<Vec<TensorRef>>, AgentError>, StageError> {
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
            let results = self.call_all(node, reqs)?;
            let too_small =
                |r: &AgentResult| matches!(r, Err(AgentError::OutputSlotTooSmall { .. }));
            if !results.iter().any(too_small) {
                return Ok(results.into_iter().collect());
            }
            tracing::warn!("a shape group's outputs did not fit its share of the output slot: groups go to the agent one after the other from now on");
            self.sequential = true;
        }
        let mut used = 0u64;
        let mut out = Vec::with_capacity(groups.len());
        for (_, m) in groups {
            let one = vec![req(m, used, slot.len.saturating_sub(used))];
            let outs = match self.call_all(node, one)?.pop() {
                Some(Ok(outs)) => outs,
                Some(Err(e)) => return Ok(Err(e)),
                None => return Ok(Err(AgentError::Failed("no reply".into()))),
            };
            used = outs
                .iter()
                .map(|o| (o.shm.offset + o.shm.len).div_ceil(64) * 64)
                .max()
                .unwrap_or(used);
            out.push(outs);
        }
        Ok(Ok(out))
    }

    /// The agent client's `call_all`, the items that arrived meanwhile queued for the
    /// next batches.
    fn call_all(
        &mut self,
        node: &mut Node,
        reqs: Vec<AgentRequest>,
    ) -> Result<Vec<AgentResult>, StageError> {
        let results = self.agent.call_all(node, reqs);
        let arrived = self.agent.take_arrived();
        self.pending.extend(arrived.items);
        self.ended |= arrived.ended;
        results
    }
}

/// Run a GPU stage until its inputs end.
pub fn run(node: &mut Node) -> Result<(), StageError> {
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
    let mut b = Batcher {
        pending: VecDeque::new(),
        ended: false,
        agent: AgentClient::new(&node.setup)?,
        sequential: false,
        fit_cap: usize::MAX,
    };
    loop {
        let size = (node.setup.batch_size.max(1) as usize)
            .min(capacity)
            .min(b.fit_cap);
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
                tracing::info!("{}", b.agent.latency_line());
                return Ok(());
            }
            continue;
        }
        b.run_batch(node, &model, batch)?;
    }
}

impl Batcher {
    /// Run the model on one batch and send its items on; a batch whose outputs do not
    /// fit the output slot goes back to the queue whole and later batches are halved.
    fn run_batch(
        &mut self,
        node: &mut Node,
        model: &str,
        batch: Vec<Item>,
    ) -> Result<(), StageError> {
        let started = Instant::now();
        // (item, part index, tensor) for every input tensor of the batch.
        let item_parts: Vec<Vec<Payload>> = batch.iter().map(|i| parts(i.payload())).collect();
        let groups = shape_groups(&item_parts);
        // outputs[i][j] = the model outputs for tensor part j of item i.
        let mut outputs: Vec<Vec<Option<Vec<TensorRef>>>> =
            item_parts.iter().map(|ps| vec![None; ps.len()]).collect();
        let slot_size = node.output_pool()?.slot_size();
        // One output slot per batch; each group's outputs follow the previous group's.
        let Ok(written) = Body::new(node).write(slot_size, |_| Ok(()))? else {
            // Best-effort overload: shed the batch (counted), keep going.
            let mut body = Body::new(node);
            for item in batch {
                body.lose(item, protocol::messages::LossReason::Shed)?;
            }
            return Ok(());
        };
        // Earliest deadline of the batch: its oldest item's creation + the app's budget.
        let deadline_ns = batch
            .iter()
            .map(|i| i.envelope().created_ns)
            .min()
            .unwrap_or_else(now_ns)
            .saturating_add(u64::from(node.setup.agent_deadline_ms) * 1_000_000);
        let template = AgentRequest {
            deadline_ns,
            guaranteed: node.guaranteed(),
            id: 0,
            stage: node.label(),
            reply_to: self.agent.reply_to(),
            model: model.to_string(),
            inputs: vec![],
            output: written.shm(),
        };
        // The input tensors are released by the send (they are not in the payloads
        // sent): a batch too big for the output slot goes back to the queue whole.
        let group_outs = match self.run_groups(node, &groups, template)? {
            Ok(outs) => outs,
            Err(e @ AgentError::OutputSlotTooSmall { .. }) => {
                drop(written);
                return self.did_not_fit(node, model, batch, e);
            }
            Err(error) => {
                return Err(StageError::Agent {
                    model: model.to_string(),
                    error,
                })
            }
        };
        split_outputs(&groups, group_outs, &mut outputs);
        node.note_busy(started.elapsed().as_nanos() as u64);
        send_batch(node, batch, item_parts, outputs, written)
    }

    /// A batch whose outputs did not fit the output slot: batches are halved and this
    /// one goes back to the queue; alone it does not fit either: it cannot be run, it is
    /// counted as bad input and the app goes on.
    fn did_not_fit(
        &mut self,
        node: &mut Node,
        model: &str,
        batch: Vec<Item>,
        e: AgentError,
    ) -> Result<(), StageError> {
        if batch.len() > 1 {
            self.fit_cap = batch.len() / 2;
            tracing::warn!(
                batch = batch.len(),
                now = self.fit_cap,
                "batches capped: {e}"
            );
            for item in batch.into_iter().rev() {
                self.pending.push_front(item);
            }
        } else {
            tracing::error!("model {model}: item skipped: {e}");
            let mut body = Body::new(node);
            for item in batch {
                body.lose(item, protocol::messages::LossReason::BadInput)?;
            }
        }
        Ok(())
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
) -> Result<(), StageError> {
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
    Body::new(node).send_all(emits, vec![written])
}
