//! The supervisor under stalls and signals of its own: stopped for seconds (no healthy
//! stage may be blamed), a live rate change surviving a head restart, and a second
//! SIGINT stopping at once even when a stage ignores `Stop`.

use serde_json::json;
use smartpipe_tests::*;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// These tests start supervisors, which clean other supervisors' stale files: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn signal(pid: u32, sig: i32) {
    // SAFETY: signalling a supervisor this test started.
    unsafe { libc::kill(pid as i32, sig) };
}

#[test]
fn a_stopped_supervisor_blames_no_stage_for_its_own_stall() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("stall-supervisor");
    let name = format!("stall{}", std::process::id());
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 32, "count": 1000000, "fps": 100}},
                {"name": "a", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
                {"name": "b", "kind": "cpu", "function": "core.forward", "inputs": ["a"]},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["b"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_HANG_AFTER_MS", "300"),
        &app,
        &dir.join("run"),
    );
    let rows = || std::fs::read_to_string(dir.join("rows.csv")).map_or(0, |t| t.lines().count());
    wait_for("the first rows", Duration::from_secs(20), || rows() >= 3);
    // The stall under test: the supervisor stopped for 3 s (10 × the hang bound) while
    // its stages keep sending heartbeats into their channels.
    signal(sup.id(), libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(3));
    signal(sup.id(), libc::SIGCONT);
    let before = rows();
    wait_for("rows after the stall", Duration::from_secs(20), || {
        rows() > before + 20
    });
    signal(sup.id(), libc::SIGTERM);
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert!(!err.contains("stopped answering"), "{err}");
    let summary = read_summary(&dir.join("run"));
    let restarts = summary["restarts"].as_object().expect("restarts");
    assert!(
        restarts.values().all(|n| n == 0),
        "no stage restarted: {summary}"
    );
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
}

#[test]
fn a_live_rate_survives_a_restart_of_the_head() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = PrivateRuntime::new("rate-restart");
    let dir = scratch("rate-restart");
    let name = format!("raterestart{}", std::process::id());
    let count = 300;
    // At the file's rate (1 item/s) the items take five minutes; at the live rate, 6 s.
    let app = write_app(
        &dir,
        &json!({
            "name": name, "service_type": "request-guarantee", "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": count, "fps": 1}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let sup = start_in_background(&mut runtime.supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    let rows = || std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count());
    wait_for("the first row", Duration::from_secs(20), || rows() >= 2);
    let out = runtime
        .supervisor()
        .args(["rate", &name, "50"])
        .output()
        .expect("rate");
    assert!(out.status.success(), "{}", printed(&out));
    let out = runtime
        .supervisor()
        .args(["restart", &format!("{name}/gen")])
        .output()
        .expect("restart");
    assert!(out.status.success(), "{}", printed(&out));
    // Back at 1 item/s this would take minutes: a minute is not a tight bound.
    wait_for("every row", Duration::from_secs(60), || rows() == count + 1);
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert_eq!(csv_seqs(&csv), (0..count as u64).collect::<Vec<_>>());
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["gen#0"], 1, "{summary}");
    // The items' own timestamps: the later ones came 20 ms apart, not a second.
    let latest = summary["wall_s"].as_f64().expect("wall_s");
    assert!(latest < 60.0, "the run took {latest} s: {summary}");
}

#[test]
fn a_second_sigint_stops_at_once_even_past_a_stage_ignoring_stop() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("second-sigint");
    let name = format!("secondsig{}", std::process::id());
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 1000000, "fps": 200}},
                {"name": "fault", "kind": "cpu", "function": "test.fault", "inputs": ["gen"], "params": {"mode": "ignore-stop", "after": 0}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fault"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    let needle = format!("--stage {name}/");
    wait_for("3 stages", Duration::from_secs(20), || {
        pids_with_cmdline(&needle).len() == 3
    });
    signal(sup.id(), libc::SIGINT);
    wait_for("the drain to start", Duration::from_secs(10), || {
        sup.stderr_so_far().contains("stops it at once")
    });
    let second = Instant::now();
    signal(sup.id(), libc::SIGINT);
    let (status, err) = finish(sup);
    let took = second.elapsed();
    assert!(!status.success(), "a forced stop is a failure: {err}");
    assert!(err.contains("stopped by a second signal"), "{err}");
    assert!(
        took < Duration::from_secs(3),
        "stopped {took:?} after the second SIGINT"
    );
    assert!(pids_with_cmdline(&needle).is_empty(), "nothing left");
}
