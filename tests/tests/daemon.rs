//! The node's daemon: apps started detached or posted to its socket (`POST /apps`) run in
//! one background supervisor, each stopped on its own; bad apps, duplicates and unknown
//! tasks are refused with reasons before anything runs; the daemon exits after its last app.

use serde_json::json;
use smartpipe_tests::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn state_of(rt: &PrivateRuntime, name: &str) -> Option<(String, i64)> {
    rt.apps().iter().find(|a| a["name"] == name).map(|a| {
        (
            a["state"].as_str().unwrap_or("").to_string(),
            a["supervisor_pid"].as_i64().unwrap_or(0),
        )
    })
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && pids_with_cmdline("supervisor daemon").contains(&pid)
}

#[test]
fn two_apps_run_in_one_daemon_and_stop_one_at_a_time() {
    let rt = PrivateRuntime::new("two-apps");
    let dir = scratch("daemon-two");
    let (a, b) = (
        format!("da{}", std::process::id()),
        format!("db{}", std::process::id()),
    );
    let pid = start_detached(
        &mut rt.supervisor(),
        &endless_app(&dir.join("a"), &a),
        &dir.join("run-a"),
    );
    let pid_b = start_detached(
        &mut rt.supervisor(),
        &endless_app(&dir.join("b"), &b),
        &dir.join("run-b"),
    );
    assert_eq!(pid, pid_b, "the second app goes into the running daemon");
    assert_eq!(rt.supervisor_pids(), [pid], "one supervisor: the daemon");
    // Both apps are listed, running, in the daemon.
    for name in [&a, &b] {
        wait_for(&format!("{name} running"), Duration::from_secs(30), || {
            state_of(&rt, name) == Some(("running".into(), i64::from(pid)))
        });
    }
    let table = rt.supervisor().arg("status").output().expect("status");
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains(&format!("daemon pid {pid}: 2 apps")),
        "{table}"
    );
    // Both apps' stages write their own logs in their own run dirs.
    let logs = rt
        .supervisor()
        .args(["logs", &format!("{b}/gen")])
        .output()
        .expect("logs");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("function=image.gen"));
    // Without the app's name the stage is ambiguous: both apps have one.
    let either = rt
        .supervisor()
        .args(["logs", "gen#0"])
        .output()
        .expect("logs");
    assert!(!either.status.success());
    assert!(
        printed(&either).contains("several running apps have a stage 'gen#0'"),
        "{}",
        printed(&either)
    );
    let nobody = rt
        .supervisor()
        .args(["logs", "nosuch/gen"])
        .output()
        .expect("logs");
    assert!(
        printed(&nobody).contains("no running app named 'nosuch'"),
        "{}",
        printed(&nobody)
    );

    // Stopping one leaves the other (and the daemon) running.
    let stop = rt.supervisor().args(["stop", &a]).output().expect("stop");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    wait_for(
        &format!("{a} gone from status"),
        Duration::from_secs(30),
        || state_of(&rt, &a).is_none(),
    );
    wait_for(
        &format!("{a}'s stages gone"),
        Duration::from_secs(30),
        || pids_with_cmdline(&format!("--stage {a}/")).is_empty(),
    );
    let log_a = std::fs::read_to_string(dir.join("run-a/supervisor.log")).expect("a's log");
    assert!(log_a.contains(&format!("app '{a}' drained")), "{log_a}");
    assert!(dir.join("run-a/summary.json").is_file());
    let rows_before = std::fs::read_to_string(dir.join("b/rows.csv"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    assert_eq!(state_of(&rt, &b), Some(("running".into(), i64::from(pid))));
    assert_eq!(pids_with_cmdline(&format!("--stage {b}/")).len(), 2);
    wait_for(
        &format!("{b} still delivering"),
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(dir.join("b/rows.csv"))
                .is_ok_and(|t| t.lines().count() > rows_before + 5)
        },
    );
    assert!(alive(pid));

    // Shutdown: the other app drains, the daemon exits and leaves nothing behind.
    let down = rt.supervisor().arg("shutdown").output().expect("shutdown");
    let said = String::from_utf8_lossy(&down.stdout).to_string();
    assert!(
        down.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        said.contains(&format!("the daemon (pid {pid}) has exited")),
        "{said}"
    );
    assert!(!alive(pid), "the daemon is gone");
    assert!(
        rt.supervisor_pids().is_empty(),
        "its runtime dir is removed"
    );
    assert!(pids_with_cmdline(&format!("--stage {b}/")).is_empty());
    let log_b = std::fs::read_to_string(dir.join("run-b/supervisor.log")).expect("b's log");
    assert!(log_b.contains(&format!("app '{b}' drained")), "{log_b}");
    assert!(rt.apps().is_empty());
}

#[test]
fn the_daemon_refuses_bad_apps_duplicates_and_unknown_tasks_with_reasons() {
    let rt = PrivateRuntime::new("refusals");
    let dir = scratch("daemon-refusals");
    let good = format!("dg{}", std::process::id());
    let good_app = endless_app(&dir.join("good"), &good);
    let pid = start_detached(&mut rt.supervisor(), &good_app, &dir.join("run-good"));
    // An invalid app: the CLI lists its problems and exits non-zero; nothing starts.
    let bad_dir = dir.join("bad");
    std::fs::create_dir_all(&bad_dir).expect("bad dir");
    let bad_app = write_app(
        &bad_dir,
        &json!({
            "name": "bad",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["nowhere"]}
            ]
        }),
    );
    let out = rt
        .supervisor()
        .arg("start")
        .arg(&bad_app)
        .arg("--detach")
        .output()
        .expect("start bad");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(err.contains("unknown task 'nowhere'"), "{err}");
    // The same file sent to the daemon itself: refused with the same validation error.
    let sock = rt.dir.join(pid.to_string()).join("control.sock");
    let post = |file: &std::path::Path, run: &str| {
        let body = json!({
            "file": file, "run_dir": dir.join(run), "startup_timeout_s": 20, "hang_after_ms": 5000
        })
        .to_string();
        post_apps(&sock, &body)
    };
    let answer = post(&bad_app, "run-bad");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("unknown task 'nowhere'"), "{answer}");
    assert!(
        !dir.join("run-bad").exists(),
        "a refused app creates nothing"
    );
    // A second app of a running app's name: refused by the daemon and by the CLI.
    let answer = post(&good_app, "run-again");
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(
        answer.contains(&format!("'{good}' already runs")),
        "{answer}"
    );
    let out = rt
        .supervisor()
        .arg("start")
        .arg(&good_app)
        .arg("--detach")
        .output()
        .expect("start again");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already runs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Restart of a task the app does not have: refused, naming the app's tasks.
    let out = rt
        .supervisor()
        .args(["restart", &format!("{good}/nope")])
        .output()
        .expect("restart");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains(&format!(
            "app '{good}' has no task 'nope'; its tasks: gen, rows"
        )),
        "{err}"
    );
    // Only the good app runs, and the daemon still does.
    let names: Vec<String> = rt
        .apps()
        .iter()
        .map(|a| a["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, std::slice::from_ref(&good));
    assert!(alive(pid));
}

#[test]
fn a_detached_app_runs_in_the_daemon_which_exits_after_its_last_app() {
    let rt = PrivateRuntime::new("detach");
    let dir = scratch("detach");
    let name = format!("bg{}", std::process::id());
    let app = endless_app(&dir, &name);
    let run_dir = dir.join("run");
    let pid = start_detached(&mut rt.supervisor(), &app, &run_dir);
    assert_eq!(
        state_of(&rt, &name),
        Some(("running".into(), i64::from(pid))),
        "start returns once the app runs"
    );
    let stop = rt
        .supervisor()
        .args(["stop", &name])
        .output()
        .expect("stop");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    // Its last app ended: the daemon exits by itself and removes its runtime dir.
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        !alive(pid)
    });
    wait_for("its runtime dir to go", Duration::from_secs(5), || {
        rt.supervisor_pids().is_empty()
    });
    let log = std::fs::read_to_string(run_dir.join("supervisor.log")).expect("supervisor.log");
    assert!(log.contains("drained"), "{log}");
    assert!(run_dir.join("summary.json").is_file());
    let daemon_log = std::fs::read_to_string(rt.dir.join("daemon.log")).expect("daemon.log");
    assert!(
        daemon_log.contains(&format!("[daemon {pid}] no app left: exiting")),
        "{daemon_log}"
    );
}

/// `POST /apps` with `body` on the daemon's socket; the whole answer.
fn post_apps(sock: &std::path::Path, body: &str) -> String {
    let mut conn = UnixStream::connect(sock).expect("connect");
    write!(
        conn,
        "POST /apps HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read");
    text
}

#[test]
fn the_daemon_runs_the_preflight_checks_on_apps_posted_to_its_socket() {
    let rt = PrivateRuntime::new("preflight");
    let dir = scratch("daemon-preflight");
    let good = format!("dp{}", std::process::id());
    let pid = start_detached(
        &mut rt.supervisor(),
        &endless_app(&dir.join("good"), &good),
        &dir.join("run-good"),
    );
    // Valid as a file, refused by the checks `start` makes: a `where` that does not parse.
    let bad_dir = dir.join("bad");
    std::fs::create_dir_all(&bad_dir).expect("bad dir");
    let bad_app = write_app(
        &bad_dir,
        &json!({
            "name": "badwhere",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 10}},
                {"name": "few", "kind": "cpu", "function": "table.filter", "inputs": ["post"], "params": {"where": "width >"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["few"], "params": {"format": "csv", "path": "rows.csv"}},
                {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
                {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}},
                {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}}
            ]
        }),
    );
    let sock = rt.dir.join(pid.to_string()).join("control.sock");
    let body = json!({
        "file": bad_app, "run_dir": dir.join("run-bad"), "startup_timeout_s": 20, "hang_after_ms": 5000
    })
    .to_string();
    let answer = post_apps(&sock, &body);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("tasks[1] (few).params.where: predicate `width >`"),
        "the problem and its place: {answer}"
    );
    assert!(
        !dir.join("run-bad").exists(),
        "a refused app creates nothing"
    );
    assert!(!bad_dir.join("rows.csv").exists(), "and starts nothing");
    let names: Vec<String> = rt
        .apps()
        .iter()
        .map(|a| a["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, std::slice::from_ref(&good), "only the good app runs");
    assert!(alive(pid));
}

/// A daemon that runs but does not answer (stopped here with SIGSTOP; overloaded alike)
/// is named as such, and a start does not put a second daemon beside it.
#[test]
fn a_daemon_that_does_not_answer_is_named_and_not_doubled() {
    let rt = PrivateRuntime::new("silent");
    let dir = scratch("daemon-silent");
    let name = format!("sil{}", std::process::id());
    let pid = start_detached(
        &mut rt.supervisor(),
        &endless_app(&dir, &name),
        &dir.join("run"),
    );
    // SAFETY: stopping the daemon this test started (continued below).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let status = rt.supervisor().arg("status").output().expect("status");
    assert!(
        printed(&status).contains(&format!("supervisor pid {pid} runs but did not answer")),
        "{}",
        printed(&status)
    );
    let other = format!("other{}", std::process::id());
    let second = rt
        .supervisor()
        .arg("start")
        .arg(endless_app(&dir.join("other"), &other))
        .arg("--detach")
        .output()
        .expect("start");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(!second.status.success(), "{}", printed(&second));
    assert!(
        printed(&second).contains(&format!("the daemon (pid {pid}) runs but did not answer")),
        "{}",
        printed(&second)
    );
    assert_eq!(rt.supervisor_pids(), vec![pid], "one daemon");
    let stop = rt
        .supervisor()
        .args(["stop", &name])
        .output()
        .expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        !alive(pid)
    });
}
