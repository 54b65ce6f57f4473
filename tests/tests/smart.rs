//! Profiling, planning and admission through the CLI: `supervisor profile` measures
//! the app on this machine, `plan` shows the strategies' plans, and `start` refuses a
//! guaranteed app the planner cannot serve before anything starts.

use serde_json::json;
use smartpipe_tests::*;

fn app(throughput_per_min: f64) -> serde_json::Value {
    json!({
        "name": "sized",
        "service_type": "request-guarantee",
        "request_frequency": 10,
        "quota": {"throughput_per_min": throughput_per_min, "max_latency_ms": 2000},
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 320, "height": 240, "count": 40, "fps": 10}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 32, "height": 24}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn profile_then_plan_then_admission() {
    let dir = scratch("smart");
    let path = write_app(&dir, &app(600.0));
    let out = supervisor()
        .args(["profile"])
        .arg(&path)
        .args(["--items", "30"])
        .output()
        .expect("profile");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("α (ms)") && text.contains("small"),
        "fits printed:\n{text}"
    );
    let profiles: Vec<_> = std::fs::read_dir(dir.join("profiles"))
        .expect("profiles dir")
        .flatten()
        .collect();
    assert_eq!(
        profiles.len(),
        1,
        "one profile file for this machine and app"
    );

    let plan = supervisor().arg("plan").arg(&path).output().expect("plan");
    let text = String::from_utf8_lossy(&plan.stdout);
    for needle in [
        "strategy lazy:",
        "strategy balance:",
        "strategy strong:",
        "predicted:",
        "admitted",
    ] {
        assert!(
            text.contains(needle),
            "plan output lacks {needle:?}:\n{text}"
        );
    }

    // Within the machine: admitted, sized by the plan, and it meets its quota.
    let (out, summary) = run_ok(&path, &dir.join("run"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan (Balance)"));
    assert_eq!(summary["items_out"], 40);
    assert!(summary["qos"]
        .as_array()
        .expect("qos")
        .iter()
        .any(|q| q["metric"] == "latency_p99_ms" && q["met"] == true));

    // Far beyond it: refused before anything starts, with the binding resource.
    let greedy = dir.join("greedy.json");
    let mut spec = app(6_000_000.0);
    spec["request_frequency"] = json!(100000);
    std::fs::write(&greedy, serde_json::to_vec(&spec).expect("json")).expect("write");
    // The profile is per app name and machine, so the greedy app reuses it.
    let out = supervisor()
        .arg("start")
        .arg(&greedy)
        .arg("--run-dir")
        .arg(dir.join("refused"))
        .output()
        .expect("start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused") && err.contains("cores"), "{err}");
    assert!(!dir.join("refused").exists(), "nothing started");

    // The same demand as best effort: admitted with its shortfall, and it runs.
    spec["service_type"] = json!("best-effort");
    std::fs::write(&greedy, serde_json::to_vec(&spec).expect("json")).expect("write");
    let out = supervisor()
        .arg("start")
        .arg(&greedy)
        .arg("--run-dir")
        .arg(dir.join("best-effort"))
        .output()
        .expect("start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("shortfall"), "{err}");
}
