//! A tail's reports, which stay with the node because they are reporting, not
//! bookkeeping: the delivery statistics (latencies, hops, stays, items per source) that
//! go into the final `StageReport`, and the `Up::Delivered` message that carries an
//! acknowledgement to the supervisor, with the latencies of the items delivered since the
//! last one. Which items to deliver, de-duplication, the
//! in-order stash and when to acknowledge are the tail loop's (`stage::tail`, its
//! `TailLedger`): the node hands a tail every item and skip as events.

use super::*;

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
    /// Deliveries already sent up with an acknowledgement (`Up::Delivered::since`).
    pub(super) shipped: std::sync::atomic::AtomicUsize,
}

impl Node {
    /// Tails: acknowledge to the supervisor that everything of each source below
    /// `frontier`'s total was delivered or is known lost; `output_len` is the output
    /// file's length after the last item written (a restarted tail cuts the file back to
    /// it). The items received per source go with it, from the delivery statistics.
    pub fn acknowledge(
        &self,
        frontier: Vec<SourceTotal>,
        output_len: Option<u64>,
    ) -> Result<(), NodeError> {
        let d = &self.deliveries;
        let from = d.shipped.load(Ordering::Relaxed).min(d.latencies_ms.len());
        let since = NewDeliveries {
            latencies_ms: d.latencies_ms[from..].to_vec(),
            arrivals_ns: d.arrivals_ns.get(from..).unwrap_or_default().to_vec(),
            first_created_ns: d.first_created_ns,
        };
        self.send_up(&Up::Delivered {
            frontier,
            output_len,
            received: source_totals(&d.received),
            since,
        })?;
        d.shipped.store(d.latencies_ms.len(), Ordering::Relaxed);
        Ok(())
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
