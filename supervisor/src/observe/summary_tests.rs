//! Unit tests of the run summary: its figures, per-tail losses and rendering.

use super::*;

/// The one tail "out" of an app, fed by every stage, with one replica's report.
fn only_tail(report: &StageReport) -> TailReports<'_> {
    TailReports {
        task: "out".into(),
        reports: vec![report],
        off_path: BTreeSet::new(),
    }
}

#[test]
fn percentiles_and_jitter_of_known_samples() {
    let samples: Vec<f32> = (1..=100).map(|x| x as f32).collect();
    let s = LatencyStats::from_samples(&samples);
    assert_eq!(s.p50, 50.0);
    assert_eq!(s.p99, 99.0);
    assert_eq!(s.max, 100.0);
    assert!((s.mean - 50.5).abs() < 1e-9);
    assert!((s.jitter - 28.866).abs() < 1e-3, "{}", s.jitter);
}

#[test]
fn quota_checks_mark_met_and_missed() {
    let mut s = Summary {
        throughput_per_min: 600.0,
        loss_pct: 2.0,
        latency_ms: LatencyStats {
            p99: 80.0,
            jitter: 5.0,
            ..LatencyStats::default()
        },
        ..Summary::default()
    };
    s.check_quota(&protocol::spec::Quota {
        throughput_per_min: Some(500.0),
        max_latency_ms: Some(50.0),
        max_jitter_ms: None,
        max_loss_pct: Some(1.0),
    });
    let met: Vec<(&str, bool)> = s.qos.iter().map(|q| (q.metric.as_str(), q.met)).collect();
    assert_eq!(
        met,
        vec![
            ("throughput_per_min", true),
            ("latency_p99_ms", false),
            ("loss_pct", false)
        ]
    );
    assert!(
        s.render().contains("latency_p99_ms 80.00 (≤ 50: MISSED)"),
        "{}",
        s.render()
    );
}

#[test]
fn items_in_flight_when_the_app_ended_are_shown_and_never_fewer_in_than_out() {
    let delivered = |n: u64| StageReport {
        received: vec![protocol::messages::SourceTotal {
            source: "gen".into(),
            total: n,
        }],
        ..StageReport::default()
    };
    let report = delivered(7);
    let tails = [only_tail(&report)];
    // The head announced 15 (its heartbeat), 7 arrived, nothing was counted lost.
    let announced = BTreeMap::from([("gen".to_string(), 15)]);
    let s = Summary::build("a", 1.0, &announced, &tails, BTreeMap::new());
    assert_eq!((s.items_in, s.items_out, s.unfinished), (15, 7, 8));
    assert!(
        s.render().contains("unfinished: 8 (in flight"),
        "{}",
        s.render()
    );
    // A head that failed before its heartbeat said anything: in is at least out.
    let s = Summary::build("a", 1.0, &BTreeMap::new(), &tails, BTreeMap::new());
    assert_eq!((s.items_in, s.items_out, s.unfinished), (7, 7, 0));
    assert!(!s.render().contains("unfinished"));
}

#[test]
fn steady_latency_leaves_out_the_first_seconds() {
    const S: u64 = 1_000_000_000;
    // Items created at 0, 1, 2, 3 s (arrival = creation + latency): the two slow
    // first ones are out of the steady latency, not out of the latency.
    let created = [10 * S, 11 * S, 12 * S, 13 * S];
    let lat = [500.0f32, 400.0, 20.0, 30.0];
    let report = StageReport {
        latencies_ms: lat.to_vec(),
        arrivals_ns: created
            .iter()
            .zip(lat)
            .map(|(c, l)| c + (f64::from(l) * 1e6) as u64)
            .collect(),
        first_created_ns: created[0],
        last_arrival_ns: created[3] + 30_000_000,
        ..StageReport::default()
    };
    let tails = [only_tail(&report)];
    let s = Summary::build("a", 4.0, &BTreeMap::new(), &tails, BTreeMap::new());
    assert_eq!(s.latency_ms.count, 4);
    assert_eq!(s.latency_ms.max, 500.0);
    assert_eq!(s.steady_latency_ms.count, 2);
    assert_eq!(s.steady_latency_ms.max, 30.0);
    assert!(s
        .render()
        .contains("steady:     p50 20.00 ms, p99 30.00 ms over the 2 deliveries"));
}

#[test]
fn empty_samples_give_zeroes() {
    assert_eq!(LatencyStats::from_samples(&[]), LatencyStats::default());
}

#[test]
fn latency_quotas_of_an_app_that_delivered_nothing_are_missed_not_met() {
    let mut s = Summary {
        items_in: 600,
        ..Summary::default()
    };
    s.check_quota(&protocol::spec::Quota {
        throughput_per_min: None,
        max_latency_ms: Some(30.0),
        max_jitter_ms: Some(5.0),
        max_loss_pct: None,
    });
    assert!(s.qos.iter().all(|q| !q.met), "{:?}", s.qos);
    let text = s.render();
    assert!(
        text.contains("latency_p99_ms — (≤ 30: MISSED: no item of the 600 in was delivered)"),
        "{text}"
    );
    assert!(
        text.contains("latency:    — (no item was delivered)"),
        "{text}"
    );
    // Nothing came in: nothing to miss.
    let mut idle = Summary::default();
    idle.check_quota(&protocol::spec::Quota {
        throughput_per_min: None,
        max_latency_ms: Some(30.0),
        max_jitter_ms: None,
        max_loss_pct: None,
    });
    assert!(idle.qos[0].met && idle.qos[0].note.is_empty());
}

/// gen → a → outa and gen → b → outb, 100 items: the head shed 10, branch a dropped 20
/// past their deadline, branch b lost 5 as bad input; outa got 70, outb 85.
fn two_branches(b_died_with: u64) -> Summary {
    let tail = |n: u64| StageReport {
        received: vec![protocol::messages::SourceTotal {
            source: "gen".into(),
            total: n,
        }],
        announced: vec![protocol::messages::SourceTotal {
            source: "gen".into(),
            total: 100,
        }],
        ..StageReport::default()
    };
    let (outa, outb) = (tail(70), tail(85 - b_died_with));
    let lost = |reason: LossReason, n: u64| {
        let mut m = StageMetrics::default();
        m.lose(reason, n);
        m
    };
    let stages = BTreeMap::from([
        ("gen#0".to_string(), lost(LossReason::Shed, 10)),
        ("a#0".to_string(), lost(LossReason::Deadline, 20)),
        ("b#0".to_string(), lost(LossReason::BadInput, 5)),
        ("outa#0".to_string(), StageMetrics::default()),
        ("outb#0".to_string(), StageMetrics::default()),
    ]);
    let off = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    let tails = [
        TailReports {
            task: "outa".into(),
            reports: vec![&outa],
            off_path: off(&["b", "outb"]),
        },
        TailReports {
            task: "outb".into(),
            reports: vec![&outb],
            off_path: off(&["a", "outa"]),
        },
    ];
    let announced = BTreeMap::from([("gen".to_string(), 100)]);
    Summary::build("a", 1.0, &announced, &tails, stages)
}

#[test]
fn each_tail_is_told_the_losses_on_its_own_way_and_another_branch_hides_nothing() {
    let s = two_branches(0);
    let reasons = |t: &TailSummary| t.lost.clone().into_iter().collect::<Vec<_>>();
    assert_eq!(
        reasons(&s.tails[0]),
        vec![("deadline".to_string(), 20), ("shed".to_string(), 10)]
    );
    assert_eq!(
        reasons(&s.tails[1]),
        vec![("bad_input".to_string(), 5), ("shed".to_string(), 10)]
    );
    for t in &s.tails {
        assert_eq!(t.items + t.lost.values().sum::<u64>(), 100, "{t:?}");
    }
    // The app: every loss counted (35), by reason; 85 out; nothing unfinished.
    assert_eq!(
        (s.items_in, s.items_out, s.lost_total, s.unfinished),
        (100, 85, 35, 0)
    );
    let text = s.render();
    assert!(
        text.contains("tail 'outa': 70 items, 30 missing (deadline 20, shed 10)"),
        "{text}"
    );
    assert!(
        text.contains("tail 'outb': 85 items, 15 missing (bad_input 5, shed 10)"),
        "{text}"
    );
    assert!(text.contains("counted on each branch"), "{text}");

    // Three of outb's items were inside a process that died: a crash on its way only.
    // Before, branch a's 20 losses covered them: no crash was counted at all.
    let s = two_branches(3);
    assert_eq!(s.tails[1].lost["crash"], 3);
    assert!(!s.tails[0].lost.contains_key("crash"));
    assert_eq!(s.lost["crash"], 3);
}

#[test]
fn a_sampled_tail_counts_every_delivery_and_keeps_the_largest_latency() {
    // A long run: 4 samples standing for 1,000,000 deliveries, whose largest was not
    // sampled.
    let report = StageReport {
        latencies_ms: vec![10.0, 20.0, 30.0, 40.0],
        arrivals_ns: vec![1, 2, 3, 4],
        latencies_seen: 1_000_000,
        latency_max_ms: 900.0,
        ..StageReport::default()
    };
    let tails = [only_tail(&report)];
    let s = Summary::build("a", 1.0, &BTreeMap::new(), &tails, BTreeMap::new());
    for stats in [&s.latency_ms, &s.tails[0].latency_ms] {
        assert_eq!(stats.count, 1_000_000);
        assert_eq!(stats.max, 900.0);
        assert_eq!(stats.p50, 20.0, "percentiles from the sample");
    }
}
