//! Live tuning: a `balance` app's bottleneck GPU stage gets a bigger batch while the app
//! runs (a `Retune` command, no restart), the request rate changes while it runs, and
//! nothing is lost.

use serde_json::json;
use smartpipe_tests::*;

/// gen (320×240, as fast as it goes) → P-Net pre → P-Net → post → csv rows: on a
/// CPU-only machine inference is the bottleneck.
fn pnet_app(name: &str, service: &str, strategy: &str, count: u64) -> serde_json::Value {
    json!({
        "name": name, "service_type": service, "strategy": strategy,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 320, "height": 240, "count": count, "fps": 0}},
            {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
            {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}},
            {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["post"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

/// Every one of `count` items out, nothing lost, no process restarted: a live change
/// took effect in the running processes.
fn assert_all_delivered_without_restart(summary: &serde_json::Value, count: u64) {
    assert_eq!(summary["items_out"], count, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert!(
        summary["restarts"]
            .as_object()
            .is_some_and(|r| r.is_empty()),
        "no restart: {summary}"
    );
}

/// Run `app` to its end with the models; its summary.
fn run_to_end(dir: &std::path::Path, app: &serde_json::Value) -> serde_json::Value {
    run_to_end_with(dir, app, &[])
}

/// [`run_to_end`] with more settings in the supervisor's environment.
fn run_to_end_with(
    dir: &std::path::Path,
    app: &serde_json::Value,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let app = write_app(dir, app);
    let mut sup = supervisor();
    with_models(&mut sup).envs(env.iter().copied());
    run_ok_with(&mut sup, &app, &dir.join("run")).1
}

#[test]
fn balance_raises_the_batch_of_a_busy_gpu_stage_while_it_runs() {
    let dir = scratch("tuning");
    let count = 600;
    // On CPU cores the first trial waits 30 s by default (the next test): at once here.
    let summary = run_to_end_with(
        &dir,
        &pnet_app("tuning", "request-guarantee", "balance", count),
        &[("SMARTPIPE_CPU_FIRST_TRIAL_S", "0")],
    );
    let retunes = summary["retunes"].as_array().expect("retunes");
    let first = retunes
        .first()
        .unwrap_or_else(|| panic!("no retune: {summary}"));
    assert_eq!(first[1], "net", "{summary}");
    assert_eq!(first[2], 1, "{summary}");
    assert_eq!(first[3], 2, "{summary}");
    assert_all_delivered_without_restart(&summary, count);
    let log = std::fs::read_to_string(dir.join("run/logs/net#0.log")).expect("log");
    assert!(log.contains("batching retuned"), "the stage took it live");
}

#[test]
fn on_cpu_cores_a_short_run_tries_no_bigger_batch() {
    let dir = scratch("tuning-cpu");
    let count = 300;
    let summary = run_to_end_with(
        &dir,
        &pnet_app("tuning-cpu", "request-guarantee", "balance", count),
        &[("SMARTPIPE_DEVICE", "cpu:0")],
    );
    let retunes = summary["retunes"].as_array().expect("retunes");
    assert!(
        retunes.is_empty(),
        "no batch trial in the first 30 s on CPU cores: {summary}"
    );
    assert_all_delivered_without_restart(&summary, count);
}

#[test]
fn an_overloaded_best_effort_model_app_sheds_and_counts_instead_of_failing() {
    let dir = scratch("overload");
    let count = 300;
    // With a latency quota to protect (without one, best effort waits instead of shedding).
    let mut app = pnet_app("overload", "best-effort", "lazy", count);
    app["quota"] = json!({"max_latency_ms": 300});
    let summary = run_to_end(&dir, &app);
    let shed = summary["lost"]["shed"].as_u64().expect("shed");
    assert!(shed > 0, "the source outruns the model: {summary}");
    assert_eq!(
        summary["items_out"].as_u64().expect("out") + summary["lost_total"].as_u64().expect("lost"),
        count,
        "every item is delivered or counted lost: {summary}"
    );
}

#[test]
fn the_request_rate_changes_while_the_app_runs() {
    let runtime = PrivateRuntime::new("rate");
    let dir = scratch("rate");
    let name = format!("rate{}", std::process::id());
    // 300 items at 1 per second would take five minutes.
    let app = write_app(
        &dir,
        &json!({
            "name": name, "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 300, "fps": 1}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let sup = start_in_background(&mut runtime.supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    let rows = || std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count());
    wait_for("the first row", std::time::Duration::from_secs(20), || {
        rows() >= 2
    });
    let bad = runtime
        .supervisor()
        .args(["rate", &name, "-5"])
        .output()
        .expect("rate");
    assert!(!bad.status.success());
    assert!(
        printed(&bad).contains("must be 0 (unpaced) or between"),
        "a negative rate is refused: {}",
        printed(&bad)
    );
    let unknown = runtime
        .supervisor()
        .args(["rate", "nope", "10"])
        .output()
        .expect("rate");
    assert!(!unknown.status.success());
    assert!(printed(&unknown).contains(&name), "names the running apps");
    let out = runtime
        .supervisor()
        .args(["rate", &name, "1000"])
        .output()
        .expect("rate");
    assert!(out.status.success());
    assert!(printed(&out).contains("1000 items/s"));
    // At the new rate the rest takes well under a second; at the old one, minutes.
    wait_for("every row", std::time::Duration::from_secs(60), || {
        rows() == 301
    });
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert_eq!(csv_seqs(&csv), (0..300).collect::<Vec<_>>());
    let timeline = std::fs::read_to_string(dir.join("run").join("report.html")).unwrap_or_default();
    assert!(
        timeline.contains("request rate set to 1000 items/s"),
        "the report shows the change"
    );
}

#[test]
fn the_agents_intra_op_threads_change_while_the_app_runs_losing_nothing() {
    let runtime = PrivateRuntime::new("threads");
    let dir = scratch("threads");
    let name = format!("threads{}", std::process::id());
    let count = 200;
    let mut spec = pnet_app(&name, "request-guarantee", "lazy", count);
    spec["tasks"][0]["params"]["fps"] = json!(20);
    let app = write_app(&dir, &spec);
    let sup = start_in_background(
        with_models(runtime.supervisor().env("SMARTPIPE_NO_DAEMON", "1")),
        &app,
        &dir.join("run"),
    );
    // Items through the tail so far (P-Net rows of generated frames may be none).
    let rows = || {
        runtime
            .apps()
            .iter()
            .filter(|a| a["name"] == name)
            .flat_map(|a| a["stages"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["task"] == "rows")
            .filter_map(|s| s["metrics"]["items_out"].as_u64())
            .sum::<u64>()
    };
    let minute = std::time::Duration::from_secs(60);
    wait_for("the first items", minute, || rows() >= 3);
    let zero = runtime
        .supervisor()
        .args(["threads", &name, "0"])
        .output()
        .expect("threads");
    assert!(!zero.status.success(), "0 threads is refused");
    // The agent starts with one intra-op thread per session (one executor per core):
    // two is a change.
    let out = runtime
        .supervisor()
        .args(["threads", &name, "2"])
        .output()
        .expect("threads");
    let said = printed(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("set to 2"), "{said}");
    // The agent makes its session again (generation 1) while items keep flowing.
    let log = dir.join("run/logs/gpu-agent-cpu0#0.log");
    let renewed = || {
        std::fs::read_to_string(&log).is_ok_and(|t| {
            t.contains("intra-op threads changed")
                && t.contains("model=mtcnn-pnet")
                && t.contains("generation=1")
        })
    };
    wait_for("the agent's new session", minute, renewed);
    let at_change = rows();
    wait_for("rows after the change", minute, || rows() > at_change + 5);
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&dir.join("run"));
    assert_all_delivered_without_restart(&summary, count);
}

/// What `status --json` says task `task` of app `name` has active now (0 if not shown).
fn active_replicas(runtime: &PrivateRuntime, name: &str, task: &str) -> u64 {
    runtime
        .apps()
        .iter()
        .filter(|a| a["name"] == name)
        .flat_map(|a| a["stages"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["task"] == task)
        .filter_map(|s| s["active"].as_u64())
        .max()
        .unwrap_or(0)
}

#[test]
fn balance_adds_a_replica_to_a_busy_cpu_stage_and_removes_it_when_idle_losing_nothing() {
    let runtime = PrivateRuntime::new("scale");
    let dir = scratch("scale");
    let name = format!("scale{}", std::process::id());
    // Upscaling to 720p is this app's bottleneck, with the source as fast as it goes.
    let app = write_app(
        &dir,
        &json!({
            "name": name, "service_type": "request-guarantee", "strategy": "balance",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 320, "height": 180, "count": 100000, "fps": 0, "pattern": "solid"}},
                {"name": "big", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 1280, "height": 720}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["big"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        println!("skipped: live scaling needs 2 cores");
        return;
    }
    let sup = start_in_background(&mut runtime.supervisor(), &app, &dir.join("run"));
    let minute = std::time::Duration::from_secs(60);
    wait_for("a second replica of 'big' to get items", minute, || {
        active_replicas(&runtime, &name, "big") == 2
    });
    // A trickle: the work fits in one replica again.
    let out = runtime
        .supervisor()
        .args(["rate", &name, "2"])
        .output()
        .expect("rate");
    assert!(out.status.success());
    wait_for("'big' back to one replica", minute, || {
        active_replicas(&runtime, &name, "big") == 1
    });
    // SAFETY: asking our own child to drain.
    unsafe { libc::kill(sup.id() as i32, libc::SIGTERM) };
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&dir.join("run"));
    let changes: Vec<(String, u64, u64)> = summary["rescales"]
        .as_array()
        .expect("rescales")
        .iter()
        .map(|c| {
            (
                c[1].as_str().unwrap_or("").to_string(),
                c[2].as_u64().unwrap_or(0),
                c[3].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![("big".to_string(), 1, 2), ("big".to_string(), 2, 1)],
        "{summary}"
    );
    let added = summary["stages"]["big#1"]["items_in"].as_u64().unwrap_or(0);
    assert!(added > 0, "the added replica worked: {summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let seqs = csv_seqs(&dir.join("rows.csv"));
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
}
