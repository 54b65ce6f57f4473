//! A cgroup per app (issue 13, item 6): the app's processes run in it with the CPU
//! quota of `cpu_cores` and the memory limit of `memory_mb`; a stage killed by that
//! limit is reported as out of memory and handled by its restart policy; where cgroups
//! cannot be written the app runs and says its constraints are not enforced.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn gen_to_csv(name: &str, gen: Value, constraints: Value) -> Value {
    json!({
        "name": name, "constraints": constraints,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": gen, "restart": "temporary"},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

/// Whether this machine lets the supervisor make cgroups (root, writable hierarchy).
fn cgroups_writable(summary: &Value) -> bool {
    let c = summary["constraints"].as_str().unwrap_or("");
    if c.starts_with("constraints enforced") {
        return true;
    }
    eprintln!("skipped: cgroups are not writable here ({c})");
    false
}

/// The v1 or v2 cgroup folder of `pid` for the memory controller.
fn memory_cgroup_of(pid: i32) -> PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    for line in text.lines() {
        let parts: Vec<&str> = line.splitn(3, ':').collect();
        if parts[1].split(',').any(|c| c == "memory") {
            return Path::new("/sys/fs/cgroup/memory").join(parts[2].trim_start_matches('/'));
        }
    }
    let unified = text
        .lines()
        .find(|l| l.starts_with("0::"))
        .expect("v2 line");
    Path::new("/sys/fs/cgroup").join(unified[3..].trim_start_matches('/'))
}

#[test]
fn a_stage_over_its_memory_limit_is_reported_out_of_memory() {
    let dir = scratch("cgroup-oom");
    let name = format!("oom{}", std::process::id());
    // One 6000×4000 RGB frame is 72 MB, over the app's 64 MiB.
    let app = write_app(
        &dir,
        &gen_to_csv(
            &name,
            json!({"width": 6000, "height": 4000, "count": 3, "fps": 0}),
            json!({"memory_mb": 64}),
        ),
    );
    let out = supervisor()
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .expect("run supervisor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = read_summary(&dir.join("run"));
    if !cgroups_writable(&summary) {
        return;
    }
    // `restart: temporary`: not restarted, so the app fails.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("gen#0: out of memory: cgroup limit 64 MiB"),
        "logged and in the summary:\n{stderr}"
    );
    assert_eq!(
        summary["out_of_memory"],
        json!(["gen#0: out of memory: cgroup limit 64 MiB"]),
        "{summary}"
    );
    assert_eq!(summary["outcome"], "failed");
}

#[test]
fn the_apps_processes_run_in_its_cgroup_with_its_limits_which_goes_with_the_app() {
    let dir = scratch("cgroup-limits");
    let name = format!("limits{}", std::process::id());
    let app = write_app(
        &dir,
        &gen_to_csv(
            &name,
            json!({"width": 32, "height": 24, "count": 30, "fps": 10}),
            json!({"cpu_cores": 1.5, "memory_mb": 256}),
        ),
    );
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let label = format!(" {name}/rows#0");
    wait_for("the tail", Duration::from_secs(30), || {
        !pids_with_cmdline(&label).is_empty()
    });
    let pid = pids_with_cmdline(&label)[0];
    let group = memory_cgroup_of(pid);
    let in_app_group = group.to_string_lossy().contains(&format!("-{name}"));
    let limit = std::fs::read_to_string(group.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(group.join("memory.max")))
        .unwrap_or_default();
    let (status, stderr) = finish(sup);
    assert!(status.success(), "{stderr}");
    let summary = read_summary(&dir.join("run"));
    if !cgroups_writable(&summary) {
        return;
    }
    assert!(
        in_app_group,
        "the tail runs in the app's cgroup: {}",
        group.display()
    );
    assert_eq!(limit.trim(), (256u64 << 20).to_string());
    let cpu = summary["constraints"].as_str().unwrap_or("");
    assert!(
        cpu.contains("CPU 1.5 cores") && cpu.contains("memory 256 MiB"),
        "{cpu}"
    );
    assert!(!group.exists(), "the cgroup is removed with the app");
}

#[test]
fn without_writable_cgroups_the_app_runs_and_says_its_constraints_are_not_enforced() {
    let dir = scratch("cgroup-none");
    let name = format!("nocg{}", std::process::id());
    let app = write_app(
        &dir,
        &gen_to_csv(
            &name,
            json!({"width": 32, "height": 24, "count": 5, "fps": 0}),
            json!({"memory_mb": 256}),
        ),
    );
    let (out, summary) = run_ok_with(
        supervisor().env("SMARTPIPE_CGROUP_ROOT", dir.join("no-cgroups-here")),
        &app,
        &dir.join("run"),
    );
    assert_eq!(summary["items_out"], 5);
    let c = summary["constraints"].as_str().unwrap_or("");
    assert!(
        c.starts_with("constraints not enforced: ") && c.contains("no-cgroups-here"),
        "{c}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("constraints not enforced"),
        "in the printed summary"
    );
}
