//! Apps of hundreds of processes: a 250-process chain runs to the end with every item
//! once and in order, and a kill -9 of a stage whose shared-memory holder id is far
//! past the 63 a fixed-size holder record once allowed loses and leaks nothing.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::sync::Mutex;
use std::time::Duration;

/// These tests start hundreds of processes: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A source, `forwards` `core.forward` stages in a chain (one replica each), a CSV tail.
fn chain(name: &str, forwards: usize, count: u64, fps: u64) -> Value {
    let mut tasks = vec![
        json!({"name": "gen", "kind": "head", "function": "image.gen",
        "params": {"width": 32, "height": 24, "count": count, "fps": fps}}),
    ];
    let mut prev = "gen".to_string();
    for i in 0..forwards {
        let name = format!("f{i}");
        tasks.push(
            json!({"name": name, "kind": "cpu", "function": "core.forward",
            "inputs": [prev], "replicas": 1}),
        );
        prev = name;
    }
    tasks.push(
        json!({"name": "rows", "kind": "tail", "function": "table.print",
        "inputs": [prev], "params": {"format": "csv", "path": "rows.csv"}}),
    );
    json!({"name": name, "service_type": "request-guarantee", "tasks": tasks})
}

/// The `seq` of every row the tail wrote, in file order.
fn seqs(dir: &std::path::Path) -> Vec<u64> {
    csv_seqs(&dir.join("rows.csv"))
}

#[test]
fn a_chain_of_250_processes_delivers_every_item_once_and_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("scale-250");
    let name = format!("chain{}", std::process::id());
    let app = write_app(&dir, &chain(&name, 248, 20, 0));
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_in"], 20, "{summary}");
    assert_eq!(summary["items_out"], 20, "{summary}");
    assert_eq!(seqs(&dir), (0..20).collect::<Vec<u64>>());
    assert_eq!(summary["slots_held_at_end"], 0, "{summary}");
    let plan: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run/plan.json")).expect("plan.json"),
    )
    .expect("plan is JSON");
    let processes: u64 = plan["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| s["replicas"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(processes, 250);
    assert!(
        pids_with_cmdline(&format!(" {name}/")).is_empty(),
        "no process of the app is left"
    );
}

#[test]
fn kill_9_of_a_stage_with_a_high_holder_id_loses_and_leaks_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("scale-kill");
    let name = format!("chainkill{}", std::process::id());
    // 100 processes: f90 has holder id 92, past the old limit of 63.
    let app = write_app(&dir, &chain(&name, 98, 40, 20));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let rows = dir.join("rows.csv");
    wait_for("the first rows", Duration::from_secs(60), || {
        std::fs::read_to_string(&rows).is_ok_and(|t| t.lines().count() > 5)
    });
    let label = format!(" {name}/f90#0");
    let old = *pids_with_cmdline(&label).first().expect("f90 runs");
    // SAFETY: killing a process of this test's app.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("f90 to be restarted", Duration::from_secs(20), || {
        pids_with_cmdline(&label).first().is_some_and(|&p| p != old)
    });
    let (status, stderr) = finish(sup);
    assert!(status.success(), "supervisor failed: {stderr}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(seqs(&dir), (0..40).collect::<Vec<u64>>(), "{summary}");
    assert_eq!(summary["slots_held_at_end"], 0, "{summary}");
    assert!(
        summary["restarts"].to_string().contains("f90#0"),
        "the restart is in the summary: {summary}"
    );
}

#[test]
fn mass_kill_9_of_a_quarter_of_a_chain_three_times_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("scale-mass-kill");
    let name = format!("masskill{}", std::process::id());
    let count = 200;
    let app = write_app(&dir, &chain(&name, 98, count, 30));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let rows = dir.join("rows.csv");
    let written = || std::fs::read_to_string(&rows).map_or(0, |t| t.lines().count());
    // Three rounds, each killing every fourth forward stage at once (a different quarter
    // each round), while items are in flight through all of them.
    for round in 0..3usize {
        let at = written();
        wait_for("rows between the rounds", Duration::from_secs(60), || {
            written() > at + 10
        });
        for k in (round..98).step_by(4) {
            if let Some(&pid) = pids_with_cmdline(&format!(" {name}/f{k}#0")).first() {
                // SAFETY: killing a process of this test's app.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let (status, stderr) = finish(sup);
    assert!(status.success(), "supervisor failed: {stderr}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(
        seqs(&dir),
        (0..count).collect::<Vec<u64>>(),
        "every item once and in order: {summary}"
    );
    assert_eq!(summary["slots_held_at_end"], 0, "{summary}");
    let restarted = summary["restarts"].as_object().map_or(0, |r| r.len());
    assert!(restarted >= 60, "the kills are in the summary: {summary}");
}
