//! `report.html`: one self-contained page per run (inline SVG drawn with plotters, no
//! network needed): the app and its plan, QoS beside the quota, throughput over time,
//! the latency distribution with the quota line, per-stage utilisation and queue depth
//! over time, and losses and events on the timeline.

use crate::observe::summary::Summary;
use crate::observe::timeline::{self, Timeline};
use crate::plan::Plan;
use plotters::prelude::*;
use protocol::spec::AppSpec;
use std::fmt::Write as _;

/// Everything the page shows.
pub struct ReportData<'a> {
    pub app: &'a AppSpec,
    pub plan: &'a Plan,
    pub summary: &'a Summary,
    pub timeline: &'a Timeline,
    /// End-to-end latency of every reply (ms) and when it arrived (s since start).
    pub latencies_ms: &'a [f32],
    /// Arrival times (s after the start), each with the deliveries it stands for (1, or
    /// more where a long run's tail was sampled).
    pub arrivals_s: &'a [(f64, f64)],
}

const W: u32 = 760;
const H: u32 = 280;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

type Series = (String, Vec<(f64, f64)>);

/// Largest axis value a chart is drawn with: plotters' key-point search does not end
/// on ranges near `f64::MAX` (issue 17, item 5); such a chart is skipped instead.
const MAX_AXIS: f64 = 1e12;

/// The note that replaces a chart whose axis would reach `value`, logged as a warning.
fn skipped(title: &str, value: f64) -> Option<String> {
    if value.is_finite() && value <= MAX_AXIS {
        return None;
    }
    tracing::warn!("report.html: chart '{title}' skipped: an axis would reach {value:e}");
    Some(format!(
        "<p>(chart '{}' skipped: an axis would reach {value:e}, more than the {MAX_AXIS:e} a chart can show)</p>",
        esc(title)
    ))
}

/// A line chart of several series; `hline` draws a dashed horizontal quota line.
fn line_chart(title: &str, y_desc: &str, series: &[Series], hline: Option<f64>) -> String {
    let mut svg = String::new();
    let x_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .chain(hline)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    if let Some(note) = skipped(title, x_max).or_else(|| skipped(title, y_max)) {
        return note;
    }
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
            chart
                .configure_mesh()
                .x_desc("seconds since start")
                .y_desc(y_desc)
                .draw()?;
            for (k, (name, points)) in series.iter().enumerate() {
                let colour = Palette99::pick(k).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        colour.stroke_width(2),
                    ))?
                    .label(name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
            }
            if let Some(q) = hline {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(0.0, q), (x_max, q)],
                        6,
                        4,
                        RED.stroke_width(1),
                    ))?
                    .label("quota")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
            }
            if series.len() > 1 || hline.is_some() {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()?;
            }
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            drop(root);
            return format!(
                "<p>(chart '{}' could not be drawn: {})</p>",
                esc(title),
                esc(&e.to_string())
            );
        }
    }
    svg
}

/// A histogram of latencies with the quota as a vertical line.
fn latency_histogram(latencies: &[f32], quota: Option<f64>) -> String {
    if latencies.is_empty() {
        return "<p>No reply arrived, so there is no latency to show.</p>".into();
    }
    let max = latencies.iter().copied().fold(0.0f32, f32::max) as f64;
    let x_max = quota.map_or(max, |q| q.max(max)).max(1e-3) * 1.05;
    if let Some(note) = skipped("End-to-end latency distribution", x_max) {
        return note;
    }
    let bins = 40usize;
    let width = x_max / bins as f64;
    let mut counts = vec![0u32; bins];
    for &l in latencies {
        let k = ((l as f64 / width) as usize).min(bins - 1);
        counts[k] += 1;
    }
    let y_max = counts.iter().copied().max().unwrap_or(1) as f64 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("End-to-end latency distribution", ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
            chart
                .configure_mesh()
                .x_desc("latency (ms)")
                .y_desc("replies")
                .draw()?;
            chart.draw_series(counts.iter().enumerate().map(|(k, &c)| {
                let x0 = k as f64 * width;
                Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.9, c as f64)],
                    BLUE.mix(0.6).filled(),
                )
            }))?;
            if let Some(q) = quota {
                chart
                    .draw_series(LineSeries::new(
                        vec![(q, 0.0), (q, y_max)],
                        RED.stroke_width(2),
                    ))?
                    .label(format!("max_latency_ms quota ({q})"))
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
                chart
                    .configure_series_labels()
                    .border_style(BLACK)
                    .background_style(WHITE)
                    .draw()?;
            }
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            drop(root);
            return format!(
                "<p>(histogram could not be drawn: {})</p>",
                esc(&e.to_string())
            );
        }
    }
    svg
}

/// Replies per second over time, from the arrival times and what each stands for.
fn throughput_series(arrivals_s: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let end = arrivals_s.iter().map(|a| a.0).fold(0.0, f64::max);
    if end <= 0.0 {
        return vec![];
    }
    // Bins of at least a second: finer ones only show the frame cadence.
    let step = (end / 40.0).max(1.0);
    let n = (end / step).ceil() as usize + 1;
    let mut counts = vec![0f64; n];
    for &(a, weight) in arrivals_s {
        counts[((a / step) as usize).min(n - 1)] += weight;
    }
    counts
        .iter()
        .enumerate()
        .map(|(k, &c)| ((k as f64 + 0.5) * step, c / step))
        .collect()
}

fn tl_every(tl: &Timeline) -> f64 {
    match tl.samples.as_slice() {
        [a, b, ..] => (b.t - a.t).max(1e-3),
        _ => 1.0,
    }
}

/// Render the page.
pub fn render(d: &ReportData<'_>) -> String {
    let s = d.summary;
    let tl = d.timeline;
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>SmartPipe run: {app}</title><style>\
         body{{font-family:sans-serif;margin:24px;max-width:820px;color:#222}}\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         .met{{color:#070}}.missed{{color:#b00;font-weight:bold}}pre{{background:#f6f6f6;padding:8px;overflow:auto}}\
         </style></head><body><h1>SmartPipe run: {app}</h1>\
         <p>Outcome: <b>{outcome}</b> in {wall:.2} s. Items: {inp} in, {out} out, {lost} lost. Run dir: <code>{dir}</code>.</p>",
        app = esc(&s.app),
        outcome = esc(&s.outcome),
        wall = s.wall_s,
        inp = s.items_in,
        out = s.items_out,
        lost = s.lost_total,
        dir = esc(&s.run_dir),
    );
    html += &notes(s);
    html += &qos_table(s);

    html += "<h2>Throughput over time</h2>";
    html += &line_chart(
        "Replies per second",
        "replies/s",
        &[("replies/s".into(), throughput_series(d.arrivals_s))],
        d.app.quota.throughput_per_min.map(|q| q / 60.0),
    );
    html += "<h2>Latency</h2>";
    html += &latency_histogram(d.latencies_ms, d.app.quota.max_latency_ms);

    html += &stage_charts(tl);

    html += &losses_and_events(s, tl);

    html += &plan_table(d.plan);
    html += "<h2>App</h2><pre>";
    html += &esc(&serde_json::to_string_pretty(&without_secrets(d.app)).unwrap_or_default());
    html += "</pre></body></html>\n";
    html
}

/// What the console summary says beyond the figures: each tail's items and what it misses
/// (several tails), sources that fell behind or read short, outputs restarted or not
/// written. Nothing when there is nothing to say.
fn notes(s: &Summary) -> String {
    let mut lines: Vec<String> = Vec::new();
    if s.tails.len() > 1 {
        for t in &s.tails {
            lines.push(format!(
                "tail '{}': {} items, {} missing{}",
                t.task,
                t.items,
                t.missing,
                crate::observe::summary::by_reason(&t.lost)
            ));
        }
    }
    let labelled = [
        ("behind", s.behind_sources.iter().collect::<Vec<_>>()),
        ("reconnected", s.reconnected_sources.iter().collect()),
        ("short", s.short_sources.iter().collect()),
        (
            "restarted",
            s.restarted_outputs.iter().map(|o| &o.note).collect(),
        ),
        (
            "not written",
            s.unfinished_outputs.iter().map(|o| &o.note).collect(),
        ),
    ];
    for (label, notes) in labelled {
        lines.extend(notes.into_iter().map(|n| format!("{label}: {n}")));
    }
    if lines.is_empty() {
        return String::new();
    }
    let items: String = lines
        .iter()
        .map(|l| format!("<li>{}</li>", esc(l)))
        .collect();
    format!("<ul>{items}</ul>")
}

/// Each QoS metric achieved against its quota, if the app set one.
fn qos_table(s: &Summary) -> String {
    let mut html = String::new();
    html += "<h2>Quality of service</h2><table><tr><th>metric</th><th>achieved</th><th>quota</th><th></th></tr>";
    let l = &s.latency_ms;
    let quota_of = |m: &str| s.qos.iter().find(|q| q.metric == m);
    for (metric, value) in [
        ("throughput_per_min", s.throughput_per_min),
        ("latency_p50_ms", l.p50),
        ("latency_p95_ms", l.p95),
        ("latency_p99_ms", l.p99),
        ("latency_max_ms", l.max),
        ("jitter_ms", l.jitter),
        ("loss_pct", s.loss_pct),
    ] {
        let (quota, verdict) = match quota_of(metric) {
            Some(q) => (
                format!("{} {}", q.bound, q.quota),
                if q.met {
                    "<span class=met>met</span>"
                } else {
                    "<span class=missed>missed</span>"
                },
            ),
            None => ("—".to_string(), ""),
        };
        let _ = write!(
            html,
            "<tr><td>{metric}</td><td>{value:.2}</td><td>{quota}</td><td>{verdict}</td></tr>"
        );
    }
    html += "</table>";
    html
}

/// Utilisation and items inside of every stage over the run.
fn stage_charts(tl: &Timeline) -> String {
    let mut html = String::new();
    let mut util: Vec<Series> = Vec::new();
    let mut queue: Vec<Series> = Vec::new();
    for (k, label) in tl.stage_labels.iter().enumerate() {
        let mut u = Vec::new();
        let mut q = Vec::new();
        // Windows of about a second: heartbeats come every 100 ms, so shorter ones alias.
        let span = ((1.0 / tl_every(tl)).round() as usize).max(1) + 1;
        for w in tl.samples.windows(span.min(tl.samples.len().max(2))) {
            let (a, b) = (&w[0], &w[w.len() - 1]);
            let (Some(pa), Some(pb)) = (a.stages.get(k), b.stages.get(k)) else {
                continue;
            };
            let dt = (b.t - a.t).max(1e-6);
            u.push((
                b.t,
                (pb.busy_ns.saturating_sub(pa.busy_ns)) as f64 / 1e9 / dt * 100.0,
            ));
            q.push((
                b.t,
                pb.items_in.saturating_sub(pb.items_out + pb.lost) as f64,
            ));
        }
        util.push((label.clone(), u));
        queue.push((label.clone(), q));
    }
    html += "<h2>Stages</h2>";
    html += &line_chart(
        "Utilisation per stage (busy time)",
        "% of one core",
        &util,
        None,
    );
    html += &line_chart(
        "Items inside each stage (in − out − lost)",
        "items",
        &queue,
        None,
    );
    html
}

/// Items lost over time, the timeline's events and losses by reason.
fn losses_and_events(s: &Summary, tl: &Timeline) -> String {
    let mut html = String::new();
    let lost: Vec<(f64, f64)> = tl
        .samples
        .iter()
        .map(|smp| (smp.t, smp.stages.iter().map(|p| p.lost).sum::<u64>() as f64))
        .collect();
    html += "<h2>Losses and events</h2>";
    html += &line_chart("Items lost so far", "items", &[("lost".into(), lost)], None);
    if tl.events.is_empty() {
        html += "<p>No restarts, failures or signals during the run.</p>";
    } else {
        html += "<table><tr><th>t (s)</th><th>event</th></tr>";
        for (k, e) in tl.events.iter().enumerate() {
            if k == timeline::MAX_EVENTS / 2 && tl.events_left_out > 0 {
                let _ = write!(
                    html,
                    "<tr><td></td><td>… {} events left out …</td></tr>",
                    tl.events_left_out
                );
            }
            let _ = write!(
                html,
                "<tr><td>{:.2}</td><td>{}</td></tr>",
                e.t,
                esc(&e.what)
            );
        }
        html += "</table>";
    }
    let lost_by: Vec<String> = s.lost.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    let _ = write!(html, "<p>Lost by reason: {}.</p>", esc(&lost_by.join(", ")));
    let bad_input = crate::observe::summary::bad_input_by_stage(&s.stages);
    if !bad_input.is_empty() {
        html += "<p>Bad input, per stage (the first item's reason):</p><ul>";
        for line in &bad_input {
            let _ = write!(html, "<li>{}</li>", esc(line));
        }
        html += "</ul>";
    }
    html
}

/// The plan the app ran with: one row per task.
fn plan_table(plan: &Plan) -> String {
    let mut html = String::new();
    html += "<h2>Plan</h2><table><tr><th>task</th><th>kind</th><th>function</th><th>replicas</th><th>batch</th><th>max wait ms</th><th>threads</th><th>pool</th></tr>";
    for st in &plan.stages {
        let pool = st
            .pool
            .as_ref()
            .map(|p| format!("{} × {} B", p.slots, p.slot_size))
            .unwrap_or_else(|| "—".into());
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&st.task),
            st.kind,
            esc(&st.function),
            st.replicas,
            st.batch_size,
            st.batch_max_wait_ms,
            st.threads,
            pool
        );
    }
    html += "</table>";
    html
}

/// The app as the report shows it: the secrets of its URLs masked (a camera's password in
/// `source.video {path}`), as everywhere SmartPipe names a source.
fn without_secrets(app: &AppSpec) -> AppSpec {
    let mut app = app.clone();
    for task in &mut app.tasks {
        let Some(def) = protocol::functions::find(&task.function) else {
            continue;
        };
        for p in def.params.iter().filter(|p| p.ty.is_path()) {
            if let Some(serde_json::Value::String(value)) = task.params.get_mut(p.name) {
                *value = media::shown(value);
            }
        }
    }
    app
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_series_counts_arrivals_per_second() {
        let arrivals: Vec<(f64, f64)> = (0..1000).map(|k| (k as f64 * 0.04 + 0.001, 1.0)).collect(); // 25/s for 40 s
        let series = throughput_series(&arrivals);
        let middle: Vec<f64> = series[2..35].iter().map(|p| p.1).collect();
        assert!(
            middle.iter().all(|&r| (r - 25.0).abs() <= 1.0),
            "{middle:?}"
        );
        // A sampled run: one arrival in five kept, each standing for five.
        let sampled: Vec<(f64, f64)> = arrivals.iter().step_by(5).map(|&(t, _)| (t, 5.0)).collect();
        let series = throughput_series(&sampled);
        assert!(
            series[2..35].iter().all(|p| (p.1 - 25.0).abs() <= 5.0),
            "{series:?}"
        );
    }

    #[test]
    fn the_page_names_each_tails_losses_and_a_source_behind_its_pace() {
        use crate::observe::summary::TailSummary;
        let tail = |task: &str, items, missing, lost: &[(&str, u64)]| TailSummary {
            task: task.into(),
            items,
            missing,
            lost: lost.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..TailSummary::default()
        };
        let s = Summary {
            tails: vec![
                tail("a", 70, 30, &[("deadline", 20), ("shed", 10)]),
                tail("b", 100, 0, &[]),
            ],
            behind_sources: vec!["source 'gen' fell behind its own pace: 20 items".into()],
            ..Summary::default()
        };
        let html = notes(&s);
        assert!(
            html.contains("<li>tail 'a': 70 items, 30 missing (deadline 20, shed 10)</li>"),
            "{html}"
        );
        assert!(
            html.contains("<li>tail 'b': 100 items, 0 missing</li>"),
            "{html}"
        );
        assert!(
            html.contains("<li>behind: source 'gen' fell behind its own pace: 20 items</li>"),
            "{html}"
        );
        assert_eq!(
            notes(&Summary::default()),
            "",
            "nothing to say, nothing said"
        );
    }

    #[test]
    fn charts_are_svg_with_their_titles() {
        let svg = line_chart(
            "Replies per second",
            "r/s",
            &[("x".into(), vec![(0.0, 1.0), (1.0, 2.0)])],
            Some(1.5),
        );
        assert!(
            svg.starts_with("<svg") && svg.contains("Replies per second") && svg.contains("quota")
        );
        let hist = latency_histogram(&[1.0, 2.0, 3.0], Some(2.5));
        assert!(hist.contains("<rect") && hist.contains("max_latency_ms quota (2.5)"));
        assert!(latency_histogram(&[], None).contains("No reply"));
    }

    /// Runs `draw` on its own thread; fails if it has not returned within 20 s (the
    /// renderer used to spin for ever on these values).
    fn returns(draw: impl FnOnce() -> String + Send + 'static) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(draw());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the chart was not drawn or skipped within 20 s")
    }

    #[test]
    fn charts_with_extreme_values_are_skipped_with_a_note_not_drawn_for_ever() {
        let hist = returns(|| latency_histogram(&[1.0, 2.0], Some(f64::MAX)));
        assert!(hist.contains("skipped") && !hist.contains("<svg"), "{hist}");
        let line = returns(|| {
            line_chart(
                "Replies per second",
                "r/s",
                &[("x".into(), vec![(0.0, 1.0)])],
                Some(f64::MAX / 60.0),
            )
        });
        assert!(line.contains("'Replies per second' skipped"), "{line}");
        let huge_points =
            returns(|| line_chart("t", "y", &[("x".into(), vec![(f64::MAX, 1e300)])], None));
        assert!(huge_points.contains("skipped"), "{huge_points}");
        // An ordinary chart is still drawn.
        assert!(returns(|| latency_histogram(&[1.0], Some(500.0))).starts_with("<svg"));
    }
}
