//! `supervisor start APP` in the foreground puts the app into the node's daemon and
//! follows it: the app is one of the daemon's apps (one `status`, one supervisor), its
//! rows reach the command's stdout and its summary the command's stderr, a signal to the
//! command drains it, the command ends with the app's exit status, and the app runs
//! under the command's own environment, not the daemon's.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn chain(name: &str, count: u64, fps: u64, middle: Value) -> Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 32, "count": count, "fps": fps}},
            middle,
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["mid"], "params": {"format": "jsonl"}}
        ]
    })
}

fn forward() -> Value {
    json!({"name": "mid", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]})
}

fn foreground(rt: &PrivateRuntime) -> Command {
    let mut cmd = rt.supervisor();
    through_daemon(&mut cmd);
    cmd
}

fn write_named(dir: &std::path::Path, file: &str, app: &Value) -> std::path::PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(app).expect("json")).expect("write app");
    path
}

fn seqs_of_jsonl(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            row["seq"].as_u64().expect("seq")
        })
        .collect()
}

#[test]
fn a_foreground_app_is_one_of_the_daemons_apps_and_ends_with_its_command() {
    let rt = PrivateRuntime::new("fg-daemon");
    let dir = scratch("fg-daemon");
    // App A runs in the daemon (detached) for longer than B takes.
    let a = write_named(&dir, "a.json", &chain("fg-a", 1_000_000, 50, forward()));
    let out = rt
        .supervisor()
        .args(["start", "--detach", "--run-dir"])
        .arg(dir.join("run-a"))
        .arg(&a)
        .output()
        .expect("start a");
    assert!(out.status.success(), "{}", printed(&out));
    let daemons = rt.supervisor_pids();
    assert_eq!(daemons.len(), 1, "one daemon");
    // B in the foreground: 60 items at 40/s, so it is seen running beside A.
    let b = write_named(&dir, "b.json", &chain("fg-b", 60, 40, forward()));
    let command = foreground(&rt)
        .arg("start")
        .arg(&b)
        .arg("--run-dir")
        .arg(dir.join("run-b"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start b");
    let command_pid = command.id() as i64;
    wait_for("B listed by status", Duration::from_secs(30), || {
        rt.apps().iter().any(|app| app["name"] == "fg-b")
    });
    let apps = rt.apps();
    let pid_of = |name: &str| {
        apps.iter()
            .find(|app| app["name"] == name)
            .map(|app| app["supervisor_pid"].as_i64().unwrap_or(0))
    };
    assert_eq!(pid_of("fg-a"), Some(i64::from(daemons[0])), "{apps:?}");
    assert_eq!(pid_of("fg-b"), Some(i64::from(daemons[0])), "{apps:?}");
    assert_ne!(pid_of("fg-b"), Some(command_pid), "B runs in the daemon");
    assert_eq!(rt.supervisor_pids(), daemons, "no supervisor of B's own");
    let out = command.wait_with_output().expect("wait for b");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Its rows on the command's stdout, every one once and in order; its summary on
    // the command's stderr.
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(seqs_of_jsonl(&text), (0..60).collect::<Vec<_>>());
    assert!(err.contains("app 'fg-b' finished"), "{err}");
    assert!(err.contains("items:      60 in, 60 out"), "{err}");
    let summary = read_summary(&dir.join("run-b"));
    assert_eq!(summary["items_out"], 60, "{summary}");
    // A runs on in the daemon after B's command ended.
    let names: Vec<Value> = rt.apps().iter().map(|a| a["name"].clone()).collect();
    assert_eq!(names, [json!("fg-a")]);
    let stop = rt
        .supervisor()
        .args(["stop", "fg-a"])
        .output()
        .expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
}

#[test]
fn a_signal_to_the_command_drains_its_app_and_a_killed_command_does_not_leave_it_running() {
    let rt = PrivateRuntime::new("fg-signal");
    let dir = scratch("fg-signal");
    let app = write_named(
        &dir,
        "app.json",
        &chain("fg-sig", 1_000_000, 100, forward()),
    );
    let started = |run: &str| {
        let mut cmd = foreground(&rt);
        cmd.arg("start")
            .arg(&app)
            .arg("--run-dir")
            .arg(dir.join(run))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("start");
        wait_for("the app running", Duration::from_secs(30), || {
            rt.apps()
                .iter()
                .any(|a| a["name"] == "fg-sig" && a["state"] == "running")
        });
        child
    };
    // SIGTERM, as a service manager stops a command: the app drains, nothing is lost,
    // and the command ends with it, successfully.
    let child = started("run-term");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("drained after a signal"), "{err}");
    let summary = read_summary(&dir.join("run-term"));
    let rows = seqs_of_jsonl(&String::from_utf8_lossy(&out.stdout));
    assert!(!rows.is_empty());
    assert_eq!(summary["items_in"], summary["items_out"], "{summary}");
    assert_eq!(rows, (0..rows.len() as u64).collect::<Vec<_>>());
    // kill -9 of the command: the daemon drains the app it was following.
    let mut child = started("run-kill");
    child.kill().expect("kill -9 the command");
    child.wait().expect("reap");
    wait_for("the app drained", Duration::from_secs(30), || {
        !rt.apps().iter().any(|a| a["name"] == "fg-sig")
    });
    let summary = read_summary(&dir.join("run-kill"));
    assert_eq!(summary["outcome"], "drained after a signal", "{summary}");
}

#[test]
fn the_app_runs_under_the_commands_environment_not_the_daemons() {
    let rt = PrivateRuntime::new("fg-env");
    let dir = scratch("fg-env");
    // The daemon starts for an app sent without fault injection allowed...
    let a = write_named(&dir, "a.json", &chain("fg-env-a", 1_000_000, 20, forward()));
    let out = rt
        .supervisor()
        .env_remove("SMARTPIPE_TEST_FAULTS")
        .args(["start", "--detach", "--run-dir"])
        .arg(dir.join("run-a"))
        .arg(&a)
        .output()
        .expect("start a");
    assert!(out.status.success(), "{}", printed(&out));
    // ...and then runs one that needs it, from a command that allows it: its stage
    // (started by the daemon) must see the command's setting to run at all, and crashes
    // as the fault says; the command's SMARTPIPE_MAX_RESTARTS=0 (read by the daemon for
    // this app only) fails the app at the first crash, and the command with it.
    let fault = json!({"name": "mid", "kind": "cpu", "function": "test.fault", "inputs": ["gen"],
        "params": {"mode": "crash", "after": 5}});
    let b = write_named(&dir, "b.json", &chain("fg-env-b", 50, 0, fault));
    let out = foreground(&rt)
        .env("SMARTPIPE_TEST_FAULTS", "1")
        .env("SMARTPIPE_MAX_RESTARTS", "0")
        .arg("start")
        .arg(&b)
        .arg("--run-dir")
        .arg(dir.join("run-b"))
        .output()
        .expect("start b");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("app 'fg-env-b'"), "{err}");
    let log = std::fs::read_to_string(dir.join("run-b/logs/mid#0.log")).unwrap_or_default();
    assert!(log.contains("misbehaving now"), "the fault ran: {log}");
    // The same app from a command without the setting is refused before it runs.
    let out = foreground(&rt)
        .env_remove("SMARTPIPE_TEST_FAULTS")
        .arg("start")
        .arg(&b)
        .arg("--run-dir")
        .arg(dir.join("run-c"))
        .output()
        .expect("start c");
    assert_eq!(out.status.code(), Some(1), "{}", printed(&out));
    assert!(
        printed(&out).contains("SMARTPIPE_TEST_FAULTS=1"),
        "{}",
        printed(&out)
    );
    let stop = rt
        .supervisor()
        .args(["stop", "fg-env-a"])
        .output()
        .expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
}
