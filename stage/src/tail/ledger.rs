//! A tail's exactly-once ledger: per source, which items arrived or are known lost
//! ([`SourceProgress`]), what was last acknowledged to the supervisor, the
//! acknowledgement window, and the output file's length the acknowledgements carry.
//! Plain state with the time passed in, so that its rules are tested without a clock;
//! the tail loop ([`super::run`]) feeds it and sends what it says is due.

use protocol::messages::{Setup, SourceTotal};
use protocol::spec::ServiceType;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A tail acknowledges what it delivered at most this often (and at once when it has
/// nothing else to do, or when [`ACK_ITEMS`] items wait for it).
pub const ACK_WINDOW: Duration = Duration::from_millis(2);

/// A tail acknowledges at once when this many items arrived since its last
/// acknowledgement: a request-guarantee head holds every item until then, so with a few
/// slots the window alone would bound the app to slots ÷ 2 ms (4,000 small items/s).
pub const ACK_ITEMS: u32 = 2;

/// A tail's view of one source: everything below `frontier` was delivered or is known
/// lost; `ahead` are the sequence numbers seen above it (arrived out of order).
#[derive(Default, Debug, Clone, PartialEq, Eq)]
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

/// What a tail knows about delivery: the one place of its exactly-once state.
#[derive(Debug)]
pub struct TailLedger {
    guaranteed: bool,
    progress: BTreeMap<String, SourceProgress>,
    /// Per source, the total last acknowledged to the supervisor.
    acked: BTreeMap<String, u64>,
    last_ack: Instant,
    /// Items marked since the last acknowledgement.
    unacked_items: u32,
    output_len: Option<u64>,
}

impl TailLedger {
    /// A ledger for a tail of a request-guarantee app (`guaranteed`) or a best-effort
    /// one, starting with nothing delivered.
    pub fn new(guaranteed: bool, at: Instant) -> TailLedger {
        TailLedger {
            guaranteed,
            progress: BTreeMap::new(),
            acked: BTreeMap::new(),
            last_ack: at,
            unacked_items: 0,
            output_len: None,
        }
    }

    /// The ledger of a tail as its setup describes it (request-guarantee or not): a
    /// restarted tail starts from what the supervisor has as delivered before it
    /// (`resume`, acknowledged already) and from the output file's length then.
    pub fn resumed(setup: &Setup, at: Instant) -> TailLedger {
        let guaranteed = setup.service_type == ServiceType::RequestGuarantee;
        let mut ledger = TailLedger::new(guaranteed, at);
        for r in &setup.resume {
            ledger.progress.insert(
                r.source.clone(),
                SourceProgress {
                    frontier: r.total,
                    ahead: BTreeSet::new(),
                },
            );
            ledger.acked.insert(r.source.clone(), r.total);
        }
        ledger.output_len = setup.resume_output_len;
        ledger
    }

    /// Mark `seq` of `source` as arrived or known lost. False when it was there
    /// already: a replayed duplicate, to be dropped.
    pub fn mark(&mut self, source: &str, seq: u64) -> bool {
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

    /// Everything of `source` below this has arrived or is known lost.
    pub fn frontier(&self, source: &str) -> u64 {
        self.progress.get(source).map_or(0, |p| p.frontier)
    }

    /// Whether everything up to the announced totals has arrived or is known lost.
    pub fn has_all(&self, totals: &BTreeMap<String, u64>) -> bool {
        totals
            .iter()
            .all(|(source, &total)| self.frontier(source) >= total)
    }

    /// The output file's length after the last item written.
    pub fn set_output_len(&mut self, len: u64) {
        self.output_len = Some(len);
    }

    pub fn output_len(&self) -> Option<u64> {
        self.output_len
    }

    /// Whether this is the ledger of a request-guarantee tail (items in order, every one).
    pub fn guaranteed(&self) -> bool {
        self.guaranteed
    }

    /// Per source, where delivery stands now, for those not yet acknowledged (lazily:
    /// [`TailLedger::pending`] asks on every receive and needs only the first).
    fn unacknowledged(&self) -> impl Iterator<Item = (&String, u64)> + '_ {
        self.progress
            .iter()
            .map(|(source, p)| (source, p.resume_point(self.guaranteed)))
            .filter(|(source, total)| self.acked.get(*source) != Some(total))
    }

    /// Whether something delivered has not been acknowledged yet.
    pub fn pending(&self) -> bool {
        self.unacknowledged().next().is_some()
    }

    /// With something to acknowledge: how long from `at` until the [`ACK_WINDOW`] lets it
    /// go, zero when the window has closed already (the tail loop must not sleep on it).
    /// `None` when nothing waits.
    pub fn due_in(&self, at: Instant) -> Option<Duration> {
        self.pending()
            .then(|| ACK_WINDOW.saturating_sub(at.saturating_duration_since(self.last_ack)))
    }

    /// The acknowledgement to send at `at`, if one is due: something moved on, and the
    /// [`ACK_WINDOW`] closed or [`ACK_ITEMS`] items arrived (or at once when `now`).
    /// Taking it counts it as sent.
    pub fn take_due(&mut self, at: Instant, now: bool) -> Option<Vec<SourceTotal>> {
        let in_window = at.saturating_duration_since(self.last_ack) < ACK_WINDOW;
        if !now && in_window && self.unacked_items < ACK_ITEMS {
            return None;
        }
        let frontier: Vec<SourceTotal> = self
            .unacknowledged()
            .map(|(source, total)| SourceTotal {
                source: source.clone(),
                total,
            })
            .collect();
        if frontier.is_empty() {
            return None;
        }
        self.last_ack = at;
        self.unacked_items = 0;
        for t in &frontier {
            self.acked.insert(t.source.clone(), t.total);
        }
        Some(frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(frontier: &[SourceTotal]) -> Vec<(&str, u64)> {
        frontier
            .iter()
            .map(|t| (t.source.as_str(), t.total))
            .collect()
    }

    #[test]
    fn a_duplicate_is_refused_and_a_gap_holds_the_frontier() {
        let mut ledger = TailLedger::new(true, Instant::now());
        assert!(ledger.mark("cam", 1));
        assert_eq!(ledger.frontier("cam"), 0, "0 is missing");
        assert!(!ledger.mark("cam", 1), "seen already");
        assert!(ledger.mark("cam", 0));
        assert_eq!(ledger.frontier("cam"), 2);
        assert!(!ledger.mark("cam", 0), "below the frontier");
    }

    #[test]
    fn an_acknowledgement_waits_for_the_window_unless_enough_items_arrived() {
        let start = Instant::now();
        let mut ledger = TailLedger::new(true, start);
        assert!(ledger.mark("cam", 0));
        let early = start + ACK_WINDOW / 2;
        assert_eq!(ledger.due_in(early), Some(ACK_WINDOW / 2));
        assert_eq!(
            ledger.take_due(early, false),
            None,
            "one item, in the window"
        );
        assert!(ledger.mark("cam", 1));
        let sent = ledger.take_due(early, false).expect("two items went");
        assert_eq!(totals(&sent), vec![("cam", 2)]);
        assert!(!ledger.pending());
        assert_eq!(ledger.take_due(early, true), None, "nothing new");
        assert!(ledger.mark("cam", 2));
        let later = early + ACK_WINDOW;
        // The window closed: it goes without a wait (before, `None` here read as "nothing
        // waits" and a loop that checked after the window closed slept a whole receive).
        assert_eq!(ledger.due_in(later), Some(Duration::ZERO));
        let sent = ledger.take_due(later, false).expect("the window closed");
        assert_eq!(totals(&sent), vec![("cam", 3)]);
    }

    #[test]
    fn a_best_effort_tail_acknowledges_past_the_highest_item_seen() {
        let start = Instant::now();
        let mut ledger = TailLedger::new(false, start);
        assert!(ledger.mark("cam", 4));
        let sent = ledger.take_due(start, true).expect("due when told");
        assert_eq!(totals(&sent), vec![("cam", 5)]);
        let mut guaranteed = TailLedger::new(true, start);
        assert!(guaranteed.mark("cam", 4));
        let sent = guaranteed.take_due(start, true).expect("due when told");
        assert_eq!(
            totals(&sent),
            vec![("cam", 0)],
            "0 is missing: the frontier stays"
        );
    }
}
