//! Where a pipeline that falls behind for a moment loses items and counts latency: a
//! best-effort stage waits for a free output slot within the latency quota instead of
//! shedding at once, and a paced source stamps items with the time they were due, so the
//! time they waited behind a full pool is in their latency.

use serde_json::json;
use smartpipe_tests::*;

/// gen (paced) → resize (its own pool) → a stage stalling once → csv rows.
fn stalling_chain(
    name: &str,
    service: &str,
    count: u64,
    fps: f64,
    stall_ms: u64,
) -> serde_json::Value {
    json!({
        "name": name, "service_type": service, "strategy": "lazy",
        "quota": {"max_latency_ms": 10000},
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": fps}},
            {"name": "resize", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 32, "height": 24}},
            {"name": "slow", "kind": "cpu", "function": "test.fault", "inputs": ["resize"], "params": {"mode": "stall", "after": 5, "stall_ms": stall_ms}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["slow"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn a_best_effort_stage_waits_for_a_slot_within_the_latency_quota_instead_of_shedding() {
    let dir = scratch("shed-wait");
    // 40 items/s against a stage stalled for 1 s: ~40 items pile up behind 'resize',
    // whose pool has 8 slots. Shedding at once would drop most of them; its wait is
    // bounded by the 10 s quota, so all get through.
    let count = 120;
    let app = write_app(
        &dir,
        &stalling_chain("shedwait", "best-effort", count, 40.0, 1000),
    );
    let (_, summary) = run_ok_with(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["items_out"], count, "{summary}");
    let waited = summary["stages"]["resize#0"]["waiting_for_slot_ns"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        waited > 100_000_000,
        "'resize' waited for its consumer instead of shedding: {summary}"
    );
    let seqs = csv_seqs(&dir.join("rows.csv"));
    assert_eq!(seqs, (0..count).collect::<Vec<_>>());
}

#[test]
fn items_held_back_at_a_paced_source_count_the_wait_in_their_latency() {
    let dir = scratch("arrival-stamp");
    // No latency quota: the source has its default 8 slots, and a 2 s stall after item 5
    // holds it back while 80 more items fall due. Every one of them waited for the stage,
    // so the median latency is most of a second; stamped when a slot let them out
    // instead, only the ~8 in the pool would show the stall.
    let count = 90;
    let mut app = stalling_chain("arrival", "request-guarantee", count, 40.0, 2000);
    app["quota"] = json!({});
    let app = write_app(&dir, &app);
    let (_, summary) = run_ok_with(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    assert_eq!(summary["items_out"], count, "{summary}");
    let p50 = summary["latency_ms"]["p50"].as_f64().expect("p50");
    assert!(p50 >= 500.0, "median latency {p50} ms: {summary}");
    let max = summary["latency_ms"]["max"].as_f64().expect("max");
    assert!(
        max >= 1800.0,
        "the first item behind the stall waited ~2 s: {summary}"
    );
}

#[test]
fn a_best_effort_app_drops_items_past_its_latency_quota_instead_of_delivering_them_late() {
    let dir = scratch("deadline");
    // 40 items/s, quota 300 ms, a 1.5 s stall after item 5: the items that waited through
    // the stall are older than the quota when 'slow' (or the tail) gets them. They are
    // dropped and counted as past their deadline; every reply delivered is within the quota,
    // and every item is either delivered or counted.
    let count = 120;
    let mut app = stalling_chain("deadline", "best-effort", count, 40.0, 1500);
    app["quota"] = json!({"max_latency_ms": 300});
    let app = write_app(&dir, &app);
    let (_, summary) = run_ok_with(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    let deadline = summary["lost"]["deadline"].as_u64().unwrap_or(0);
    assert!(deadline > 0, "items past the quota dropped: {summary}");
    let out = summary["items_out"].as_u64().expect("items_out");
    let lost = summary["lost_total"].as_u64().expect("lost_total");
    assert_eq!(
        out + lost,
        count,
        "every item delivered or counted: {summary}"
    );
    assert!(out > 40, "the stream goes on after the stall: {summary}");
    let max = summary["latency_ms"]["max"].as_f64().expect("max");
    assert!(
        max <= 300.0 + 50.0,
        "late replies delivered: max {max} ms: {summary}"
    );
    assert_eq!(csv_seqs(&dir.join("rows.csv")).len() as u64, out);
}

#[test]
fn a_best_effort_source_behind_its_pace_goes_on_with_its_newest_item_and_each_tail_counts_every_item(
) {
    let dir = scratch("behind-pace");
    // 1280×720 frames asked for at 2000/s: far more than the source makes. Before, it
    // sent every item however late: once they were older than the 2 s quota every stage
    // dropped them (a branch each, so the app counted more losses than items) and the
    // last items never arrived. Now an item past the quota is counted at the source, the
    // source skips ahead to its newest due item, and that one reaches both tails.
    let count = 4000u64;
    let app = write_app(
        &dir,
        &json!({
            "name": "behindpace", "service_type": "best-effort", "strategy": "lazy",
            "quota": {"max_latency_ms": 2000},
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 1280, "height": 720, "count": count, "fps": 2000}},
                {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 320, "height": 180}},
                {"name": "same", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
                {"name": "a", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "a.csv"}},
                {"name": "b", "kind": "tail", "function": "table.print", "inputs": ["same"], "params": {"format": "csv", "path": "b.csv"}}
            ]
        }),
    );
    let (out, summary) = run_ok(&app, &dir.join("run"));
    for (tail, csv) in summary["tails"]
        .as_array()
        .expect("tails")
        .iter()
        .zip(["a.csv", "b.csv"])
    {
        let seqs = csv_seqs(&dir.join(csv));
        assert_eq!(
            seqs.last(),
            Some(&(count - 1)),
            "{csv}: the newest item arrives: {summary}"
        );
        assert_eq!(tail["items"], seqs.len() as u64, "{tail}");
        let lost: u64 = tail["lost"]
            .as_object()
            .expect("lost by reason")
            .values()
            .filter_map(|n| n.as_u64())
            .sum();
        assert_eq!(
            seqs.len() as u64 + lost,
            count,
            "every item delivered or counted: {tail}"
        );
    }
    let at_source = &summary["stages"]["gen#0"]["lost"];
    assert!(
        at_source
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n.as_u64() > Some(0))),
        "the source counts what it skips: {summary}"
    );
    let log = std::fs::read_to_string(dir.join("run/logs/gen#0.log")).expect("gen log");
    assert!(log.contains("the source is behind its pace"), "{log}");
    let text = printed(&out);
    assert!(text.contains("tail 'a':"), "{text}");
    assert!(
        text.contains("behind:     source 'gen' fell behind its own pace"),
        "{text}"
    );
}
