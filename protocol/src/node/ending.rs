//! The end of a stage's stream: end-of-stream markers, a guaranteed head's wait for the
//! last acknowledgements, and the final report to the supervisor.

use super::*;

impl Node {
    /// `End`, once, when this stage's input is complete: every upstream replica ended
    /// its stream, and in a request-guarantee app (where stages stay up for replays)
    /// the supervisor said so. Non-tail stages of such apps pass the end of stream on at
    /// once; a tail finds its input complete earlier, from its own ledger and
    /// [`Node::announced_totals`] (`stage::tail`).
    pub(super) fn end_reached(&mut self) -> Option<Event> {
        if self.ended || self.is_head() || !self.upstream_done() {
            return None;
        }
        let done = !self.guaranteed() || self.finish_ordered;
        if !done && !self.setup.outputs.is_empty() && self.eos_sent.is_none() {
            if let Err(e) = self.send_eos() {
                tracing::warn!("cannot pass the end of stream on: {e}");
            }
        }
        if done {
            self.ended = true;
            Some(Event::End)
        } else {
            None
        }
    }

    /// Whether every upstream replica has ended its stream.
    pub(super) fn upstream_done(&self) -> bool {
        self.eos_from.len() as u32 >= self.setup.expected_eos
    }

    /// Once every upstream replica has ended its stream: how many items each source
    /// sent (the largest total any replica announced). `None` before, and for heads.
    pub fn announced_totals(&self) -> Option<&BTreeMap<String, u64>> {
        (!self.is_head() && self.upstream_done()).then_some(&self.totals)
    }

    /// Send our end-of-stream marker (with the sources' totals) to every data consumer
    /// replica; it is sent again to a consumer rewired later.
    pub(super) fn send_eos(&mut self) -> Result<(), NodeError> {
        let totals: Vec<SourceTotal> = source_totals(&self.totals);
        let eos = codec::encode(
            "eos",
            &Inbox::Eos(Eos {
                stage: self.setup.task_index,
                replica: self.setup.replica,
                totals,
            }),
        )?;
        // Only data consumers get it (not the agent, nor an agent's reply channels).
        for route in &self.setup.outputs {
            for k in route.first..route.first + route.replicas {
                if let Some(out) = self.outputs.get(k as usize) {
                    if out.send(eos.clone()).is_err() {
                        self.dead_outputs.insert(k as usize);
                    }
                }
            }
        }
        self.eos_sent = Some(eos);
        Ok(())
    }

    /// Heads of request-guarantee apps: after the end of the stream, stay until the
    /// tails have acknowledged every item (replaying on request), or until told to stop.
    pub(super) fn wait_for_acks(&mut self) -> Result<(), NodeError> {
        while !self.retained.is_empty() && !self.finish_ordered {
            let bytes = match self.inbox.try_recv_timeout(Duration::from_millis(200)) {
                Ok(bytes) => bytes,
                Err(ipc_channel::TryRecvError::Empty) => continue,
                Err(ipc_channel::TryRecvError::IpcError(e)) => {
                    return Err(NodeError::SupervisorGone(format!("inbox: {e:?}")))
                }
            };
            if let Inbox::Command(c) = codec::decode::<Inbox>("inbox", &bytes)? {
                if let Some(Command::Stop) = self.command(c)? {
                    return Err(NodeError::Stopped);
                }
            }
        }
        Ok(())
    }

    /// End the stream: tell every consumer replica, report to the supervisor, and
    /// stop the heartbeat. The process should exit 0 afterwards.
    pub fn finish(mut self) -> Result<(), NodeError> {
        if self.eos_sent.is_none() {
            self.send_eos()?;
        }
        if self.guaranteed() && self.is_head() {
            self.wait_for_acks()?;
        }
        let totals: Vec<SourceTotal> = source_totals(&self.totals);
        self.alive.store(false, Ordering::SeqCst);
        let metrics = self.metrics.lock().map(|m| m.clone()).unwrap_or_default();
        let d = std::mem::take(&mut self.deliveries);
        let report = StageReport {
            metrics,
            latency_max_ms: d.latencies_ms.iter().copied().fold(0.0, f32::max),
            latencies_seen: d.latencies_ms.len() as u64,
            latencies_ms: d.latencies_ms,
            hop_us: d.hop_us,
            stays: d.stays.into_values().collect(),
            received: d
                .received
                .into_iter()
                .map(|(source, total)| SourceTotal { source, total })
                .collect(),
            announced: totals,
            first_created_ns: d.first_created_ns,
            last_arrival_ns: d.last_arrival_ns,
            arrivals_ns: d.arrivals_ns,
        };
        self.send_up(&Up::Finished(report))
    }

    /// Stopped by the supervisor: send the counters as they are now (the heartbeat
    /// stops), so that the summary of a stopped run counts what this stage did.
    pub fn stopped(&self) {
        self.alive.store(false, Ordering::SeqCst);
        if let Ok(m) = self.metrics.lock() {
            let _ = self.send_up(&Up::Heartbeat(m.clone()));
        }
    }

    /// Tell the supervisor why this stage cannot go on (after its counters as they
    /// are now: the summary of a failed run stays true).
    pub fn fail(&self, error: &str) {
        self.stopped();
        let _ = self.send_up(&Up::Failed {
            error: error.to_string(),
        });
    }

    /// Send the supervisor `bytes` as they are, without encoding them: only for
    /// SmartPipe's fault-injection tests (`test.fault` mode `garbage`), which check that
    /// a message that does not decode costs the sending stage, not the app.
    pub fn send_raw_up(&self, bytes: Vec<u8>) -> Result<(), NodeError> {
        self.up
            .send(UpWire { bytes, reply: None })
            .map_err(|e| NodeError::SupervisorGone(format!("{e:?}")))
    }

    pub(super) fn send_up(&self, msg: &Up) -> Result<(), NodeError> {
        let bytes = codec::encode("up", msg)?;
        self.up
            .send(UpWire { bytes, reply: None })
            .map_err(|e| NodeError::SupervisorGone(format!("{e:?}")))
    }
}
