//! The control API of a running supervisor: status (with why a stage dropped input),
//! metrics, logs and stop through the CLI and the Unix socket; the socket is private to
//! its user.

use serde_json::json;
use smartpipe_tests::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

fn get(sock: &std::path::Path, target: &str) -> String {
    let mut conn = UnixStream::connect(sock).expect("connect");
    write!(conn, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut text = String::new();
    conn.read_to_string(&mut text).expect("read");
    text
}

/// Waits until items flow through every stage of app `name` (through `status --json`), and
/// checks what status says of its stages then.
fn wait_until_every_stage_runs(sock: &std::path::Path, name: &str) {
    let start = Instant::now();
    // Wait until items flow through every stage.
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the app never ran"
        );
        if sock.exists() {
            let out = supervisor()
                .args(["status", "--json"])
                .output()
                .expect("status");
            let apps: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
            let mine = apps
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name).cloned());
            if let Some(a) = mine {
                let tail = a["stages"]
                    .as_array()
                    .and_then(|s| s.iter().find(|x| x["label"] == "rows#0").cloned());
                if tail.is_some_and(|t| t["metrics"]["items_out"].as_u64().unwrap_or(0) > 20) {
                    // `balance` (the default) keeps a spare replica of the CPU body,
                    // idle: one of its two gets items.
                    assert_eq!(a["stages"].as_array().map(|s| s.len()), Some(4));
                    let small: Vec<&serde_json::Value> = a["stages"]
                        .as_array()
                        .expect("stages")
                        .iter()
                        .filter(|s| s["task"] == "small")
                        .collect();
                    assert_eq!(small.len(), 2);
                    assert!(small.iter().all(|s| s["active"] == 1), "{a}");
                    assert!(a["stages"]
                        .as_array()
                        .expect("stages")
                        .iter()
                        .all(|s| s["state"] == "running" && s["pid"].as_i64() > Some(0)));
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runtime folder is 0700 and the socket 0600; another uid cannot even connect.
fn assert_private_to_the_user(runtime: &std::path::Path, sock: &std::path::Path) {
    // Private to the user: dir 0700, socket 0600; another uid cannot even connect.
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(runtime), 0o700);
    assert_eq!(mode(sock), 0o600);
    let other = std::process::Command::new("curl")
        .uid(65534)
        .gid(65534)
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(sock)
        .arg("http://x/status")
        .output();
    if let Ok(other) = other {
        assert!(!other.status.success(), "another user must be refused");
        assert_ne!(String::from_utf8_lossy(&other.stdout), "200");
    }
}

/// Prometheus text: every sample line parses, the expected families are there.
fn assert_prometheus_text(sock: &std::path::Path, name: &str) {
    // Prometheus text: every sample line parses, the expected families are there.
    let response = get(sock, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").expect("body").1;
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        assert!(line.starts_with("smartpipe_"), "{line}");
    }
    for family in [
        "smartpipe_stage_items_in_total",
        "smartpipe_stage_items_out_total",
        "smartpipe_stage_lost_total",
        "smartpipe_stage_queue_depth",
        "smartpipe_stage_batch_size",
        "smartpipe_stage_restarts_total",
        "smartpipe_stage_service_seconds_bucket",
        "smartpipe_e2e_latency_seconds_bucket",
        "smartpipe_e2e_latency_seconds_count",
    ] {
        assert!(body.contains(family), "metrics lack {family}");
    }
    assert!(body.contains(&format!(
        "smartpipe_stage_items_out_total{{app=\"{name}\",task=\"small\",stage=\"small#0\"}}"
    )));
}

#[test]
fn status_metrics_logs_and_stop_of_a_running_app() {
    if std::env::var("SMARTPIPE_TESTS_THROUGH_DAEMON").as_deref() == Ok("1") {
        println!("test skipped: it checks a foreground supervisor's own runtime folder and socket (this file's daemon tests talk to the daemon's)");
        return;
    }
    let dir = scratch("control");
    let name = format!("ctl{}", std::process::id());
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 32, "count": 1000000, "fps": 100}},
                {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 8, "height": 8}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    let runtime = std::path::PathBuf::from(format!("/tmp/smartpipe-{uid}/{}", sup.id()));
    let sock = runtime.join("control.sock");
    wait_until_every_stage_runs(&sock, &name);
    assert_private_to_the_user(&runtime, &sock);
    // The table for people.
    let table = supervisor().arg("status").output().expect("status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!("app {name}")) && table.contains("small#0"),
        "{table}"
    );
    assert_prometheus_text(&sock, &name);
    assert!(get(&sock, "/nowhere").starts_with("HTTP/1.1 404"));
    // Logs by stage name.
    let logs = supervisor()
        .args(["logs", &format!("{name}/small")])
        .output()
        .expect("logs");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("function=image.resize"));
    // Stop through the API: the app drains and the supervisor exits cleanly.
    let stop = supervisor().args(["stop", &name]).output().expect("stop");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert!(err.contains("drained"), "{err}");
    assert!(!runtime.exists(), "runtime dir removed");
}

/// While an app runs, `status` says why a stage dropped input (the summary says it at the
/// end): the stage, how many, and its warning for the first.
#[test]
fn status_says_why_a_running_stage_dropped_input() {
    let dir = scratch("control-bad-input");
    let input = dir.join("in");
    // 30 s of images at 4 a second: the app runs until the test stops it, however slow
    // the machine is to report.
    write_frames(&input, 120, 16, 16);
    std::fs::write(input.join("f-000.png"), b"\x89PNG\r\n\x1a\ngarbage").expect("corrupt");
    let name = format!("ctlbad{}", std::process::id());
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "service_type": "best-effort",
            "tasks": [
                {"name": "pics", "kind": "head", "function": "source.images", "params": {"path": "in", "fps": 4}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["pics"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let status = || {
        let out = supervisor().arg("status").output().expect("status");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    wait_for(
        "status to name the bad input",
        Duration::from_secs(30),
        || status().contains("bad input: pics#0 (1): skipping image:"),
    );
    let table = status();
    assert!(
        table.contains("f-000.png: cannot decode image") && table.contains("logs/pics#0.log"),
        "{table}"
    );
    let stop = supervisor().args(["stop", &name]).output().expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
    let (exit, err) = finish(sup);
    assert!(exit.success(), "{err}");
}

#[test]
fn restart_without_a_supervisor_says_so() {
    let rt = PrivateRuntime::new("no-supervisor");
    let out = rt
        .supervisor()
        .args(["restart", "cam/det#1"])
        .output()
        .expect("restart");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no SmartPipe supervisor is running: nothing to restart"),
        "{err}"
    );
    let out = rt.supervisor().arg("shutdown").output().expect("shutdown");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no SmartPipe daemon is running"));
}

/// Two foreground supervisors (no daemon, which would refuse the second) run apps of one
/// name: a change by name is refused as ambiguous, naming both supervisors, instead of
/// reaching whichever was found first; `stop` by name drains both.
#[test]
fn a_change_by_name_when_two_foreground_supervisors_run_that_name_is_refused() {
    if std::env::var("SMARTPIPE_TESTS_THROUGH_DAEMON").as_deref() == Ok("1") {
        println!("test skipped: the daemon refuses a second app of one name");
        return;
    }
    let rt = PrivateRuntime::new("twins");
    let dir = scratch("twins");
    let name = format!("twins{}", std::process::id());
    let a = endless_app(&dir.join("a"), &name);
    let b = endless_app(&dir.join("b"), &name);
    let first = start_in_background(&mut rt.supervisor(), &a, &dir.join("run-a"));
    let second = start_in_background(&mut rt.supervisor(), &b, &dir.join("run-b"));
    let start = Instant::now();
    while rt.apps().iter().filter(|x| x["name"] == name).count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "both apps never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = rt
        .supervisor()
        .args(["rate", &name, "10"])
        .output()
        .expect("rate");
    let said = printed(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("2 foreground supervisors run an app named") && said.contains("ambiguous"),
        "{said}"
    );
    let stop = rt
        .supervisor()
        .args(["stop", &name])
        .output()
        .expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
    for sup in [first, second] {
        let (status, err) = finish(sup);
        assert!(status.success(), "{err}");
    }
}

/// Two apps writing one file, each in a supervisor of its own (`--no-daemon`, or the
/// second in the daemon): the second is refused before it starts, naming the path and the
/// app that writes it, and the first app's rows are untouched.
#[test]
fn a_second_app_writing_a_running_apps_output_is_refused_whatever_supervisor_runs_it() {
    let rt = PrivateRuntime::new("clash");
    let dir = scratch("clash");
    let first_name = format!("first{}", std::process::id());
    let first = endless_app(&dir, &first_name);
    let second_dir = dir.join("second");
    std::fs::create_dir_all(&second_dir).expect("dir");
    let second = write_app(
        &second_dir,
        &json!({
            "name": format!("second{}", std::process::id()),
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 10}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": dir.join("rows.csv")}}
            ]
        }),
    );
    let running = start_in_background(&mut rt.supervisor(), &first, &dir.join("run-first"));
    let start = Instant::now();
    while !rt
        .apps()
        .iter()
        .any(|x| x["name"] == first_name && x["state"] == "running")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the first app never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = dir
        .join("rows.csv")
        .canonicalize()
        .expect("the first app's rows");
    for (how, mut cmd) in [
        ("--no-daemon", rt.supervisor()),
        ("the daemon", {
            let mut cmd = rt.supervisor();
            through_daemon(&mut cmd);
            cmd
        }),
    ] {
        let run_dir = dir.join(format!(
            "run-second-{}",
            how.trim_start_matches('-').replace(' ', "-")
        ));
        let out = cmd
            .arg("start")
            .arg(&second)
            .arg("--run-dir")
            .arg(&run_dir)
            .output()
            .expect("start the second app");
        let said = printed(&out);
        assert!(!out.status.success(), "{how}: {said}");
        let expected = format!(
            "{} is written by the running app '{first_name}'",
            rows.display()
        );
        assert!(
            said.contains(&expected),
            "{how}: names the path and the app ({expected}):\n{said}"
        );
        assert!(
            !run_dir.join("summary.json").exists(),
            "{how}: nothing of it ran"
        );
    }
    let stop = rt
        .supervisor()
        .args(["stop", &first_name])
        .output()
        .expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
    let (status, err) = finish(running);
    assert!(status.success(), "{err}");
    let seqs = csv_seqs(&rows);
    assert!(!seqs.is_empty());
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "the first app's rows, each once"
    );
}
