//! Taking an output slot: the named slot policy (wait, shed, wait up to) a stage runs
//! under, and the typed reason when no slot is had. The policy follows from the app
//! (service type, latency quota) and the stage's role; the SDK's contexts take their
//! slots through [`Node::take_slot`].

use super::*;

/// What a stage does when its output pool has no free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotPolicy {
    /// Wait as long as it takes (request-guarantee apps, and best-effort apps with no
    /// latency quota): the producer slows down, nothing is lost.
    Wait,
    /// Give up at once: the item is shed (best-effort heads, whose pool is sized for
    /// the rate).
    Shed,
    /// Wait up to this long, then give up (best-effort bodies: `Setup::slot_wait_ms`).
    WaitUpTo(Duration),
}

/// Why no slot was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoSlot {
    /// The policy is [`SlotPolicy::Shed`] and every slot was taken.
    #[error("no free output slot: the item is shed")]
    Shed,
    /// The policy is [`SlotPolicy::WaitUpTo`] and none came free in time.
    #[error("no output slot came free in time: the item is shed")]
    TimedOut,
    /// The supervisor said `Stop` while a head waited.
    #[error("stopped by the supervisor while waiting for an output slot")]
    Stopped,
}

impl NoSlot {
    /// The loss an item without a slot counts as (`None`: the stage stops, nothing is lost).
    pub fn loss(self) -> Option<LossReason> {
        match self {
            NoSlot::Shed | NoSlot::TimedOut => Some(LossReason::Shed),
            NoSlot::Stopped => None,
        }
    }
}

impl Node {
    /// The slot policy of this stage, from its app and its role.
    pub fn slot_policy(&self) -> SlotPolicy {
        if self.guaranteed() || self.setup.slot_wait_ms == crate::messages::SLOT_WAIT_FOREVER {
            return SlotPolicy::Wait;
        }
        let limit = Duration::from_millis(u64::from(self.setup.slot_wait_ms));
        if self.is_head() || limit.is_zero() {
            SlotPolicy::Shed
        } else {
            SlotPolicy::WaitUpTo(limit)
        }
    }

    /// Take a slot of `pool` whose reference will be held `holders` times, under
    /// `policy`. The outer error is a failure of the runtime; the inner one says why no
    /// slot was had. Heads watch their inbox meanwhile (a `Stop` ends the wait; a drain
    /// is kept for their loop: only the acknowledgements behind it free the slot).
    pub fn take_slot<'p>(
        &mut self,
        pool: &'p SlotPool,
        holders: u32,
        policy: SlotPolicy,
    ) -> Result<Result<SlotWriter<'p>, NoSlot>, NodeError> {
        const POLL: Duration = Duration::from_millis(50);
        let started = Instant::now();
        let deadline = match policy {
            SlotPolicy::Wait => None,
            SlotPolicy::Shed => return Ok(pool.try_acquire(holders).ok_or(NoSlot::Shed)),
            SlotPolicy::WaitUpTo(limit) => Some(started + limit),
        };
        loop {
            let wait = match deadline {
                None => POLL,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(POLL),
                    _ => return Ok(pool.try_acquire(holders).ok_or(NoSlot::TimedOut)),
                },
            };
            if let Some(w) = pool.acquire(holders, wait) {
                let waited = started.elapsed().as_nanos() as u64;
                self.metrics(|m| m.waiting_for_slot_ns += waited);
                return Ok(Ok(w));
            }
            // Heads' inboxes carry only commands; other stages get `Stop` behind their
            // data (and the supervisor's SIGTERM follows), so only heads look here.
            if self.is_head() {
                while let Some(c) = self.read_command()? {
                    if c == Command::Stop {
                        return Ok(Err(NoSlot::Stopped));
                    }
                    self.held_commands.push_back(c);
                }
            }
        }
    }

    /// Take an output slot for one item under the stage's policy: `None` when the item
    /// is to be shed (the caller counts it), `Err(Stopped)` when told to stop.
    pub fn output_slot<'p>(
        &mut self,
        pool: &'p SlotPool,
    ) -> Result<Option<SlotWriter<'p>>, NodeError> {
        let holders = self.consumer_count();
        self.output_slot_for(pool, holders)
    }

    /// Like [`Node::output_slot`], for a slot that will be referenced `holders` times.
    pub fn output_slot_for<'p>(
        &mut self,
        pool: &'p SlotPool,
        holders: u32,
    ) -> Result<Option<SlotWriter<'p>>, NodeError> {
        let policy = self.slot_policy();
        match self.take_slot(pool, holders, policy)? {
            Ok(w) => Ok(Some(w)),
            Err(NoSlot::Stopped) => Err(NodeError::Stopped),
            Err(NoSlot::Shed | NoSlot::TimedOut) => Ok(None),
        }
    }
}
