//! The end-of-run summary: items in and out, losses by reason, throughput, latency
//! percentiles and jitter, printed for people and written as JSON for scripts.

use protocol::messages::{LossReason, StageMetrics, StageReport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Latency statistics in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencyStats {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Standard deviation.
    pub jitter: f64,
}

impl LatencyStats {
    pub fn from_samples(samples: &[f32]) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        let mut v: Vec<f64> = samples.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        LatencyStats {
            count: n,
            mean,
            p50: percentile(&v, 50.0),
            p95: percentile(&v, 95.0),
            p99: percentile(&v, 99.0),
            max: v[n - 1],
            jitter: var.sqrt(),
        }
    }
}

/// Latencies gathered from tails: samples (every item, or a uniform sample of a long run),
/// with the count and the largest value of all the deliveries they stand for.
#[derive(Default)]
struct Gathered {
    samples: Vec<f32>,
    /// Deliveries the samples stand for (exact for a whole sample; scaled from the
    /// samples kept for a part of one, as the steady latency's items after the warm-up).
    count: f64,
    max: f32,
}

impl Gathered {
    /// Add `samples`, each standing for `stand_for` deliveries; `max` is the largest
    /// latency of the deliveries they stand for.
    fn add(&mut self, samples: impl Iterator<Item = f32>, stand_for: f64, max: f32) {
        let before = self.samples.len();
        self.samples.extend(samples);
        let n = (self.samples.len() - before) as f64;
        self.count += n * stand_for;
        self.max = self.max.max(max);
    }

    fn stats(&self) -> LatencyStats {
        let mut stats = LatencyStats::from_samples(&self.samples);
        if stats.count > 0 {
            stats.count = (self.count.round() as usize).max(stats.count);
            stats.max = stats.max.max(f64::from(self.max));
        }
        stats
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Seconds after the first item's creation before items count in the steady latency.
pub const WARMUP_S: f64 = 2.0;

/// The latencies of a tail replica's items created at or after `from_ns`.
fn latencies_created_after(r: &StageReport, from_ns: u64) -> impl Iterator<Item = f32> + '_ {
    r.latencies_ms
        .iter()
        .zip(&r.arrivals_ns)
        .filter(move |(&lat, &arrival)| {
            arrival.saturating_sub((f64::from(lat) * 1e6) as u64) >= from_ns
        })
        .map(|(&lat, _)| lat)
}

/// What one tail task received (all its replicas).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TailSummary {
    pub task: String,
    pub items: u64,
    /// Items missing at this tail compared with what the sources announced.
    pub missing: u64,
    /// Why they are missing, by reason: the losses counted on this tail's way (its own
    /// and its upstream stages': another branch's losses are not its), and as `crash`
    /// what no stage counted (inside a process that died: best-effort apps are not
    /// replayed). Sums to `missing` when the sources' totals reached the tail.
    #[serde(default)]
    pub lost: BTreeMap<String, u64>,
    pub latency_ms: LatencyStats,
    /// Per hop k → k+1 transport latency in µs (p50, p99).
    pub hop_us: Vec<(f64, f64)>,
    /// Items per second from the first item's creation to the last arrival
    /// (start-up of the processes excluded).
    pub steady_items_per_s: f64,
    /// Per stage on the way here: its stays against the rest of the items' paths.
    pub stays: Vec<protocol::messages::StayStats>,
}

/// A tail restarted during the run whose output cannot be resumed (a video,
/// csv or jsonl on stdout): each restart started it over.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RestartedOutput {
    /// The tail replica (`task#replica`) and its task.
    pub stage: String,
    pub task: String,
    pub restarts: u32,
    /// Its output: the file, or `stdout`.
    pub output: String,
    /// The files the restarted processes moved what the earlier ones had written to
    /// (`<stem>.part-<k>.<ext>`, oldest first); with `output` they hold every item.
    pub earlier_parts: Vec<String>,
    /// What happened, for people (the summary's `restarted:` line).
    pub note: String,
}

/// An output its tail ended without writing (stopped at once, or failed at its end),
/// what the tail had received kept beside it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnfinishedOutput {
    pub task: String,
    /// The file that was not written.
    pub output: String,
    /// The journal or segments folder that holds what the tail received.
    pub kept_in: String,
    /// What happened and what to do, for people (the summary's `not written:` line).
    pub note: String,
}

/// The whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub app: String,
    pub app_file: String,
    pub outcome: String,
    pub run_dir: String,
    /// Whether the app's cgroup enforced its constraints ("constraints enforced: …" or
    /// "constraints not enforced: <why>").
    #[serde(default)]
    pub constraints: String,
    /// Processes killed by the cgroup's memory limit ("rows#0: out of memory: …").
    #[serde(default)]
    pub out_of_memory: Vec<String>,
    pub wall_s: f64,
    pub items_in: u64,
    pub items_out: u64,
    pub lost: BTreeMap<String, u64>,
    pub lost_total: u64,
    /// Items in that neither reached a tail nor were counted lost: in flight when the app
    /// ended before its stream did (a failure, a drain that did not finish).
    #[serde(default)]
    pub unfinished: u64,
    pub throughput_per_min: f64,
    pub latency_ms: LatencyStats,
    /// Latency of the items created [`WARMUP_S`] or more after the first one: the
    /// steady state, without the first runs of the models on each new input shape
    /// (the quota checks use every item).
    pub steady_latency_ms: LatencyStats,
    pub tails: Vec<TailSummary>,
    pub stages: BTreeMap<String, StageMetrics>,
    /// Items that never produced a reply, in % of the items in.
    pub loss_pct: f64,
    /// Every quota of the app beside what was achieved.
    pub qos: Vec<QosCheck>,
    /// Restarts per stage replica (only those restarted).
    pub restarts: BTreeMap<String, u32>,
    /// Restarted tails whose output was started over, and where the earlier parts are.
    pub restarted_outputs: Vec<RestartedOutput>,
    /// Outputs a tail ended without writing; `supervisor finish-outputs` writes them
    /// from what is kept beside them.
    #[serde(default)]
    pub unfinished_outputs: Vec<UnfinishedOutput>,
    /// Video sources that ended before the frames their file announces (a truncated or
    /// damaged file): what they read against what was announced.
    #[serde(default)]
    pub short_sources: Vec<String>,
    /// Sources that fell behind their own pace in a best-effort app: how many items were
    /// past the latency quota or skipped to catch up (counted lost at the source).
    #[serde(default)]
    pub behind_sources: Vec<String>,
    /// Live streams that were lost (ended or silent) and opened again: how often.
    #[serde(default)]
    pub reconnected_sources: Vec<String>,
    /// Messages per stage replica that did not decode (each killed the process that
    /// sent it; only replicas that sent one).
    pub bad_messages: BTreeMap<String, u64>,
    /// Per restart: from the new process's set-up to its first output, in ms.
    pub restart_to_first_output_ms: Vec<f64>,
    /// Shared-memory holds freed from processes that died.
    pub reclaimed_holds: u64,
    /// Counts a process killed between two updates of a slot's counters left behind,
    /// found and freed by the supervisor (`leaks.rs`).
    pub repaired_holds: u64,
    /// Slots still held once every process ended (0 unless something leaked).
    pub slots_held_at_end: u32,
    /// Per pool with slots still held at the end: its writer and the holders.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slots_held_report: Vec<String>,
    /// Live batching changes (`balance`): when (s after the start), task, from, to.
    pub retunes: Vec<(f64, String, u32, u32)>,
    /// Live scaling (`balance`): when (s after the start), task, replicas getting items
    /// before and after.
    pub rescales: Vec<(f64, String, u32, u32)>,
}

/// One quota and what the run achieved.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QosCheck {
    pub metric: String,
    pub achieved: f64,
    pub quota: f64,
    /// "≥" for throughput, "≤" for the rest.
    pub bound: String,
    pub met: bool,
    /// Why there is no figure to judge (latency and jitter of an app that delivered
    /// nothing: missed, not met by an empty sample); empty otherwise.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Summary {
    /// Compare the run with the app's quota. Latency and jitter are judged on the items
    /// delivered: when items came in and none was delivered there is nothing to judge,
    /// and they are missed.
    pub fn check_quota(&mut self, quota: &protocol::spec::Quota) {
        let no_latency = self.latency_ms.count == 0 && self.items_in > 0;
        // `of_latencies`: a figure of the delivered items' latencies.
        let mut check = |metric: &str,
                         achieved: f64,
                         limit: Option<f64>,
                         at_least: bool,
                         of_latencies: bool| {
            if let Some(q) = limit {
                let unjudged = no_latency && of_latencies;
                self.qos.push(QosCheck {
                    metric: metric.to_string(),
                    achieved,
                    quota: q,
                    bound: if at_least { "≥" } else { "≤" }.to_string(),
                    met: if unjudged {
                        false
                    } else if at_least {
                        achieved >= q
                    } else {
                        achieved <= q
                    },
                    note: if unjudged {
                        format!("no item of the {} in was delivered", self.items_in)
                    } else {
                        String::new()
                    },
                });
            }
        };
        check(
            "throughput_per_min",
            self.throughput_per_min,
            quota.throughput_per_min,
            true,
            false,
        );
        check(
            "latency_p99_ms",
            self.latency_ms.p99,
            quota.max_latency_ms,
            false,
            true,
        );
        check(
            "jitter_ms",
            self.latency_ms.jitter,
            quota.max_jitter_ms,
            false,
            true,
        );
        check("loss_pct", self.loss_pct, quota.max_loss_pct, false, false);
    }
}

/// One tail's items, latencies, per-hop times and stays; its latencies are added to
/// `all_latencies`, those of items created after the warm-up to `steady_latencies`.
fn summarize_tail(
    t: &TailReports<'_>,
    all_latencies: &mut Gathered,
    steady_latencies: &mut Gathered,
) -> TailSummary {
    let mut latencies = Gathered::default();
    let mut hops: Vec<Vec<f32>> = Vec::new();
    let mut stays: BTreeMap<protocol::TaskId, protocol::messages::StayStats> = BTreeMap::new();
    let mut items = 0;
    let first = t
        .reports
        .iter()
        .map(|r| r.first_created_ns)
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    let last = t
        .reports
        .iter()
        .map(|r| r.last_arrival_ns)
        .max()
        .unwrap_or(0);
    let steady_from = first + (WARMUP_S * 1e9) as u64;
    for r in &t.reports {
        let stand_for = r.sample_weight();
        let samples = r.latencies_ms.iter().copied();
        latencies.add(samples.clone(), stand_for, r.latency_max_ms);
        all_latencies.add(samples, stand_for, r.latency_max_ms);
        let steady = latencies_created_after(r, steady_from);
        steady_latencies.add(steady, stand_for, 0.0);
        items += r.received.iter().map(|s| s.total).sum::<u64>();
        for (k, h) in r.hop_us.iter().enumerate() {
            if hops.len() <= k {
                hops.push(Vec::new());
            }
            hops[k].extend_from_slice(h);
        }
        for st in &r.stays {
            stays
                .entry(st.stage)
                .or_insert_with(|| protocol::messages::StayStats::new(st.stage))
                .merge(st);
        }
    }
    let hop_us = hops
        .iter()
        .map(|h| {
            let s = LatencyStats::from_samples(h);
            (s.p50, s.p99)
        })
        .collect();
    TailSummary {
        task: t.task.clone(),
        items,
        missing: missing_at(&t.reports),
        lost: BTreeMap::new(),
        latency_ms: latencies.stats(),
        hop_us,
        steady_items_per_s: if last > first {
            items as f64 / ((last - first) as f64 / 1e9)
        } else {
            0.0
        },
        stays: stays.into_values().collect(),
    }
}

/// Each stage that dropped bad input, with how many and why it dropped the first:
/// `isnet-pre#0 (3): <the warning it logged> — every one in logs/isnet-pre#0.log`.
/// A stage that logged no warning for it is named with its count.
pub(crate) fn bad_input_by_stage<'a>(
    stages: impl IntoIterator<Item = (&'a String, &'a StageMetrics)>,
) -> Vec<String> {
    stages
        .into_iter()
        .filter_map(|(label, m)| {
            let n = m.lost[protocol::messages::LossReason::BadInput as usize];
            (n > 0).then(|| match &m.bad_input_example {
                Some(why) => format!("{label} ({n}): {why} — every one in logs/{label}.log"),
                None => format!("{label} ({n}): see logs/{label}.log"),
            })
        })
        .collect()
}

/// " (shed 3, deadline 2)": the reasons with a count, or nothing.
pub(crate) fn by_reason(lost: &BTreeMap<String, u64>) -> String {
    let reasons: Vec<String> = lost
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    }
}

/// Items in that neither reached the tail that got most nor were counted lost on its way
/// (or, without tails, anywhere): in flight when the app ended before its stream did.
/// Another branch's losses do not hide them.
fn unfinished(items_in: u64, tails: &[TailSummary], lost_anywhere: u64) -> u64 {
    let accounted = tails
        .iter()
        .max_by_key(|t| t.items)
        .map_or(lost_anywhere, |t| t.items + t.lost.values().sum::<u64>());
    items_in.saturating_sub(accounted)
}

/// Items out of the app: an item is out once it reached a tail; per source, the tail that
/// got most.
fn items_out(tails: &[TailReports<'_>]) -> u64 {
    let mut per_source: BTreeMap<&str, u64> = BTreeMap::new();
    for t in tails {
        let mut got: BTreeMap<&str, u64> = BTreeMap::new();
        for r in &t.reports {
            for s in &r.received {
                *got.entry(s.source.as_str()).or_insert(0) += s.total;
            }
        }
        for (source, n) in got {
            let best = per_source.entry(source).or_insert(0);
            *best = (*best).max(n);
        }
    }
    per_source.values().sum()
}

/// Items a tail should have received (what its upstream sources announced) but did not.
fn missing_at(reports: &[&StageReport]) -> u64 {
    let mut announced: BTreeMap<&str, u64> = BTreeMap::new();
    let mut received: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for a in &r.announced {
            let e = announced.entry(a.source.as_str()).or_insert(0);
            *e = (*e).max(a.total);
        }
        for s in &r.received {
            *received.entry(s.source.as_str()).or_insert(0) += s.total;
        }
    }
    announced
        .iter()
        .map(|(s, n)| n.saturating_sub(received.get(s).copied().unwrap_or(0)))
        .sum()
}

/// Losses counted by `stages`, by reason (every reason, 0 included).
fn losses_by_reason<'a>(stages: impl Iterator<Item = &'a StageMetrics>) -> BTreeMap<String, u64> {
    let mut counts = [0u64; LossReason::ALL.len()];
    for m in stages {
        for (count, n) in counts.iter_mut().zip(m.lost) {
            *count += n;
        }
    }
    LossReason::ALL
        .iter()
        .map(|&r| (r.as_str().to_string(), counts[r as usize]))
        .collect()
}

/// Per tail task: its name, the reports of its replicas and what is not on its way.
pub struct TailReports<'a> {
    pub task: String,
    pub reports: Vec<&'a StageReport>,
    /// The app's tasks none of this tail's items pass (other branches): their losses
    /// are not this tail's. Empty: every stage feeds it.
    pub off_path: BTreeSet<String>,
}

impl TailReports<'_> {
    /// The losses counted by the stages on this tail's way, by reason (those with any).
    fn path_losses(&self, stages: &BTreeMap<String, StageMetrics>) -> BTreeMap<String, u64> {
        let on_path = stages.iter().filter(|(label, _)| {
            let task = label.rsplit_once('#').map_or(label.as_str(), |(t, _)| t);
            !self.off_path.contains(task)
        });
        let mut lost = losses_by_reason(on_path.map(|(_, m)| m));
        lost.retain(|_, n| *n > 0);
        lost
    }
}

impl Summary {
    pub fn build(
        app: &str,
        wall_s: f64,
        heads_announced: &BTreeMap<String, u64>,
        tails: &[TailReports<'_>],
        stages: BTreeMap<String, StageMetrics>,
    ) -> Summary {
        let mut lost = losses_by_reason(stages.values());
        let announced_in: u64 = heads_announced.values().sum();
        let mut all_latencies = Gathered::default();
        let mut steady_latencies = Gathered::default();
        let mut tail_summaries: Vec<TailSummary> = tails
            .iter()
            .map(|t| summarize_tail(t, &mut all_latencies, &mut steady_latencies))
            .collect();
        // What is missing at a tail beyond the losses counted on its way was inside a
        // process that died (best-effort apps are not replayed).
        let mut crashed = 0;
        for (summary, t) in tail_summaries.iter_mut().zip(tails) {
            summary.lost = t.path_losses(&stages);
            let counted: u64 = summary.lost.values().sum();
            if summary.missing > counted {
                let crash = summary.missing - counted;
                *summary
                    .lost
                    .entry(LossReason::Crash.as_str().to_string())
                    .or_insert(0) += crash;
                crashed = crashed.max(crash);
            }
        }
        *lost
            .entry(LossReason::Crash.as_str().to_string())
            .or_insert(0) += crashed;
        let items_out = items_out(tails);
        // A head that ended without its report (the app failed at once) is counted from its
        // last heartbeat, which can be behind what its tails already got.
        let items_in = announced_in.max(items_out);
        let unfinished = unfinished(items_in, &tail_summaries, lost.values().sum());
        Summary {
            app: app.to_string(),
            app_file: String::new(),
            outcome: String::new(),
            run_dir: String::new(),
            constraints: String::new(),
            out_of_memory: Vec::new(),
            wall_s,
            items_in,
            items_out,
            lost_total: lost.values().sum(),
            unfinished,
            lost,
            throughput_per_min: if wall_s > 0.0 {
                items_out as f64 * 60.0 / wall_s
            } else {
                0.0
            },
            latency_ms: all_latencies.stats(),
            steady_latency_ms: steady_latencies.stats(),
            tails: tail_summaries,
            stages,
            loss_pct: if items_in > 0 {
                items_in.saturating_sub(items_out) as f64 * 100.0 / items_in as f64
            } else {
                0.0
            },
            qos: Vec::new(),
            restarts: BTreeMap::new(),
            restarted_outputs: Vec::new(),
            unfinished_outputs: Vec::new(),
            short_sources: Vec::new(),
            behind_sources: Vec::new(),
            reconnected_sources: Vec::new(),
            bad_messages: BTreeMap::new(),
            restart_to_first_output_ms: Vec::new(),
            reclaimed_holds: 0,
            repaired_holds: 0,
            slots_held_at_end: 0,
            slots_held_report: Vec::new(),
            retunes: Vec::new(),
            rescales: Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
