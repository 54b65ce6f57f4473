//! The tail's side of a stage: which items of each source arrived (for exactly-once
//! delivery and acknowledgements) and the delivery statistics it reports.

use super::*;

/// A tail's view of one source: everything below `frontier` was delivered or is known
/// lost; `ahead` are the sequence numbers seen above it (arrived out of order).
#[derive(Default, Debug)]
pub struct SourceProgress {
    pub frontier: u64,
    pub ahead: BTreeSet<u64>,
}

impl SourceProgress {
    /// Mark `seq` as seen; false when it was seen before (a duplicate from a replay).
    pub fn mark(&mut self, seq: u64) -> bool {
        if seq < self.frontier || !self.ahead.insert(seq) {
            return false;
        }
        while self.ahead.remove(&self.frontier) {
            self.frontier += 1;
        }
        true
    }
    /// Where a restarted head should go on from: the frontier when every item must
    /// arrive, past the highest one seen when losses are accepted.
    pub fn resume_point(&self, guaranteed: bool) -> u64 {
        match (guaranteed, self.ahead.last()) {
            (false, Some(&last)) => last + 1,
            _ => self.frontier,
        }
    }
}

/// Per-tail delivery statistics.
#[derive(Default)]
pub(super) struct Deliveries {
    pub(super) arrivals_ns: Vec<u64>,
    pub(super) first_created_ns: u64,
    pub(super) last_arrival_ns: u64,
    pub(super) latencies_ms: Vec<f32>,
    pub(super) hop_us: Vec<Vec<f32>>,
    pub(super) stays: BTreeMap<TaskId, StayStats>,
    pub(super) received: BTreeMap<String, u64>,
}

impl Node {
    /// Tails: mark `seq` of `source` as delivered or known lost. False when
    /// it was there already.
    pub(super) fn tail_mark(&mut self, source: &str, seq: u64) -> bool {
        let new = self
            .progress
            .entry(source.to_string())
            .or_default()
            .mark(seq);
        if new {
            self.unacked_items = self.unacked_items.saturating_add(1);
        }
        new
    }

    /// Tails: everything of `source` below this has arrived or is known lost.
    pub fn frontier(&self, source: &str) -> u64 {
        self.progress.get(source).map_or(0, |p| p.frontier)
    }

    /// Tails: the output file's length after the last item written (sent with the
    /// acknowledgements, so a restarted tail can cut a half-written file back).
    pub fn set_output_len(&mut self, len: u64) {
        self.output_len = Some(len);
    }

    fn is_tail(&self) -> bool {
        self.setup.outputs.is_empty() && !self.is_head()
    }

    /// Tails: per source, where delivery stands now, for those not yet acknowledged.
    fn unacknowledged(&self) -> impl Iterator<Item = SourceTotal> + '_ {
        let guaranteed = self.guaranteed();
        self.progress
            .iter()
            .map(move |(source, p)| SourceTotal {
                source: source.clone(),
                total: p.resume_point(guaranteed),
            })
            .filter(|t| self.acked.get(&t.source) != Some(&t.total))
    }

    /// Tails: whether something delivered has not been acknowledged yet.
    pub(super) fn ack_pending(&self) -> bool {
        self.is_tail() && self.unacknowledged().next().is_some()
    }

    /// Tails with something to acknowledge that the [`ACK_WINDOW`] holds back: how long
    /// until it may go. `None` when nothing waits (or it may go now).
    pub(super) fn ack_due_in(&self) -> Option<Duration> {
        let left = ACK_WINDOW.checked_sub(self.last_ack.elapsed())?;
        (!left.is_zero() && self.ack_pending()).then_some(left)
    }

    /// Tails: tell the supervisor what has been delivered, when it moved on and at most
    /// every [`ACK_WINDOW`] (or at once when `now`).
    pub(super) fn maybe_ack(&mut self, now: bool) {
        if !self.is_tail() {
            return;
        }
        if !now && self.last_ack.elapsed() < ACK_WINDOW && self.unacked_items < ACK_ITEMS {
            return;
        }
        let frontier: Vec<SourceTotal> = self.unacknowledged().collect();
        if frontier.is_empty() {
            return;
        }
        self.last_ack = Instant::now();
        self.unacked_items = 0;
        for t in &frontier {
            self.acked.insert(t.source.clone(), t.total);
        }
        let received = source_totals(&self.deliveries.received);
        let _ = self.send_up(&Up::Delivered {
            frontier,
            output_len: self.output_len,
            received,
        });
    }

    /// A tail could not write an item it recorded as delivered (its output failed):
    /// take it back out of the counts, so that a failed run's summary stays true.
    pub fn unrecord_delivery(&mut self, env: &Envelope) {
        if let Ok(mut m) = self.metrics.lock() {
            m.items_out = m.items_out.saturating_sub(1);
        }
        if let Some(n) = self.deliveries.received.get_mut(&env.source) {
            *n = n.saturating_sub(1);
        }
    }

    /// A tail records that an item reached the end of the pipeline.
    /// (The first [`STAY_WARMUP_ITEMS`] items count everywhere but in the stay statistics.)
    pub fn record_delivery(&mut self, env: &Envelope) {
        let now = now_ns();
        let d = &mut self.deliveries;
        if d.first_created_ns == 0 || env.created_ns < d.first_created_ns {
            d.first_created_ns = env.created_ns;
        }
        d.last_arrival_ns = now;
        d.arrivals_ns.push(now);
        if let Ok(mut m) = self.metrics.lock() {
            m.items_out += 1;
            let latency = now.saturating_sub(env.created_ns);
            m.latency_sum_ns += latency;
            observe(&mut m.latency_buckets, latency as f64 / 1e9);
        }
        d.latencies_ms
            .push(now.saturating_sub(env.created_ns) as f32 / 1e6);
        let arrivals = env
            .hops
            .iter()
            .skip(1)
            .map(|h| h.recv_ns)
            .chain(std::iter::once(now));
        for (k, (hop, arrived)) in env.hops.iter().zip(arrivals).enumerate() {
            if d.hop_us.len() <= k {
                d.hop_us.push(Vec::new());
            }
            d.hop_us[k].push(arrived.saturating_sub(hop.sent_ns) as f32 / 1e3);
        }
        // The first items' stays (cold caches, first model runs: slow everywhere) would read
        // as variability the stages share; they are left out.
        let warm = d.latencies_ms.len() > STAY_WARMUP_ITEMS;
        let stay = |h: &Hop| h.sent_ns.saturating_sub(h.recv_ns) as f64 / 1e6;
        let path: f64 = env.hops.iter().map(stay).sum();
        for h in env.hops.iter().filter(|_| warm) {
            let s = stay(h);
            d.stays
                .entry(h.stage)
                .or_insert_with(|| StayStats::new(h.stage))
                .observe(s, path - s);
        }
        *d.received.entry(env.source.clone()).or_insert(0) += 1;
    }
}
