//! Branches of a request-guarantee app under kill -9. A fan-in (`table.merge`): one
//! branch is killed mid-stream and every item still reaches the tail once, merged whole.
//! A fan-out: a branch that loses every item (bad input) counts each loss once, though
//! the other branch's restarts make the head replay them.
//!
//! Two faults were found here (the run stalled for good, 5 of 5 and 2 of 4): the head
//! replays what is not acknowledged to both branches, so the branch that lived sends a
//! second part of items merged already, whose partner never comes again: it waited in
//! the merge holding that branch's shared memory until the branch could not write. And
//! with two merge replicas, producers picked a replica by counting their own sends, so
//! a restarted producer (counting from 0) sent an item's part to the other replica.

use serde_json::{json, Value};
use smartpipe_tests::kill::{
    assert_nothing_left, finish_with_every_row_once, kill_and_wait_for_replacement,
};
use smartpipe_tests::*;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// These tests load the CPU and kill processes by name: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// gen (64×48) → small (resized to 32×24) and fwd (untouched) → merged by item →
/// CSV. The merged item leads with `small`'s frame, so its row says 32×24; a row of
/// `fwd`'s part alone would say 64×48.
fn fan_in(name: &str, count: u64, merge_replicas: u32) -> Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": 200}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 32, "height": 24}, "replicas": 1},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"], "replicas": 1},
            {"name": "both", "kind": "cpu", "function": "table.merge", "inputs": ["small", "fwd"], "params": {"on": ["source", "seq"]}, "replicas": merge_replicas},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["both"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

fn rows_in(csv: &Path) -> usize {
    std::fs::read_to_string(csv).map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// Run the fan-in, kill `fwd#0` once the tail has 200, 400 and 600 rows, and check
/// what a user would: the run ends, each item is in the file once, in order, merged
/// whole. (Three kills: a restarted producer counting its sends from 0 happened to
/// pick the right merge replica half the time.)
fn kill_a_branch_of(merge_replicas: u32, tag: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch(&format!("merge-kill-{tag}"));
    let name = format!("mergekill{tag}{}", std::process::id());
    let count = 1000;
    let app = write_app(&dir, &fan_in(&name, count, merge_replicas));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    for rows in [200, 400, 600] {
        wait_for(
            &format!("{rows} rows (a merge that waits for ever stops the tail)"),
            Duration::from_secs(120),
            || rows_in(&csv) >= rows,
        );
        kill_and_wait_for_replacement(&name, "fwd#0");
    }
    // Before the fix the tail stopped about 10 rows after a kill and the run never ended.
    wait_for(
        "every row after the kill (a merge that waits for ever stops the tail)",
        Duration::from_secs(120),
        || rows_in(&csv) >= count as usize,
    );
    let pid = finish_with_every_row_once(sup, &csv, count);
    let text = std::fs::read_to_string(&csv).unwrap_or_default();
    let halves: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| !l.contains(",32,24,"))
        .collect();
    assert!(
        halves.is_empty(),
        "every row is a whole merge (small's 32×24 frame first); not: {:?}",
        &halves[..halves.len().min(5)]
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["fwd#0"], 3, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_nothing_left(&name, &summary, pid);
}

#[test]
fn a_merge_whose_branch_is_killed_gets_every_item_once() {
    kill_a_branch_of(1, "one");
}

#[test]
fn a_merge_of_two_replicas_gets_every_item_once_after_a_producer_restart() {
    kill_a_branch_of(2, "two");
}

/// gen → bad (a crop outside every frame: each item is lost as bad input) → lost.csv,
/// and gen → fwd → rows.csv.
fn fan_out_with_a_bad_branch(name: &str, count: u64) -> Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": 200}},
            {"name": "bad", "kind": "cpu", "function": "image.crop", "inputs": ["gen"], "params": {"x": 100, "y": 0, "width": 10, "height": 10}},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"], "replicas": 1},
            {"name": "lost", "kind": "tail", "function": "table.print", "inputs": ["bad"], "params": {"format": "csv", "path": "lost.csv"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fwd"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn a_bad_input_replayed_after_a_restart_is_counted_lost_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("replayed-loss");
    let name = format!("replayedloss{}", std::process::id());
    let count = 400;
    let app = write_app(&dir, &fan_out_with_a_bad_branch(&name, count));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    for rows in [100, 200] {
        wait_for(&format!("{rows} rows"), Duration::from_secs(60), || {
            rows_in(&csv) >= rows
        });
        kill_and_wait_for_replacement(&name, "fwd#0");
    }
    let pid = finish_with_every_row_once(sup, &csv, count);
    let summary = read_summary(&dir.join("run"));
    // Before, the items the head replayed after each restart were lost and counted
    // again: 416 of 400.
    assert_eq!(summary["lost"]["bad_input"], count, "{summary}");
    assert_eq!(summary["lost_total"], count, "{summary}");
    assert_eq!(summary["restarts"]["fwd#0"], 2, "{summary}");
    assert_nothing_left(&name, &summary, pid);
}
