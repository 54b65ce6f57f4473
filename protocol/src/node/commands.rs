//! Commands from the supervisor to a stage (drain, stop, rates, threads, batches, rewiring
//! after a restart, replays) as the stage's inbox delivers them.

use super::*;

impl Node {
    /// Non-blocking look at the inbox for a command (heads call this between items).
    /// Acknowledgements, replays and rewiring are handled here and not returned.
    pub fn poll_command(&mut self) -> Result<Option<Command>, NodeError> {
        if let Some(c) = self.held_commands.pop_front() {
            return Ok(Some(c));
        }
        self.read_command()
    }

    /// Read the inbox until it is empty or holds a command for the stage itself.
    pub(super) fn read_command(&mut self) -> Result<Option<Command>, NodeError> {
        loop {
            let bytes = match self.inbox.try_recv() {
                Ok(bytes) => bytes,
                Err(ipc_channel::TryRecvError::Empty) => return Ok(None),
                Err(ipc_channel::TryRecvError::IpcError(e)) => {
                    return Err(NodeError::SupervisorGone(format!("{e:?}")))
                }
            };
            match codec::decode::<Inbox>("inbox", &bytes)? {
                Inbox::Command(c) => {
                    if let Some(c) = self.command(c)? {
                        return Ok(Some(c));
                    }
                }
                Inbox::Data(_) => {
                    return Err(NodeError::Bootstrap(
                        "a head's inbox carries only commands, got data".into(),
                    ))
                }
                Inbox::Skip { .. } | Inbox::Eos(_) => {
                    return Err(NodeError::Bootstrap(
                        "a head's inbox carries only commands, got an end of stream".into(),
                    ))
                }
                Inbox::AgentRequest(_) | Inbox::AgentReply(_) => {
                    return Err(NodeError::Bootstrap(
                        "a head's inbox carries only commands, got an agent message".into(),
                    ))
                }
            }
        }
    }

    /// Handle the commands the node itself answers; return the others to the stage.
    pub(super) fn command(&mut self, c: Command) -> Result<Option<Command>, NodeError> {
        match c {
            Command::Rewire { output } => {
                self.rewire_output(output)?;
                Ok(None)
            }
            Command::Ack(totals) => {
                for t in &totals {
                    let done: Vec<(String, u64)> = self
                        .retained
                        .range((t.source.clone(), 0)..(t.source.clone(), t.total))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in done {
                        if let Some(env) = self.retained.remove(&key) {
                            self.release(&env.payload)?;
                        }
                    }
                }
                // A head is done with it; a stage that pairs parts drops what waits
                // for an item the tails have.
                Ok((!self.is_head()).then_some(Command::Ack(totals)))
            }
            Command::Replay => {
                let items: Vec<Envelope> = self.retained.values().cloned().collect();
                if !items.is_empty() {
                    tracing::info!(
                        items = items.len(),
                        "replaying what the tails have not acknowledged"
                    );
                }
                let holders = self.consumer_count();
                for mut env in items {
                    let refs = env.payload.shm_refs();
                    for r in &refs {
                        self.pool(r.pool)?.add_holders(r, holders)?;
                    }
                    env.hops.push(Hop {
                        stage: self.setup.task_index,
                        recv_ns: env.created_ns,
                        sent_ns: now_ns(),
                    });
                    let spread = self.spread_of(&env.source, env.seq);
                    let bytes = codec::encode("item", &Inbox::Data(env))?;
                    self.route(spread, &bytes, &refs)?;
                }
                Ok(None)
            }
            Command::Scale { task, active } => {
                for route in self.setup.outputs.iter_mut().filter(|r| r.task == task) {
                    tracing::info!(consumer = %task, from = route.active, to = active, "replicas scaled");
                    route.active = active.clamp(1, route.replicas.max(1));
                }
                Ok(None)
            }
            Command::SetRate { items_per_s } => {
                tracing::info!(items_per_s, "request rate changed");
                self.new_rate = Some(items_per_s.max(0.0));
                Ok(None)
            }
            Command::Finish => {
                self.finish_ordered = true;
                Ok(Some(Command::Finish))
            }
            Command::Retune {
                batch_size,
                batch_max_wait_ms,
            } => {
                tracing::info!(
                    from = self.setup.batch_size,
                    to = batch_size,
                    max_wait_ms = batch_max_wait_ms,
                    "batching retuned"
                );
                self.setup.batch_size = batch_size.max(1);
                self.setup.batch_max_wait_ms = batch_max_wait_ms.max(0.0);
                let b = self.setup.batch_size;
                self.metrics(|m| m.batch_size = b);
                Ok(None)
            }
            other => Ok(Some(other)),
        }
    }

    /// Take output `output`'s new sender from the rewire channel; a consumer that
    /// missed our end of stream gets it again.
    pub(super) fn rewire_output(&mut self, output: u32) -> Result<(), NodeError> {
        let rx = self
            .rewire
            .as_ref()
            .ok_or_else(|| NodeError::Bootstrap("rewire without a rewire channel".into()))?;
        let sender = rx
            .try_recv_timeout(Duration::from_secs(10))
            .map_err(|e| NodeError::SupervisorGone(format!("rewire channel: {e:?}")))?;
        let k = output as usize;
        let slot = self.outputs.get_mut(k).ok_or_else(|| {
            NodeError::Bootstrap(format!("rewire of output {output}, which does not exist"))
        })?;
        *slot = sender;
        self.dead_outputs.remove(&k);
        self.last_rewired = Some(output);
        let is_data = self
            .setup
            .outputs
            .iter()
            .any(|r| (r.first..r.first + r.replicas).contains(&output));
        if let (Some(eos), true) = (&self.eos_sent, is_data) {
            let _ = self.outputs[k].send(eos.clone());
        }
        tracing::info!(output, "output rewired to a restarted process");
        Ok(())
    }
}
