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

#[test]
fn status_metrics_logs_and_stop_of_a_running_app() {
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
    let uid = unsafe { libc::getuid() };
    let runtime = std::path::PathBuf::from(format!("/tmp/smartpipe-{uid}/{}", sup.id()));
    let sock = runtime.join("control.sock");
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
                .and_then(|a| a.iter().find(|x| x["name"] == name.as_str()).cloned());
            if let Some(a) = mine {
                let tail = a["stages"]
                    .as_array()
                    .and_then(|s| s.iter().find(|x| x["label"] == "rows#0").cloned());
                if tail.is_some_and(|t| t["metrics"]["items_out"].as_u64().unwrap_or(0) > 20) {
                    assert_eq!(a["stages"].as_array().map(|s| s.len()), Some(3));
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
    // Private to the user: dir 0700, socket 0600; another uid cannot even connect.
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&runtime), 0o700);
    assert_eq!(mode(&sock), 0o600);
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
        .arg(&sock)
        .arg("http://x/status")
        .output();
    if let Ok(other) = other {
        assert!(!other.status.success(), "another user must be refused");
        assert_ne!(String::from_utf8_lossy(&other.stdout), "200");
    }
    // The table for people.
    let table = supervisor().arg("status").output().expect("status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!("app {name}")) && table.contains("small#0"),
        "{table}"
    );
    // Prometheus text: every sample line parses, the expected families are there.
    let response = get(&sock, "/metrics");
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

#[test]
fn a_detached_app_runs_in_the_background_until_stopped() {
    let dir = scratch("detach");
    let name = format!("bg{}", std::process::id());
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 1000000, "fps": 50}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let run_dir = dir.join("run");
    let out = supervisor()
        .arg("start")
        .arg(&app)
        .arg("--detach")
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .expect("start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("runs in the background"), "{said}");
    let pid: i32 = said
        .split("supervisor pid ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.trim().parse().ok())
        .expect("pid in the message");
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the detached app never showed up"
        );
        let out = supervisor()
            .args(["status", "--json"])
            .output()
            .expect("status");
        let apps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
        if apps.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["name"] == name.as_str() && x["state"] == "running")
        }) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = supervisor().args(["stop", &name]).output().expect("stop");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the background supervisor did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(run_dir.join("supervisor.log")).expect("supervisor.log");
    assert!(log.contains("drained"), "{log}");
    assert!(run_dir.join("summary.json").is_file());
}
