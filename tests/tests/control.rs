//! The control API of a running supervisor: status, metrics, logs and stop through the
//! CLI and the Unix socket; the socket is private to its user.

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

/// An endless app: a generated 16×16 frame every 20 ms into a CSV.
fn endless_app(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("app dir");
    write_app(
        dir,
        &json!({
            "name": name,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 1000000, "fps": 50}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    )
}

/// `start APP --detach --run-dir RUN` in `rt`; panics unless it succeeds. Returns the
/// daemon's pid from the message.
fn start_detached(rt: &PrivateRuntime, app: &std::path::Path, run_dir: &std::path::Path) -> i32 {
    let out = rt
        .supervisor()
        .arg("start")
        .arg(app)
        .arg("--detach")
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("start");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("runs in the daemon"), "{said}");
    said.split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {said:?}"))
}

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
    let pid = start_detached(&rt, &endless_app(&dir.join("a"), &a), &dir.join("run-a"));
    let pid_b = start_detached(&rt, &endless_app(&dir.join("b"), &b), &dir.join("run-b"));
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
    let pid = start_detached(&rt, &good_app, &dir.join("run-good"));
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
        let mut conn = UnixStream::connect(&sock).expect("connect");
        write!(
            conn,
            "POST /apps HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut text = String::new();
        conn.read_to_string(&mut text).expect("read");
        text
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

#[test]
fn a_detached_app_runs_in_the_daemon_which_exits_after_its_last_app() {
    let rt = PrivateRuntime::new("detach");
    let dir = scratch("detach");
    let name = format!("bg{}", std::process::id());
    let app = endless_app(&dir, &name);
    let run_dir = dir.join("run");
    let pid = start_detached(&rt, &app, &run_dir);
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
        &rt,
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
