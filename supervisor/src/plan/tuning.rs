//! Live tuning for `balance` apps.
//!
//! Batches: every window, each GPU stage whose batch the user did not fix is looked at
//! from its live metrics. Overloaded (its queue holds two
//! batches per replica, or it is busy ≥ 90% of the time): the batch doubles, up to its
//! capacity, so each model call carries more items. Underloaded (busy ≤ 30%, nothing
//! queued): the batch halves, so items do not wait for company. After a change the
//! stage is held for a while against flapping. Stages get the change as a `Retune`
//! command, without a restart.
//!
//! A bigger batch is a trial: after [`TRIAL_SETTLE`], the stage's mean throughput over
//! [`TRIAL_WINDOWS`] windows must beat the better of the (up to two) windows at the old
//! batch that asked for it by [`MIN_GAIN`]; one window of a few dozen items is about as
//! noisy as the gain asked for. On a GPU a
//! call of several items costs little more than one; on CPU cores that are already
//! full, a batch of big inputs only adds memory traffic (MTCNN's P-Net on 720p frames:
//! the agent's CPU per frame 55 ms at the batches blind doubling reached, 48 ms at one
//! item a call). A batch that did not pay is undone and not tried again for
//! [`RETRY_AFTER`], twice as long after each further trial that did not pay (up to
//! [`MAX_RETRY_AFTER`]): on a device where batches never pay (full CPU cores), a trial
//! costs its stage a few seconds at a worse rate, and a long run should not pay that
//! every half minute. On `cpu:0` the first trial waits as long as a retry would
//! ([`BatchTuner::hold_first_trials`], [`CPU_FIRST_TRIAL_AFTER`]): there one item a call
//! is the rule (a call costs the same per item at any batch once its inputs are large,
//! plus the copy that joins them), and a trial in the first seconds cost 10-s runs of the
//! OCR app 9–12 % of their throughput and the faces app's 0–5 % (BENCHMARKS.md, session 36).
//!
//! Replicas: each CPU body whose replicas the user did not fix starts one spare
//! replica process ([`live_replicas`]); the planned number get items. Every
//! window: busy ≥ 85% per active replica (time spent waiting for an output slot does
//! not count: more replicas would not help) → one more gets items; the work would fit
//! in one replica fewer at ≤ 50% busy → one fewer gets items. Producers are told with a
//! `Scale` command; a replica taken out of the rotation finishes what it holds, so
//! nothing is lost, and stays up, idle, for the next scale-up.

use protocol::messages::StageMetrics;
use protocol::spec::{AppSpec, ServiceType, Strategy, TaskKind};
use std::time::{Duration, Instant};

/// The largest batch live tuning gives a GPU stage the planner started at a smaller one.
pub const MAX_LIVE_BATCH: u32 = 8;
pub const WINDOW: Duration = Duration::from_secs(1);
pub const HOLD_DOWN: Duration = Duration::from_secs(3);
/// How much more throughput a bigger batch must bring to be kept.
pub const MIN_GAIN: f64 = 0.05;
/// How long a batch that did not pay stays the stage's ceiling (after its first trial).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest wait before a batch that never paid is tried again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(16 * 30);

/// How long the ceiling holds after `failed` earlier trials of the stage did not pay in a
/// row: [`RETRY_AFTER`], doubled each time, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(failed: u32) -> Duration {
    RETRY_AFTER
        .saturating_mul(1u32 << failed.min(16))
        .min(MAX_RETRY_AFTER)
}
/// How long into a run a stage whose model runs on CPU cores waits for its first batch
/// trial ([`BatchTuner::hold_first_trials`]).
pub const CPU_FIRST_TRIAL_AFTER: Duration = RETRY_AFTER;

/// A raised batch settles this long (its first calls, the queues) before its trial counts.
pub const TRIAL_SETTLE: Duration = Duration::from_secs(1);
/// The windows after [`TRIAL_SETTLE`] whose mean throughput judges a trial.
pub const TRIAL_WINDOWS: u32 = 2;

/// How far live tuning may raise task `t`'s batch (its planned batch when it is not
/// tuned live).
pub fn capacity(app: &AppSpec, t: usize, planned: u32) -> u32 {
    match app.tasks.get(t) {
        Some(task)
            if tunable(app, t) && app.strategy == Strategy::Balance && task.batch.is_none() =>
        {
            planned.max(MAX_LIVE_BATCH)
        }
        _ => planned,
    }
}

/// Whether task `t`'s batch is changed live: a GPU stage whose batch the user left
/// open, in a `balance` app (grown and shrunk with the load) or a best-effort one (kept
/// within its plan and within what the node's guaranteed apps leave it:
/// [`BatchTuner::set_time_cap`]).
fn tunable(app: &AppSpec, t: usize) -> bool {
    (app.strategy == Strategy::Balance || app.service_type == ServiceType::BestEffort)
        && app.tasks.get(t).is_some_and(|task| {
            task.kind == TaskKind::Gpu && (task.batch.is_none() || task.planned)
        })
}

/// Whether task `t`'s replicas are scaled live: a CPU body of a `balance` app whose
/// replicas the user did not fix, on a machine with more than one core. Not a stage
/// that pairs the parts of an item (`table.merge`): its producers pick its replica by
/// the item, and moving that choice would part an item's parts.
pub fn scalable(app: &AppSpec, t: usize) -> bool {
    app.strategy == Strategy::Balance
        && crate::plan::available_cores() > 1
        && app.tasks.get(t).is_some_and(|task| {
            task.kind == TaskKind::Cpu
                && (task.replicas.is_none() || task.planned)
                && !protocol::functions::pairs_parts(&task.function)
        })
}

/// Replica processes a scalable task planned at `planned` replicas starts: one spare,
/// while the machine has a core for it.
pub fn live_replicas(planned: u32) -> u32 {
    let planned = planned.max(1);
    (planned + 1).min(crate::plan::available_cores().max(planned))
}

/// What to do with a task's active replicas given one window: the busy fraction per
/// active replica, how many are active and how many run.
pub fn decide_replicas(busy: f64, active: u32, max: u32) -> Option<u32> {
    if busy >= 0.85 && active < max {
        return Some(active + 1);
    }
    if active > 1 && busy * f64::from(active) / f64::from(active - 1) <= 0.5 {
        return Some(active - 1);
    }
    None
}

/// One task's measuring window: busy time and items out between samples at least
/// [`WINDOW`] apart, none while the task is held after a change.
struct Window {
    held_until: Instant,
    /// (when, busy ns, items out; both summed over replicas) at the window's start.
    since: Option<(Instant, u64, u64)>,
}

/// What one window saw of a task.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When the window began.
    since: Instant,
    /// The busy fraction per server.
    busy: f64,
    /// Items out per second, all replicas together.
    items_per_s: f64,
}

impl Window {
    /// The first window is skipped (start-up: model loads, first items).
    fn new(now: Instant) -> Window {
        Window {
            held_until: now + WINDOW,
            since: None,
        }
    }

    /// The window that ends `now`, given the busy time and items out so far; `None`
    /// while the window is open or the task is held.
    fn sample(&mut self, now: Instant, busy_ns: u64, items: u64, servers: f64) -> Option<Sample> {
        let Some((start, busy_then, items_then)) = self.since else {
            self.since = Some((now, busy_ns, items));
            return None;
        };
        let elapsed = now.duration_since(start);
        if elapsed < WINDOW {
            return None;
        }
        self.since = Some((now, busy_ns, items));
        if now < self.held_until {
            return None;
        }
        let secs = elapsed.as_secs_f64();
        Some(Sample {
            since: start,
            busy: busy_ns.saturating_sub(busy_then) as f64 / 1e9 / secs / servers,
            items_per_s: items.saturating_sub(items_then) as f64 / secs,
        })
    }

    /// A change was made: leave the task alone for [`HOLD_DOWN`].
    fn hold(&mut self, now: Instant) {
        self.held_until = now + HOLD_DOWN;
    }
}

struct Scaled {
    task: usize,
    active: u32,
    max: u32,
    window: Window,
}

/// The live replica scaler of one run.
pub struct ReplicaScaler {
    tasks: Vec<Scaled>,
    /// At most this many replicas of a task get items: a best-effort app's share of the
    /// node (its CPU quota, rounded up), which shrinks when a guaranteed app arrives.
    cap: u32,
}

impl ReplicaScaler {
    /// `active(t)` and `running(t)`: task `t`'s replicas that get items, and that run.
    pub fn new(
        app: &AppSpec,
        active: impl Fn(usize) -> u32,
        running: impl Fn(usize) -> u32,
    ) -> ReplicaScaler {
        let now = Instant::now();
        let tasks = (0..app.tasks.len())
            .filter(|&t| scalable(app, t) && running(t) > 1)
            .map(|t| Scaled {
                task: t,
                active: active(t).clamp(1, running(t)),
                max: running(t),
                window: Window::new(now),
            })
            .collect();
        ReplicaScaler {
            tasks,
            cap: u32::MAX,
        }
    }

    /// The cores the app may use now (its cgroup's CPU quota; none = unlimited): from
    /// the next step no task has more replicas getting items than that, rounded up.
    pub fn set_cores(&mut self, cores: Option<f64>) {
        self.cap = cores.map_or(u32::MAX, |c| {
            (c.ceil().max(1.0)).min(f64::from(u32::MAX)) as u32
        });
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Look at every scaled task whose window is over; `replicas(t)` gives the counters
    /// of task `t`'s replicas. Returns (task, active before, active after) per change.
    pub fn step<'m>(
        &mut self,
        now: Instant,
        replicas: impl Fn(usize) -> Vec<&'m StageMetrics>,
    ) -> Vec<Retune> {
        let mut changes = Vec::new();
        for s in &mut self.tasks {
            // The node took cores back: fewer replicas at once, whatever their load.
            if s.active > self.cap {
                changes.push((s.task, s.active, self.cap));
                s.active = self.cap;
                s.window.hold(now);
                continue;
            }
            // Time spent waiting for an output slot is not work more replicas would share.
            let ms = replicas(s.task);
            let work: u64 = ms
                .iter()
                .map(|m| m.busy_ns.saturating_sub(m.waiting_for_slot_ns))
                .sum();
            let items = ms.iter().map(|m| m.items_out).sum();
            let Some(seen) = s.window.sample(now, work, items, f64::from(s.active)) else {
                continue;
            };
            if let Some(to) = decide_replicas(seen.busy, s.active, s.max.min(self.cap)) {
                changes.push((s.task, s.active, to));
                s.active = to;
                s.window.hold(now);
            }
        }
        changes
    }
}

/// What to do with a stage's batch given one window: its busy fraction, the items
/// waiting per replica, its batch and capacity.
pub fn decide(busy: f64, queued_per_replica: f64, batch: u32, capacity: u32) -> Option<u32> {
    let overloaded = busy >= 0.9 || queued_per_replica >= 2.0 * f64::from(batch);
    if overloaded && batch < capacity {
        return Some((batch * 2).min(capacity));
    }
    if busy <= 0.3 && queued_per_replica < 1.0 && batch > 1 {
        return Some(batch / 2);
    }
    None
}

struct Tuned {
    task: usize,
    batch: u32,
    capacity: u32,
    /// The most items one call may carry while guaranteed apps share the node
    /// ([`BatchTuner::set_time_cap`]); `u32::MAX` when nothing limits it.
    cap: u32,
    window: Window,
    /// The batch raised last, on trial until [`TRIAL_WINDOWS`] windows after it settled.
    trial: Option<Trial>,
    /// A batch that did not pay: no growth past the one before it until then.
    ceiling: Option<(u32, Instant)>,
    /// Trials in a row that did not pay (the next ceiling holds longer).
    failed_trials: u32,
    /// The window before the last one, when no change came between them.
    previous: Option<Sample>,
}

/// A bigger batch on trial: the batch before it, the throughput that asked for it, and
/// what the windows since it settled saw.
struct Trial {
    from: u32,
    items_per_s_before: f64,
    settled_at: Instant,
    after: Vec<f64>,
}

/// Where a trial stands after a window.
enum Verdict {
    /// No trial runs, or the bigger batch paid: tuning goes on.
    None,
    /// Still settling or counting windows: no other change meanwhile.
    Pending,
    /// It did not pay: this change undoes it.
    Undo(BatchChange),
}

impl Tuned {
    /// Counts `seen` for the trial of a bigger batch, if one runs: windows that began before
    /// the batch settled are left out; after [`TRIAL_WINDOWS`] more, a batch that did not
    /// raise their mean throughput by [`MIN_GAIN`] is undone and becomes the ceiling for
    /// [`RETRY_AFTER`].
    fn judge_trial(&mut self, now: Instant, seen: Sample) -> Verdict {
        let Some(trial) = self.trial.as_mut() else {
            return Verdict::None;
        };
        if seen.since < trial.settled_at {
            return Verdict::Pending;
        }
        trial.after.push(seen.items_per_s);
        if trial.after.len() < TRIAL_WINDOWS as usize {
            return Verdict::Pending;
        }
        let after = trial.after.iter().sum::<f64>() / trial.after.len() as f64;
        let (from, before) = (trial.from, trial.items_per_s_before);
        // The window before this one, at the batch now kept, for the next trial's baseline.
        let window_before = trial.after.len().checked_sub(2).map(|i| trial.after[i]);
        self.trial = None;
        if from >= self.batch || after > before * (1.0 + MIN_GAIN) {
            self.failed_trials = 0;
            self.previous = window_before.map(|items_per_s| Sample {
                items_per_s,
                ..seen
            });
            return Verdict::None;
        }
        let undo = BatchChange {
            task: self.task,
            from: self.batch,
            to: from,
            why: BatchWhy::NoGain {
                items_per_s_before: before,
                items_per_s_after: after,
                retry_after_s: retry_after(self.failed_trials).as_secs(),
            },
        };
        self.batch = from;
        self.ceiling = Some((from, now + retry_after(self.failed_trials)));
        self.failed_trials = self.failed_trials.saturating_add(1);
        self.previous = None;
        self.window.hold(now);
        Verdict::Undo(undo)
    }
}

/// A stage's mean time per item so far, in ms, from its replicas' counters.
pub fn per_item_ms(ms: &[&StageMetrics]) -> Option<f64> {
    let items: u64 = ms.iter().map(|m| m.items_out).sum();
    let busy: u64 = ms.iter().map(|m| m.busy_ns).sum();
    (items > 0).then(|| busy as f64 / items as f64 / 1e6)
}

/// The live tuner of one run.
pub struct BatchTuner {
    stages: Vec<Tuned>,
}

/// One change of replicas: task index, before, after.
pub type Retune = (usize, u32, u32);

/// Why live tuning changed a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchWhy {
    /// Busy ≥ 90 % or two batches queued: the bigger batch is on trial.
    Overloaded,
    /// Busy ≤ 30 % with nothing queued: items should not wait for company.
    Idle,
    /// The raise on trial did not bring [`MIN_GAIN`] more items out per second (the
    /// means of the windows before it and after it settled); not tried again for
    /// `retry_after_s` ([`retry_after`]).
    NoGain {
        items_per_s_before: f64,
        items_per_s_after: f64,
        retry_after_s: u64,
    },
    /// Kept within the time a call may take beside guaranteed apps.
    TimeCap,
}

/// One batch change of a task, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchChange {
    pub task: usize,
    pub from: u32,
    pub to: u32,
    pub why: BatchWhy,
}

impl BatchChange {
    /// The change for people, with `name` the task's name.
    pub fn note(&self, name: &str) -> String {
        let (from, to) = (self.from, self.to);
        let why = match self.why {
            BatchWhy::Overloaded => "the bottleneck; on trial".to_string(),
            BatchWhy::Idle => "idle".to_string(),
            BatchWhy::NoGain {
                items_per_s_before,
                items_per_s_after,
                retry_after_s,
            } => format!(
                "batch {from} did not raise throughput: {items_per_s_after:.1} items/s against {items_per_s_before:.1}; not tried again for {retry_after_s} s"
            ),
            BatchWhy::TimeCap => "calls kept short beside guaranteed apps".to_string(),
        };
        format!("tuning: {name} batch {from} → {to} ({why})")
    }
}

impl BatchTuner {
    pub fn new(app: &AppSpec, planned_batch: impl Fn(usize) -> u32) -> BatchTuner {
        let now = Instant::now();
        let stages = (0..app.tasks.len())
            .filter(|&t| tunable(app, t))
            .map(|t| {
                let batch = planned_batch(t).max(1);
                Tuned {
                    task: t,
                    batch,
                    capacity: capacity(app, t, batch),
                    cap: u32::MAX,
                    window: Window::new(now),
                    trial: None,
                    ceiling: None,
                    failed_trials: 0,
                    previous: None,
                }
            })
            .filter(|s| s.capacity > 1)
            .collect();
        BatchTuner { stages }
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// No stage's batch grows before `until` (it may still shrink): the models run on
    /// CPU cores, where a bigger batch rarely pays ([`CPU_FIRST_TRIAL_AFTER`]).
    pub fn hold_first_trials(&mut self, until: Instant) {
        for s in &mut self.stages {
            s.ceiling = Some((s.batch, until));
        }
    }

    /// Keep each stage's model calls within `budget_ms` (a best-effort app beside
    /// guaranteed ones: a fraction of their tightest latency quota), given its time per
    /// item `per_item_ms(t)`; `None` lifts the cap. A stage over its cap is brought
    /// down at the next [`BatchTuner::step`], without waiting for a window.
    pub fn set_time_cap(
        &mut self,
        budget_ms: Option<f64>,
        per_item_ms: impl Fn(usize) -> Option<f64>,
    ) {
        for s in &mut self.stages {
            s.cap = match (budget_ms, per_item_ms(s.task)) {
                (Some(budget), Some(per_item)) if per_item > 0.0 => {
                    ((budget / per_item).floor() as u32).max(1)
                }
                // Not measured yet: one item per call until it is.
                (Some(_), _) => 1,
                (None, _) => u32::MAX,
            };
        }
    }

    /// Look at every tuned stage whose window is over; `replicas(t)` gives the current
    /// counters of task `t`'s running replicas.
    pub fn step<'m>(
        &mut self,
        now: Instant,
        replicas: impl Fn(usize) -> Vec<&'m StageMetrics>,
    ) -> Vec<BatchChange> {
        let mut changes = Vec::new();
        for s in &mut self.stages {
            if s.batch > s.cap {
                changes.push(BatchChange {
                    task: s.task,
                    from: s.batch,
                    to: s.cap,
                    why: BatchWhy::TimeCap,
                });
                s.batch = s.cap;
                s.previous = None;
                s.window.hold(now);
                continue;
            }
            let ms = replicas(s.task);
            if ms.is_empty() {
                continue;
            }
            let busy_ns: u64 = ms.iter().map(|m| m.busy_ns).sum();
            let items: u64 = ms.iter().map(|m| m.items_out).sum();
            let queued: u32 = ms.iter().map(|m| m.queue_depth).sum();
            let n = ms.len() as f64;
            let Some(seen) = s.window.sample(now, busy_ns, items, n) else {
                continue;
            };
            match s.judge_trial(now, seen) {
                Verdict::Pending => continue,
                Verdict::Undo(undo) => {
                    changes.push(undo);
                    continue;
                }
                Verdict::None => {}
            }
            let ceiling = match s.ceiling {
                Some((batch, until)) if now < until => batch,
                _ => u32::MAX,
            };
            let most = s.capacity.min(s.cap).min(ceiling);
            let Some(to) = decide(seen.busy, f64::from(queued) / n, s.batch, most) else {
                s.previous = Some(seen);
                continue;
            };
            let why = if to > s.batch {
                // The rate to beat: the better of this window and the one before it at
                // the same batch. Noise then errs towards undoing (tried again later),
                // and a window still filling the pipeline cannot lower the bar.
                let before = s
                    .previous
                    .map_or(seen.items_per_s, |p| p.items_per_s.max(seen.items_per_s));
                s.trial = Some(Trial {
                    from: s.batch,
                    items_per_s_before: before,
                    settled_at: now + TRIAL_SETTLE,
                    after: Vec::with_capacity(TRIAL_WINDOWS as usize),
                });
                BatchWhy::Overloaded
            } else {
                s.window.hold(now);
                BatchWhy::Idle
            };
            changes.push(BatchChange {
                task: s.task,
                from: s.batch,
                to,
                why,
            });
            s.batch = to;
            s.previous = None;
        }
        changes
    }
}

#[cfg(test)]
#[path = "tuning_tests.rs"]
mod tests;
