//! Process-level faults: a hung stage, a killed stage, a killed supervisor.

use serde_json::json;
use smartpipe_tests::*;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// These tests start supervisors, which clean other supervisors' stale files: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn endless(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        // A fixed topology (no live scaling, no spare replicas): the faults are the point.
        "strategy": "lazy",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 32, "count": 1000000, "fps": 100}},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fwd"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn a_hung_stage_is_detected_and_replaced_within_a_second() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("hang");
    let name = format!("hang{}", std::process::id());
    let app = write_app(&dir, &endless(&name));
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_HANG_AFTER_MS", "300"),
        &app,
        &dir.join("run"),
    );
    let needle = format!("--stage {name}/fwd#0");
    let rows = || std::fs::read_to_string(dir.join("rows.csv")).map_or(0, |t| t.lines().count());
    // Rows at the tail: the forwarder is past its start-up (a stage stopped while it
    // starts is the start-up timeout's business, not the hang detector's).
    wait_for("the first rows", Duration::from_secs(20), || rows() >= 3);
    let pid = pids_with_cmdline(&needle)[0];
    // SAFETY: stopping a process of this test's app.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let took = wait_for(
        "the hung stage to be replaced",
        Duration::from_secs(5),
        || {
            pids_with_cmdline(&needle).iter().any(|&p| p != pid)
                && !pids_with_cmdline(&needle).contains(&pid)
        },
    );
    // Within a few hang bounds of 300 ms (detection, kill, restart delay, start-up on a
    // loaded machine), far below the 5 s default bound the setting replaced.
    assert!(
        took < Duration::from_secs(2),
        "detected, killed and replaced in {took:?}"
    );
    // The app goes on: rows keep coming after the replacement, then it drains cleanly.
    let before = rows();
    wait_for("rows after the restart", Duration::from_secs(20), || {
        rows() > before + 10
    });
    // SAFETY: asking our own child to drain.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert!(err.contains("fwd#0 stopped answering"), "{err}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["fwd#0"], 1, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
    assert!(
        pids_with_cmdline(&format!("--stage {name}/")).is_empty(),
        "nothing left"
    );
}

/// The kernel function a process's main thread sleeps in ("" while it runs).
fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

#[test]
fn a_drain_that_reaches_a_head_waiting_for_a_slot_still_finishes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("drain-full");
    let name = format!("drainfull{}", std::process::id());
    let app = write_app(&dir, &endless(&name));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let tail = format!("--stage {name}/rows#0");
    let head = format!("--stage {name}/gen#0");
    let rows = || std::fs::read_to_string(dir.join("rows.csv")).map_or(0, |t| t.lines().count());
    wait_for("the first rows", Duration::from_secs(20), || rows() >= 3);
    let (tail_pid, head_pid) = (pids_with_cmdline(&tail)[0], pids_with_cmdline(&head)[0]);
    // With the tail stopped nothing is acknowledged: the head fills its slots and waits.
    // SAFETY: stopping a process of this test's app.
    unsafe { libc::kill(tail_pid, libc::SIGSTOP) };
    wait_for(
        "the head to wait for a free slot",
        Duration::from_secs(10),
        || wchan(head_pid).starts_with("futex"),
    );
    // The drain reaches the waiting head before any acknowledgement that frees a slot.
    // SAFETY: asking our own child to drain.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    wait_for("the drain to start", Duration::from_secs(10), || {
        sup.stderr_so_far().contains("draining app")
    });
    // SAFETY: resuming the process stopped above.
    unsafe { libc::kill(tail_pid, libc::SIGCONT) };
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
    let seqs = csv_seqs(&dir.join("rows.csv"));
    assert!(!seqs.is_empty(), "rows were written");
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn killing_the_supervisor_ends_every_child_and_the_next_start_is_clean() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("sup-kill");
    let name = format!("supkill{}", std::process::id());
    let app = write_app(&dir, &endless(&name));
    // The supervisor killed is the app's own (not the node's daemon).
    let mut sup = supervisor()
        .env("SMARTPIPE_NO_DAEMON", "1")
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let needle = format!("--stage {name}/");
    wait_for("3 stages", Duration::from_secs(20), || {
        pids_with_cmdline(&needle).len() == 3
    });
    let sup_pid = sup.id();
    sup.kill().expect("kill -9 the supervisor");
    sup.wait().expect("reap");
    let took = wait_for("children to die", Duration::from_secs(5), || {
        pids_with_cmdline(&needle).is_empty()
    });
    assert!(
        took < Duration::from_secs(1),
        "children ended {took:?} after the supervisor"
    );
    // SAFETY: getuid never fails.
    let stale = std::path::PathBuf::from(format!("/tmp/smartpipe-{}/{sup_pid}", unsafe {
        libc::getuid()
    }));
    assert!(stale.exists(), "a killed supervisor leaves its runtime dir");
    // The next start removes it and runs normally.
    let out = supervisor()
        .arg("validate")
        .arg(&app)
        .output()
        .expect("validate");
    assert!(out.status.success());
    let small = write_app(
        &dir,
        &json!({"name": "after", "tasks": [
            {"name": "g", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4, "count": 3}},
            {"name": "t", "kind": "tail", "function": "table.print", "inputs": ["g"], "params": {"format": "csv", "path": "after.csv"}}
        ]}),
    );
    let (out, _) = run_ok_with(
        supervisor().env("SMARTPIPE_NO_DAEMON", "1"),
        &small,
        &dir.join("run2"),
    );
    assert!(
        !stale.exists(),
        "the next start removed the stale runtime dir"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("removed stale runtime files"));
}

fn faulty(name: &str, mode: &str, after: u64) -> serde_json::Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        // One replica of the faulty stage (no live scaling, no spare).
        "strategy": "lazy",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 1000000, "fps": 200}},
            {"name": "fault", "kind": "cpu", "function": "test.fault", "inputs": ["gen"], "params": {"mode": mode, "after": after}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fault"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

/// A stage that hangs before sending anything on, in every process: restarting it would
/// go on for ever (each hang takes the hang bound to be seen, so the restart intensity
/// never trips). After three such hangs in a row the app fails, saying so.
#[test]
fn a_stage_that_hangs_in_every_process_fails_the_app_after_three_hangs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("fault-hang-loop");
    let name = format!("hangloop{}", std::process::id());
    let app = write_app(&dir, &faulty(&name, "hang", 0));
    let out = start_to_end(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    let said = printed(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("fault#0")
            && said.contains(
                "its last 3 processes were each killed as hung before sending any item on"
            ),
        "{said}"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["fault#0"], 2, "{summary}");
    assert!(
        pids_with_cmdline(&format!("--stage {name}/")).is_empty(),
        "nothing left"
    );
}

#[test]
fn fault_functions_are_refused_outside_the_test_suite() {
    let dir = scratch("fault-refused");
    let app = write_app(&dir, &faulty("refused", "crash", 1));
    let out = supervisor()
        .env_remove("SMARTPIPE_TEST_FAULTS")
        .arg("validate")
        .arg(&app)
        .output()
        .expect("validate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tasks[1] (fault).function") && err.contains("SMARTPIPE_TEST_FAULTS=1"),
        "{err}"
    );
}

#[test]
fn a_crash_loop_is_restarted_then_escalated_and_a_later_start_works() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("fault-crash");
    let name = format!("crash{}", std::process::id());
    let app = write_app(&dir, &faulty(&name, "crash", 5));
    let out = supervisor()
        .env("SMARTPIPE_TEST_FAULTS", "1")
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .expect("start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage fault#0 was killed by signal 6"),
        "{err}"
    );
    assert!(
        err.contains("restarted 5 times within 10 s (the restart intensity)"),
        "escalation after the intensity limit: {err}"
    );
    assert!(err.contains("fault#0.log"), "points at the log: {err}");
    assert!(
        pids_with_cmdline(&format!("--stage {name}/")).is_empty(),
        "nothing left"
    );
    let rows = std::fs::read_to_string(dir.join("rows.csv")).unwrap_or_default();
    assert!(rows.lines().count() >= 1, "the tail wrote what reached it");
    // The app can be started again at once (nothing stale in the way).
    let mut fixed = endless(&name);
    fixed["tasks"][0]["params"]["count"] = json!(50);
    let app = write_app(&dir, &fixed);
    let out = supervisor()
        .env("SMARTPIPE_TEST_FAULTS", "1")
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(dir.join("run2"))
        .output()
        .expect("start again");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = std::fs::read_to_string(dir.join("rows.csv")).expect("rows");
    assert_eq!(
        rows.lines().count(),
        51,
        "header + every row of the new run"
    );
}

#[test]
fn a_stage_ignoring_stop_and_sigterm_is_killed_after_the_grace() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("fault-stubborn");
    let name = format!("stubborn{}", std::process::id());
    let app = write_app(&dir, &faulty(&name, "ignore-stop", 0));
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    let needle = format!("--stage {name}/");
    wait_for("3 stages", Duration::from_secs(20), || {
        pids_with_cmdline(&needle).len() == 3
    });
    let started = Instant::now();
    // SAFETY: signalling the supervisor this test started; twice = stop at once.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: as above, the second signal.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    let (status, err) = finish(sup);
    let took = started.elapsed();
    assert!(!status.success(), "a forced stop is a failure: {err}");
    assert!(
        took < Duration::from_secs(12),
        "SIGKILL after the 5 s grace, not a hang: {took:?}"
    );
    assert!(
        pids_with_cmdline(&needle).is_empty(),
        "the stubborn stage is gone"
    );
}

#[test]
fn a_stage_sending_garbage_is_restarted_alone_and_every_item_arrives_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("fault-garbage");
    let name = format!("garbage{}", std::process::id());
    let count = 200u64;
    let mut app = faulty(&name, "garbage", 20);
    app["tasks"][0]["params"]["count"] = json!(count);
    let app = write_app(&dir, &app);
    let out = supervisor()
        .env("SMARTPIPE_TEST_FAULTS", "1")
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .expect("start");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("stage fault#0 sent a message that does not decode"),
        "the supervisor names the stage: {err}"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["bad_messages"], json!({"fault#0": 1}), "{summary}");
    assert_eq!(
        summary["restarts"],
        json!({"fault#0": 1}),
        "only the stage that sent it restarted: {summary}"
    );
    assert_eq!(summary["outcome"], "finished", "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(
        csv_seqs(&dir.join("rows.csv")),
        (0..count).collect::<Vec<_>>(),
        "every item exactly once, in order"
    );
    assert!(
        pids_with_cmdline(&format!("--stage {name}/")).is_empty(),
        "nothing left"
    );
}
