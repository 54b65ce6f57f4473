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
    // The app's results from an earlier run: profiling must not touch them.
    let results = b"source,seq\nearlier,0\n";
    std::fs::write(dir.join("rows.csv"), results).expect("earlier results");
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
    assert_eq!(
        std::fs::read(dir.join("rows.csv")).expect("results"),
        results,
        "profiling writes its rows into its runs folder, not over the app's results"
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
        "device: cpu:0",
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

    // Beyond its grant: a demand derived from the measured profile (every process at
    // most half busy, so no single stage binds), granted half the cores its busy
    // fractions need with the planner's 10% headroom: refused before anything starts,
    // with the cores it would need.
    let profile_file = profiles[0].path();
    let prof: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&profile_file).expect("profile")).expect("json");
    let per_item = |task: &str| {
        prof["tasks"][task]["points"][0]["seconds"]
            .as_f64()
            .expect("measured")
            .max(1e-5)
    };
    // The head counts too: the quota asks for the whole rate, and a head that cannot make
    // it alone is refused for throughput, without the cores it would need.
    let (t_gen, t_small, t_rows) = (per_item("gen"), per_item("small"), per_item("rows"));
    let rate = 0.5 / t_gen.max(t_small).max(t_rows);
    let busy = rate * (t_gen + t_small + t_rows);
    let granted = (busy / 0.9 / 2.0 * 100.0).floor() / 100.0;
    let greedy = dir.join("greedy.json");
    let mut spec = app(rate * 60.0);
    spec["name"] = json!("sized"); // reuses the profile (per app name and machine)
    spec["request_frequency"] = json!(rate);
    spec["tasks"][0]["params"]["fps"] = json!(rate);
    spec["constraints"] = json!({"cpu_cores": granted});
    std::fs::write(&greedy, serde_json::to_vec(&spec).expect("json")).expect("write");
    let out = supervisor()
        .arg("start")
        .arg(&greedy)
        .arg("--run-dir")
        .arg(dir.join("refused"))
        .output()
        .expect("start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let needed: f64 = err
        .split("needs ")
        .nth(1)
        .and_then(|r| r.split(" cores").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'needs N cores' in: {err}"));
    assert!(
        err.contains(&format!("{granted:.2} granted")),
        "{err} (granted {granted})"
    );
    assert!(
        needed >= busy / 0.9 - 0.01 && needed > granted,
        "needs {needed}, busy {busy}: {err}"
    );
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

/// Issue 13: a head's work (drawing, decoding, writing its slot) is measured like any
/// stage's, so the planner sees a head that cannot keep up: a frame with 36× the
/// pixels costs the head several times more.
#[test]
fn the_profile_measures_what_a_head_costs() {
    let dir = scratch("head-cost");
    let head_seconds = |name: &str, width: u32, height: u32| {
        let spec = json!({
            "name": name,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": width, "height": height, "count": 40, "fps": 0}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": format!("{name}.csv")}}
            ]
        });
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&spec).expect("json")).expect("write");
        let out = supervisor()
            .arg("profile")
            .arg(&path)
            .args(["--items", "20"])
            .output()
            .expect("profile");
        assert!(out.status.success(), "{}", printed(&out));
        let file = std::fs::read_dir(dir.join("profiles"))
            .expect("profiles")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().contains(name))
            .expect("profile file");
        let prof: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file.path()).expect("read")).expect("json");
        prof["tasks"]["gen"]["points"][0]["seconds"]
            .as_f64()
            .expect("the head's time is measured")
    };
    let small = head_seconds("tiny", 160, 90);
    let large = head_seconds("large", 960, 540);
    assert!(small > 0.0, "a head's work is not free: {small}");
    assert!(large > 4.0 * small, "960×540 {large} s vs 160×90 {small} s");
}
