//! A tail's reports, which stay with the node because they are reporting, not
//! bookkeeping: the delivery statistics (latencies, hops, stays, items per source) that
//! go into the final `StageReport`, and the `Up::Delivered` message that carries an
//! acknowledgement to the supervisor, with the latencies of the items delivered since the
//! last one. Which items to deliver, de-duplication, the
//! in-order stash and when to acknowledge are the tail loop's (`stage::tail`, its
//! `TailLedger`): the node hands a tail every item and skip as events.

use super::*;

/// Per-tail delivery statistics, bounded for a run of any length: each item's arrival
/// and latency stay here only until an acknowledgement takes them up (the supervisor
/// keeps the run's), the hop times are sampled ([`crate::samples`]).
#[derive(Default)]
pub(super) struct Deliveries {
    /// Of the items delivered since the last acknowledgement.
    pub(super) arrivals_ns: Vec<u64>,
    pub(super) latencies_ms: Vec<f32>,
    pub(super) first_created_ns: u64,
    pub(super) last_arrival_ns: u64,
    /// Items delivered by this process.
    pub(super) delivered: u64,
    pub(super) hop_us: Vec<Vec<f32>>,
    pub(super) stays: BTreeMap<TaskId, StayStats>,
    pub(super) received: BTreeMap<String, u64>,
}

impl Node {
    /// Tails: acknowledge to the supervisor that everything of each source below
    /// `frontier`'s total was delivered or is known lost; `output_len` is the output
    /// file's length after the last item written (a restarted tail cuts the file back to
    /// it). The items received per source go with it, from the delivery statistics.
    pub fn acknowledge(
        &mut self,
        frontier: Vec<SourceTotal>,
        output_len: Option<u64>,
    ) -> Result<(), NodeError> {
        let d = &mut self.deliveries;
        let since = NewDeliveries::every(
            std::mem::take(&mut d.latencies_ms),
            std::mem::take(&mut d.arrivals_ns),
            d.first_created_ns,
        );
        let received = source_totals(&d.received);
        self.send_up(&Up::Delivered {
            frontier,
            output_len,
            received,
            since,
        })
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
        d.delivered += 1;
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
            let us = arrived.saturating_sub(hop.sent_ns) as f32 / 1e3;
            let hops = &mut d.hop_us[k];
            // Every item has its hops: the item's rank is the hop's.
            match crate::samples::place(d.delivered - 1, hops.len(), crate::samples::SAMPLE_CAP) {
                Some(i) if i == hops.len() => hops.push(us),
                Some(i) => hops[i] = us,
                None => {}
            }
        }
        // The first items' stays (cold caches, first model runs: slow everywhere) would read
        // as variability the stages share; they are left out.
        let warm = d.delivered > STAY_WARMUP_ITEMS as u64;
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
