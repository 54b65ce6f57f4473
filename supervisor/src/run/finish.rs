//! The end of a run: what every replica reported (the heads' announced items, the tails'
//! deliveries, restarted tails' earlier counts added), the summary with its quota check,
//! restarts, holds and outcome, and the files a run leaves (`summary.json`, `report.html`).

use super::run_loop::RunLoop;
use super::RunOutcome;
use crate::observe::summary::{Summary, TailReports};
use crate::run::replica::Replica;
use protocol::messages::{SourceTotal, StageMetrics, StageReport};
use protocol::spec::{ServiceType, TaskKind};
use std::collections::{BTreeMap, BTreeSet};

/// The app's tasks that do not feed tail `tail`: their losses are not its.
fn off_path(app: &protocol::spec::AppSpec, tail: usize) -> BTreeSet<String> {
    let feeding = crate::plan::ancestors(app, tail);
    app.tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != tail && !feeding.contains(i))
        .map(|(_, t)| t.name.clone())
        .collect()
}

impl RunLoop<'_> {
    /// Summarise the ended run and write its summary and report.
    pub fn finish(mut self) -> RunOutcome {
        let app = &self.loaded.spec;
        let wall_s = self.started.elapsed().as_secs_f64();
        self.progress.finish();
        let replicas = &self.run.replicas;
        let totals: Vec<StageMetrics> = replicas.iter().map(|r| r.total_metrics()).collect();
        self.timeline.sample(totals.iter(), true);
        let stage_metrics: BTreeMap<String, StageMetrics> = replicas
            .iter()
            .map(|r| (r.label.clone(), r.total_metrics()))
            .collect();
        let announced = self.announced();
        let tail_reports = tail_reports(replicas);
        let tails: Vec<TailReports<'_>> = app
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == TaskKind::Tail)
            .map(|(i, t)| TailReports {
                task: t.name.clone(),
                reports: tail_reports
                    .iter()
                    .filter(|(task, _)| *task == i)
                    .map(|(_, rep)| rep)
                    .collect(),
                off_path: off_path(app, i),
            })
            .collect();
        let mut summary = Summary::build(&app.name, wall_s, &announced, &tails, stage_metrics);
        summary.check_quota(&app.quota);
        self.fill(&mut summary);
        if let Some(why) = nothing_delivered(app, &summary) {
            tracing::error!("{why}");
            self.failure.get_or_insert(why);
        }
        summary.outcome = match (&self.failure, self.phase.drained()) {
            (Some(_), _) => "failed".into(),
            (None, true) => "drained after a signal".into(),
            (None, false) => "finished".into(),
        };
        summary.behind_sources = behind_sources(app, &summary.stages);
        summary.reconnected_sources = reconnected_streams(app, &summary.stages);
        if summary.outcome == "finished" {
            summary.short_sources = short_videos(app, &summary.stages, &self.run.video_frames);
            summary
                .short_sources
                .extend(stalled_streams(app, &summary.stages));
            for note in &summary.short_sources {
                tracing::warn!("{note}");
            }
        }
        let _ = std::fs::write(
            self.opts.run_dir.join("summary.json"),
            serde_json::to_vec_pretty(&summary).unwrap_or_default(),
        );
        self.write_report(&summary, &tails);
        RunOutcome {
            summary,
            error: self.failure.take(),
        }
    }

    /// Items each head source announced: its report, or, for a head stopped or failed
    /// before its report, what its heartbeats counted.
    fn announced(&self) -> BTreeMap<String, u64> {
        let mut announced: BTreeMap<String, u64> = BTreeMap::new();
        for r in self
            .run
            .replicas
            .iter()
            .filter(|r| r.kind == TaskKind::Head)
        {
            match &r.report {
                Some(rep) => {
                    for t in &rep.announced {
                        announced.insert(t.source.clone(), t.total);
                    }
                }
                None => {
                    let m = r.total_metrics();
                    let seen = m.sent_or_lost();
                    let source = self.run.wiring.task_name(r.task);
                    *announced.entry(source).or_insert(0) += seen;
                }
            }
        }
        announced
    }

    /// The summary's restarts, bad messages, tuning, holds, constraints and places.
    fn fill(&mut self, summary: &mut Summary) {
        let replicas = &self.run.replicas;
        summary.restarts = replicas
            .iter()
            .filter(|r| r.incarnation > 0)
            .map(|r| (r.label.clone(), r.incarnation))
            .collect();
        summary.restarted_outputs = self.run.restarted_outputs();
        summary.bad_messages = replicas
            .iter()
            .filter(|r| r.bad_messages > 0)
            .map(|r| (r.label.clone(), r.bad_messages))
            .collect();
        summary.restart_to_first_output_ms = self.run.first_output_ms.clone();
        summary.reclaimed_holds = self.run.reclaimed;
        summary.retunes = std::mem::take(&mut self.tuning.retunes);
        summary.rescales = std::mem::take(&mut self.tuning.rescales);
        // No process runs any more: what no holder accounts for is a killed process's.
        self.run.leaks.step(&self.run.wiring, true);
        summary.repaired_holds = self.run.leaks.repaired;
        let (free, slots) = self.run.wiring.free_slots();
        summary.slots_held_at_end = slots - free;
        summary.slots_held_report = self.run.wiring.held_report();
        for line in &summary.slots_held_report {
            tracing::warn!("held after every process ended: {line}");
        }
        summary.run_dir = self.opts.run_dir.display().to_string();
        summary.constraints = self.constraints.clone();
        summary.out_of_memory = std::mem::take(&mut self.out_of_memory);
        // Every process has been reaped: the cgroup can go.
        self.cgroup = Err("removed at the end of the run".into());
        summary.app_file = self.loaded.file.display().to_string();
        summary.unfinished_outputs = super::apprun::outputs::unfinished(
            &self.run.wiring.app.tasks,
            &self.loaded.file,
            Some(&self.opts.run_dir),
        );
        for o in &summary.unfinished_outputs {
            tracing::warn!("{}", o.note);
        }
    }

    /// `report.html`: the plan, the summary, the timeline, latencies and arrivals.
    fn write_report(&self, summary: &Summary, tails: &[TailReports<'_>]) {
        let mut latencies = Vec::new();
        let mut arrivals = Vec::new();
        for t in tails {
            for r in &t.reports {
                latencies.extend_from_slice(&r.latencies_ms);
                let weight = r.sample_weight();
                arrivals.extend(
                    r.arrivals_ns
                        .iter()
                        .map(|&a| (a.saturating_sub(self.started_ns) as f64 / 1e9, weight)),
                );
            }
        }
        let page = crate::observe::report::render(&crate::observe::report::ReportData {
            app: &self.loaded.spec,
            plan: self.plan,
            summary,
            timeline: &self.timeline,
            latencies_ms: &latencies,
            arrivals_s: &arrivals,
        });
        if let Err(e) = std::fs::write(self.opts.run_dir.join("report.html"), page) {
            tracing::warn!("cannot write report.html: {e}");
        }
    }
}

/// Every tail's report by task. A restarted tail's report counts only what its last
/// process delivered: what the earlier ones did is added.
fn tail_reports(replicas: &[Replica]) -> Vec<(usize, StageReport)> {
    replicas
        .iter()
        .filter(|r| r.kind == TaskKind::Tail)
        .map(|r| {
            let mut rep = r.report.clone().unwrap_or_else(|| unreported_tail(r));
            // The earlier processes' deliveries first, then this one's.
            let mut delivered = r.delivered_before.clone();
            delivered.absorb(&r.delivered_by_this_process());
            rep.latencies_seen = delivered.count();
            rep.latency_max_ms = delivered.max_ms;
            rep.latencies_ms = delivered.latencies_ms;
            rep.arrivals_ns = delivered.arrivals_ns;
            rep.first_created_ns = delivered.first_created_ns;
            if let Some(&last) = rep.arrivals_ns.iter().max() {
                rep.last_arrival_ns = rep.last_arrival_ns.max(last);
            }
            for (source, n) in &r.received_before {
                match rep.received.iter_mut().find(|s| &s.source == source) {
                    Some(s) => s.total += n,
                    None => rep.received.push(SourceTotal {
                        source: source.clone(),
                        total: *n,
                    }),
                }
            }
            (r.task, rep)
        })
        .collect()
}

/// What a tail that ended without its report (it failed, or was stopped at once)
/// delivered: its counters as its last heartbeat (sent also on a failure) had them,
/// per source where its acknowledgements named one.
fn unreported_tail(r: &Replica) -> StageReport {
    let out = r.metrics.items_out;
    let mut received = r.received.clone();
    match received.as_mut_slice() {
        [] if out > 0 => received.push(SourceTotal {
            source: "(unreported)".into(),
            total: out,
        }),
        [only] => only.total = only.total.max(out),
        _ => {}
    }
    StageReport {
        metrics: r.total_metrics(),
        received,
        ..StageReport::default()
    }
}

/// A request-guarantee app whose every item was bad input delivered nothing it
/// promised: that is a failure, not a finish. The message names the stages that counted
/// the bad input, whose logs say why.
fn nothing_delivered(app: &protocol::spec::AppSpec, summary: &Summary) -> Option<String> {
    let bad = summary.lost.get("bad_input").copied().unwrap_or(0);
    (app.service_type == ServiceType::RequestGuarantee
        && summary.items_in > 0
        && summary.items_out == 0
        && bad > 0)
        .then(|| {
            format!(
                "nothing was delivered: all {} items were bad input ({}); a request-guarantee app that delivers nothing has failed",
                summary.items_in,
                bad_input_counted_by(&summary.stages)
            )
        })
}

/// Which stages counted the bad input and why they dropped it (their first warning
/// for it), or where to look when no stage's counters say (a stage that failed before
/// its last heartbeat).
fn bad_input_counted_by(stages: &BTreeMap<String, StageMetrics>) -> String {
    let counted = crate::observe::summary::bad_input_by_stage(stages);
    if counted.is_empty() {
        "see the stages' logs in the run folder's logs/".into()
    } else {
        format!("counted by {}", counted.join("; "))
    }
}

/// The frames each `source.video` head will read, as its file announces them when the run
/// starts (the file may be cut or replaced while it is read), by task name.
pub fn announced_video_frames(app: &protocol::spec::AppSpec) -> BTreeMap<String, u64> {
    use protocol::functions::{builtin, params, Builtin};
    app.tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Head && builtin(&t.function) == Some(Builtin::SourceVideo))
        .filter_map(|t| {
            let source = params::parse::<params::SourceVideo>(&t.params).ok()?;
            let frames = crate::plan::source_probe::announced_frames(&source)?;
            Some((
                t.name.clone(),
                source.limit.map_or(frames, |l| l.min(frames)),
            ))
        })
        .collect()
}

/// The sources of a best-effort app that fell behind their own pace: heads that counted
/// items past the latency quota before sending them (`deadline`, which a head counts for
/// nothing else). The items they then skipped to catch up count as `shed`, as a full
/// pool's do, so the note gives only the late ones; the head's log says from when.
fn behind_sources(
    app: &protocol::spec::AppSpec,
    stages: &BTreeMap<String, StageMetrics>,
) -> Vec<String> {
    use protocol::messages::LossReason;
    head_notes(
        app,
        stages,
        |m| m.lost[LossReason::Deadline as usize],
        |task, late, prefix| {
            format!(
            "source '{task}' fell behind its own pace: {late} items were already past the latency quota when due to go, so it did not send them and went on with its newest (its fps or the request rate is more than it makes; logs/{prefix}0.log says from when)"
        )
        },
    )
}

/// A note per head whose replicas' `count` adds up to more than 0, made by
/// `note(task, total, "task#")`.
fn head_notes(
    app: &protocol::spec::AppSpec,
    stages: &BTreeMap<String, StageMetrics>,
    count: impl Fn(&StageMetrics) -> u64,
    note: impl Fn(&str, u64, &str) -> String,
) -> Vec<String> {
    let mut notes = Vec::new();
    for t in app.tasks.iter().filter(|t| t.kind == TaskKind::Head) {
        let prefix = format!("{}#", t.name);
        let total: u64 = stages
            .iter()
            .filter(|(label, _)| label.starts_with(&prefix))
            .map(|(_, m)| count(m))
            .sum();
        if total > 0 {
            notes.push(note(&t.name, total, &prefix));
        }
    }
    notes
}

/// The video sources whose stream sent nothing for their `read_timeout_s` and was taken
/// for ended (a camera or server that stopped sending): what they delivered is all that
/// came, and the user should know the stream did not end by itself.
fn stalled_streams(
    app: &protocol::spec::AppSpec,
    stages: &BTreeMap<String, StageMetrics>,
) -> Vec<String> {
    use protocol::functions::params;
    let mut notes = Vec::new();
    for t in app.tasks.iter().filter(|t| t.kind == TaskKind::Head) {
        let label = format!("{}#0", t.name);
        let Some(m) = stages.get(&label).filter(|m| m.read_stalls > 0) else {
            continue;
        };
        let Ok(source) = params::parse::<params::SourceVideo>(&t.params) else {
            continue;
        };
        notes.push(format!(
            "source '{}': {} sent no frame for {} s (read_timeout_s) after {} frames, so its stream was taken for ended (logs/{label}.log)",
            t.name,
            media::shown(&source.path),
            source.read_timeout_s,
            m.sent_or_lost()
        ));
    }
    notes
}

/// The live streams that were lost (ended, or silent for `read_timeout_s`) and opened
/// again: the frames sent while they were away were never read.
fn reconnected_streams(
    app: &protocol::spec::AppSpec,
    stages: &BTreeMap<String, StageMetrics>,
) -> Vec<String> {
    head_notes(
        app,
        stages,
        |m| m.reconnects,
        |task, times, prefix| {
            format!(
            "source '{task}' lost its stream {times} time{} and opened it again; what the stream sent meanwhile was not read (logs/{prefix}0.log says when)",
            if times == 1 { "" } else { "s" }
        )
        },
    )
}

/// The video sources that read fewer frames than their files announced at the start
/// (`announced`, see [`announced_video_frames`]): a truncated or damaged file, or one cut
/// while it was read.
fn short_videos(
    app: &protocol::spec::AppSpec,
    stages: &BTreeMap<String, StageMetrics>,
    announced: &BTreeMap<String, u64>,
) -> Vec<String> {
    use protocol::functions::params;
    let mut notes = Vec::new();
    for t in app.tasks.iter().filter(|t| t.kind == TaskKind::Head) {
        let Some(&announced) = announced.get(&t.name) else {
            continue;
        };
        let label = format!("{}#0", t.name);
        let Some(m) = stages.get(&label) else {
            continue;
        };
        // Every frame the source counted lost was read: shed or past its deadline (read,
        // not sent), or a last frame cut short (bad input).
        let read = m.sent_or_lost();
        if read < announced {
            let path = params::parse::<params::SourceVideo>(&t.params)
                .map(|s| s.path)
                .unwrap_or_default();
            notes.push(format!(
                "source '{}' read {read} of the {announced} frames {path} announced when the run started: the file is truncated, damaged or was cut while it was read (ffmpeg's complaint is in logs/{label}.log)",
                t.name
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_source_read_but_did_not_send_are_not_a_short_file_and_tell_it_fell_behind() {
        let app: protocol::spec::AppSpec = serde_json::from_value(serde_json::json!({
            "name": "v",
            "tasks": [
                {"name": "frames", "kind": "head", "function": "source.video", "params": {"path": "v.mp4"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["frames"]}
            ]
        }))
        .expect("app");
        let announced = BTreeMap::from([("frames".to_string(), 600)]);
        let head = |sent: u64, lost: [u64; 4]| {
            let metrics = StageMetrics {
                items_out: sent,
                lost,
                ..StageMetrics::default()
            };
            BTreeMap::from([("frames#0".to_string(), metrics)])
        };
        // 517 sent, 83 shed (pool full) or past their deadline, none missing: read whole.
        assert!(short_videos(&app, &head(517, [50, 0, 33, 0]), &announced).is_empty());
        // 517 sent and the last frame cut short: 82 frames were never there.
        let notes = short_videos(&app, &head(517, [0, 0, 0, 1]), &announced);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("read 518 of the 600 frames"), "{notes:?}");
        // 50 shed for a full pool: not behind; 33 past the quota at the source: behind.
        assert!(behind_sources(&app, &head(517, [50, 0, 0, 0])).is_empty());
        let behind = behind_sources(&app, &head(517, [50, 0, 33, 0]));
        assert_eq!(behind.len(), 1, "{behind:?}");
        assert!(
            behind[0].starts_with("source 'frames' fell behind its own pace: 33 items"),
            "{behind:?}"
        );
    }
}
