//! Admission without a profile (issue 13, item 4): a request-guarantee app with a quota
//! impossible on its face is refused before anything is measured or started; one with
//! no profile of its tasks on this machine is profiled first (again after its tasks
//! change), or refused under `--no-profile` with how to profile it; a latency quota
//! below the measured service times is refused naming the slowest path.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::Path;

fn app(name: &str, quota: Value, width: u32) -> Value {
    json!({
        "name": name, "service_type": "request-guarantee", "request_frequency": 10,
        "quota": quota,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": 20, "fps": 10}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": width, "height": 24}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

/// `supervisor start APP --run-dir RUN [extra]`: (success, stderr).
fn start(app: &Path, run: &Path, extra: &[&str]) -> (bool, String) {
    let out = supervisor()
        .arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run)
        .args(extra)
        .output()
        .expect("run supervisor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_impossible_throughput_is_refused_before_profiling_or_starting_anything() {
    let dir = scratch("admit-impossible");
    let name = format!("impossible{}", std::process::id());
    let path = write_app(
        &dir,
        &app(
            &name,
            json!({"throughput_per_min": 60_000_000, "max_latency_ms": 1}),
            32,
        ),
    );
    let (ok, stderr) = start(&path, &dir.join("run"), &[]);
    assert!(!ok, "refused:\n{stderr}");
    assert!(
        stderr.contains("refused")
            && stderr.contains("throughput quota 60000000 replies/min")
            && stderr.contains("600 per min"),
        "names the quota and what the request frequency offers:\n{stderr}"
    );
    assert!(!stderr.contains("profiling"), "nothing measured:\n{stderr}");
    assert!(!dir.join("profiles").exists(), "no profile written");
    assert!(!dir.join("run").exists(), "no run started");
    assert!(pids_with_cmdline(&format!(" {name}/")).is_empty());
}

#[test]
fn no_profile_refuses_an_unprofiled_app_saying_how_to_profile_it() {
    let dir = scratch("admit-no-profile");
    let name = format!("noprofile{}", std::process::id());
    let path = write_app(
        &dir,
        &app(
            &name,
            json!({"throughput_per_min": 300, "max_latency_ms": 2000}),
            32,
        ),
    );
    let (ok, stderr) = start(&path, &dir.join("run"), &["--no-profile"]);
    assert!(!ok, "refused:\n{stderr}");
    assert!(
        stderr.contains("no profile of its tasks on this machine")
            && stderr.contains("supervisor profile"),
        "says to profile:\n{stderr}"
    );
    assert!(!dir.join("run").exists(), "no run started");
    assert!(!dir.join("profiles").exists(), "nothing measured");
}

#[test]
fn an_unprofiled_app_is_profiled_first_and_again_after_its_tasks_change() {
    let dir = scratch("admit-autoprofile");
    let name = format!("autoprof{}", std::process::id());
    let quota = json!({"throughput_per_min": 300, "max_latency_ms": 2000});
    let path = write_app(&dir, &app(&name, quota.clone(), 32));
    let (ok, stderr) = start(&path, &dir.join("run1"), &[]);
    assert!(ok, "admitted after profiling:\n{stderr}");
    assert!(
        stderr.contains("profiling it on this machine before admission")
            && stderr.contains("profiles written to")
            && stderr.contains("plan (Balance)"),
        "profiled, then planned:\n{stderr}"
    );
    assert_eq!(read_summary(&dir.join("run1"))["items_out"], 20);
    // Profiled now: no measuring, and --no-profile admits it.
    let (ok, stderr) = start(&path, &dir.join("run2"), &["--no-profile"]);
    assert!(ok, "admitted on its stored profile:\n{stderr}");
    assert!(!stderr.contains("profiling"), "{stderr}");
    // An edited task makes the profile stale: measured again.
    write_app(&dir, &app(&name, quota, 40));
    let (ok, stderr) = start(&path, &dir.join("run3"), &[]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("its tasks changed since") && stderr.contains("profiles written to"),
        "profiled again:\n{stderr}"
    );
}

#[test]
fn a_latency_quota_below_the_measured_service_times_is_refused_naming_the_path() {
    let dir = scratch("admit-latency");
    let name = format!("latency{}", std::process::id());
    let path = write_app(&dir, &app(&name, json!({"max_latency_ms": 2000}), 32));
    let out = supervisor()
        .arg("profile")
        .arg(&path)
        .args(["--items", "20"])
        .output()
        .expect("profile");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The quota is not task content: the profile still holds.
    write_app(&dir, &app(&name, json!({"max_latency_ms": 0.0001}), 32));
    let (ok, stderr) = start(&path, &dir.join("run"), &[]);
    assert!(!ok, "refused:\n{stderr}");
    assert!(
        stderr.contains("latency quota 0.0001 ms is below")
            && stderr.contains("gen → small → rows"),
        "names the slowest path:\n{stderr}"
    );
    assert!(!stderr.contains("profiling it"), "{stderr}");
    assert!(!dir.join("run").exists(), "no run started");
}
