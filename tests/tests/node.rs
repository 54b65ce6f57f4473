//! One node, many apps: every supervisor of the node admits through one ledger of
//! reservations, so a request-guarantee app is admitted only into what the guaranteed
//! apps already running leave, and is refused naming the binding resource and who
//! holds it; the app already admitted keeps its quota.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// A request-guarantee app whose work is in its one body, `scale`, run by two replicas (a
/// rate change re-plans an app with the replicas it runs): the head makes small solid
/// frames and the tail prints a row each, so no single process binds before the node's
/// cores do, however a machine splits the costs (a 640×360 gradient head made 40–90 % of
/// the per-item time, and an app at 1.6 "busy cores" then needed more than one core in its
/// head: a refusal of another kind than the one these tests check).
/// The throughput quota is half the rate: admission plans for the whole request frequency
/// anyway, and a run on two cores shared with other tests is judged by what it promises.
fn app(name: &str, rate: f64, count: u64) -> Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        "request_frequency": rate,
        "quota": {"throughput_per_min": rate * 60.0 * 0.5, "max_latency_ms": 3000},
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 160, "height": 90, "count": count, "fps": rate, "pattern": "solid"}},
            {"name": "scale", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 640, "height": 360}, "replicas": 2},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["scale"], "params": {"format": "csv", "path": format!("{name}.csv")}}
        ]
    })
}

/// Profile the app at `path`; its profile and the file it is stored in.
fn profile(rt: &PrivateRuntime, path: &Path) -> (Value, std::path::PathBuf) {
    let out = rt
        .supervisor()
        .arg("profile")
        .arg(path)
        .args(["--items", "30"])
        .output()
        .expect("profile");
    assert!(out.status.success(), "{}", printed(&out));
    let dir = path.parent().expect("app folder").join("profiles");
    let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
    let file = std::fs::read_dir(&dir)
        .expect("profiles")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().contains(name))
        .expect("a profile of the app");
    let value = serde_json::from_slice(&std::fs::read(file.path()).expect("read")).expect("json");
    (value, file.path())
}

fn write(dir: &Path, name: &str, spec: &Value) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(spec).expect("json")).expect("write");
    path
}

/// The seconds one item costs in all three tasks, from an app's profile.
fn seconds_per_item(profile: &Value) -> f64 {
    ["gen", "scale", "rows"]
        .iter()
        .map(|task| {
            profile["tasks"][task]["points"][0]["seconds"]
                .as_f64()
                .expect("measured")
                .max(1e-5)
        })
        .sum()
}

/// [`app`] writing its rows to `ledger.csv`, whatever its name: apps whose tasks are the
/// same, to share one profile (only one of them runs at a time).
fn ledger_app(name: &str, rate: f64, count: u64) -> Value {
    let mut spec = app(name, rate, count);
    spec["tasks"][2]["params"]["path"] = json!("ledger.csv");
    spec
}

/// App `name` at `rate` (`count` items), written beside `calib` with `calib`'s profile as its
/// own: the three apps run the same tasks (a profile is keyed by what the tasks compute,
/// not by the rate or the count), so the planner sizes all three from one measurement and
/// the arithmetic of the test does not depend on how two profiles of a busy machine differ.
fn sharing_the_profile_of(
    dir: &Path,
    calib_profile: &Path,
    name: &str,
    spec: &Value,
) -> std::path::PathBuf {
    let path = write(dir, name, spec);
    let file_name = calib_profile
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile file name");
    let own = file_name.replace("-calib.json", &format!("-{name}.json"));
    assert_ne!(
        own, file_name,
        "profile files are named <machine>-<app>.json"
    );
    std::fs::copy(calib_profile, calib_profile.with_file_name(own)).expect("copy the profile");
    path
}

#[test]
fn a_second_guaranteed_app_that_does_not_fit_beside_the_first_is_refused_and_the_first_keeps_its_quota(
) {
    let rt = PrivateRuntime::new("node-ledger");
    let dir = scratch("node-ledger");
    // What one item costs here, from one profile of the tasks both apps run; 'a' is then
    // written at the rate that keeps about 0.7 of a core busy by that profile and 'b' at 1.35
    // cores: 'b' fits the 2-core node alone, with the planner's headroom, but not beside 'a'.
    let (calib, calib_file) = profile(&rt, &write(&dir, "calib", &ledger_app("calib", 10.0, 40)));
    let per_item = seconds_per_item(&calib);
    // 'a' runs about 8 s; 'b' is only planned.
    let rate_a = 0.7 / per_item;
    let count_a = (rate_a * 8.0) as u64;
    let a = sharing_the_profile_of(&dir, &calib_file, "a", &ledger_app("a", rate_a, count_a));
    let b_spec = ledger_app("b", 1.35 / per_item, 40);
    let b = sharing_the_profile_of(&dir, &calib_file, "b", &b_spec);
    let alone = rt.supervisor().arg("plan").arg(&b).output().expect("plan");
    assert!(
        printed(&alone).contains("\nadmitted"),
        "'b' alone fits the node:\n{}",
        printed(&alone)
    );

    let sup_a = start_in_background(&mut rt.supervisor(), &a, &dir.join("run-a"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rt
        .apps()
        .iter()
        .any(|x| x["name"] == "a" && x["state"] == "running")
    {
        assert!(Instant::now() < deadline, "'a' never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let apps = rt.apps();
    let reserved = apps[0]["reservation"]["cores"]
        .as_f64()
        .expect("a's reservation");
    assert!(reserved > 0.5 && reserved < 1.2, "{apps:?}");

    let verdict = rt.supervisor().arg("plan").arg(&b).output().expect("plan");
    assert!(
        printed(&verdict).contains("on this node now") && printed(&verdict).contains("refused"),
        "{}",
        printed(&verdict)
    );
    let refused = rt
        .supervisor()
        .arg("start")
        .arg(&b)
        .arg("--run-dir")
        .arg(dir.join("run-b"))
        .output()
        .expect("start b");
    let text = printed(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    let expected = format!("left after 'a' ({reserved:.2} reserved)");
    assert!(
        text.contains("app 'b' refused") && text.contains("needs ") && text.contains(&expected),
        "refusal names the binding resource and who holds it ({expected}):\n{text}"
    );
    assert!(!dir.join("run-b").exists(), "nothing of 'b' started");
    let status = rt.supervisor().arg("status").output().expect("status");
    assert!(
        printed(&status).contains("node: ") && printed(&status).contains("a (request-guarantee"),
        "{}",
        printed(&status)
    );

    let (exit, err) = finish(sup_a);
    assert!(exit.success(), "{err}");
    let summary = read_summary(&dir.join("run-a"));
    assert_eq!(summary["items_out"], count_a, "{summary}");
    for q in summary["qos"].as_array().expect("qos") {
        assert_eq!(q["met"], true, "'a' keeps its quota: {q}");
    }
    let after = rt.supervisor().arg("status").output().expect("status");
    assert!(
        !printed(&after).contains("a (request-guarantee"),
        "the reservation is given back when the app ends:\n{}",
        printed(&after)
    );
}

/// [`app`] printing its rows to its standard output: apps of any name run the same tasks
/// (and may run at once), so one profile serves them all.
fn printing_app(name: &str, rate: f64) -> Value {
    let mut spec = app(name, rate, (rate * 120.0) as u64);
    spec["tasks"][2]["params"] = json!({"format": "csv"});
    spec
}

/// App `name`'s reservation in `supervisor status`, once it runs.
fn reserved_cores(rt: &PrivateRuntime, name: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let apps = rt.apps();
        if let Some(cores) = apps
            .iter()
            .find(|x| x["name"] == name && x["state"] == "running")
            .and_then(|x| x["reservation"]["cores"].as_f64())
        {
            return cores;
        }
        assert!(Instant::now() < deadline, "'{name}' never ran: {apps:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `supervisor rate APP ITEMS_PER_S` (and more arguments): whether it was taken, and what it said.
fn set_rate(rt: &PrivateRuntime, app: &str, items_per_s: f64, more: &[&str]) -> (bool, String) {
    let out = rt
        .supervisor()
        .args(["rate", app, &items_per_s.to_string()])
        .args(more)
        .output()
        .expect("rate");
    (out.status.success(), printed(&out))
}

/// A request-guarantee app whose rate changes is admitted again at the new rate: a raise
/// past what the node's other guaranteed app leaves is refused naming it (the old rate and
/// reservation stay), a raise that fits raises the reservation, so an app that fitted
/// before no longer does; `--unpromised` takes a rate without a promise.
#[test]
fn a_guaranteed_app_is_admitted_again_when_its_rate_changes() {
    let rt = PrivateRuntime::new("node-readmit");
    let dir = scratch("node-readmit");
    let (calib, calib_file) = profile(&rt, &write(&dir, "calib", &printing_app("calib", 10.0)));
    let per_item = seconds_per_item(&calib);
    // In busy cores by the one profile: 'a' 0.3, 'b' 0.7 of the 2-core node.
    // 'a' gives no request_frequency: it is admitted at its source's pace (its throughput
    // quota asks for less), and that promise is what a change of rate is checked against.
    let mut spec_a = printing_app("a", 0.3 / per_item);
    spec_a
        .as_object_mut()
        .expect("an app is an object")
        .remove("request_frequency");
    let a = sharing_the_profile_of(&dir, &calib_file, "a", &spec_a);
    let b = sharing_the_profile_of(&dir, &calib_file, "b", &printing_app("b", 0.7 / per_item));
    let c = sharing_the_profile_of(&dir, &calib_file, "c", &printing_app("c", 0.6 / per_item));
    let sup_a = start_in_background(&mut rt.supervisor(), &a, &dir.join("run-a"));
    let a_before = reserved_cores(&rt, "a");
    let sup_b = start_in_background(&mut rt.supervisor(), &b, &dir.join("run-b"));
    let b_holds = reserved_cores(&rt, "b");
    let verdict = |app: &Path| {
        let out = rt.supervisor().arg("plan").arg(app).output().expect("plan");
        printed(&out)
    };
    let c_before = verdict(&c);
    assert!(
        c_before.contains("): admitted on"),
        "'c' fits beside 'a' and 'b' as they were:\n{c_before}"
    );

    // 1.3 busy cores do not fit in what 'b' leaves, though they fit the node alone (as 1.35
    // do in the test above; at 1.6 the planner's contention model may find the app too slow
    // even alone, a refusal that names no other app).
    let (taken, said) = set_rate(&rt, "a", 1.3 / per_item, &[]);
    assert!(!taken, "{said}");
    let holder = format!("after 'b' ({b_holds:.2} reserved)");
    assert!(
        said.contains("keeps its rate of")
            && said.contains(&holder)
            && said.contains("--unpromised"),
        "the refusal names the app holding the rest ({holder}):\n{said}"
    );
    assert_eq!(
        reserved_cores(&rt, "a"),
        a_before,
        "refused: nothing changed"
    );

    // Twice its rate fits: its reservation follows, and 'c' no longer fits.
    let (taken, said) = set_rate(&rt, "a", 0.6 / per_item, &[]);
    assert!(taken && said.contains("re-admitted at"), "{said}");
    let a_after = reserved_cores(&rt, "a");
    // The status is published by the run loop, a turn after the change (bounded as the
    // reservation's wait above: three heavy tests share two cores here).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let apps = rt.apps();
        let shown = apps
            .iter()
            .find(|x| x["name"] == "a")
            .and_then(|x| x["request_rate"].as_f64());
        if shown == Some(0.6 / per_item) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the rate in force ({}): {apps:?}",
            0.6 / per_item
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        a_after > 1.6 * a_before,
        "the reservation follows the rate: {a_before:.2} → {a_after:.2} cores"
    );
    let c_after = verdict(&c);
    let a_holds = format!("'a' ({a_after:.2} reserved)");
    assert!(
        c_after.contains("): refused: needs") && c_after.contains(&a_holds),
        "a promise made to 'a' at its new rate holds against 'c' ({a_holds}):\n{c_after}"
    );

    // Without a promise the rate is taken and the reservation stays.
    let (taken, said) = set_rate(&rt, "a", 1.6 / per_item, &["--unpromised"]);
    assert!(
        taken && said.contains("not re-admitted") && said.contains("not promised"),
        "{said}"
    );
    assert_eq!(reserved_cores(&rt, "a"), a_after);
    let (taken, said) = set_rate(&rt, "a", 0.0, &[]);
    assert!(!taken && said.contains("unpaced"), "{said}");

    for (name, sup) in [("a", sup_a), ("b", sup_b)] {
        let stop = rt.supervisor().args(["stop", name]).output().expect("stop");
        assert!(stop.status.success(), "{}", printed(&stop));
        let (exit, err) = finish(sup);
        assert!(exit.success(), "{name}: {err}");
    }
}

/// The CPU quota (cores × 100 ms per 100 ms period) in a cgroup quota file.
fn quota_cores(file: &str) -> f64 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let quota: f64 = text
        .split_whitespace()
        .next()
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("{file}: {text}"));
    quota / 100_000.0
}

/// A best-effort app runs in a cgroup limited to what the guaranteed apps leave: when a
/// guaranteed app is admitted beside it, its CPU quota shrinks by that app's reservation,
/// and it gets the cores back when the guaranteed app ends.
#[test]
fn a_best_effort_app_gives_way_to_a_guaranteed_app_and_takes_the_cores_back() {
    let rt = PrivateRuntime::new("node-best-effort");
    let dir = scratch("node-best-effort");
    let mut bulk = app("bulk", 5.0, 100_000);
    bulk["service_type"] = json!("best-effort");
    bulk["quota"] = json!({});
    let bulk = write(&dir, "bulk", &bulk);
    let a = write(&dir, "a", &app("a", 10.0, 60));
    profile(&rt, &a);
    let sup_bulk = start_in_background(&mut rt.supervisor(), &bulk, &dir.join("run-bulk"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let files = loop {
        let apps = rt.apps();
        if let Some(b) = apps
            .iter()
            .find(|x| x["name"] == "bulk" && x["state"] == "running")
        {
            break b["reservation"]["cpu_files"]
                .as_array()
                .cloned()
                .unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "'bulk' never ran");
        std::thread::sleep(Duration::from_millis(50));
    };
    if files.is_empty() {
        println!("test skipped: cgroups are not writable here, nothing limits 'bulk'");
        rt.supervisor()
            .args(["stop", "bulk"])
            .output()
            .expect("stop");
        let _ = finish(sup_bulk);
        return;
    }
    let file = files[0].as_str().expect("a path").to_string();
    let node = quota_cores(&file);
    assert!(node >= 1.0, "alone, 'bulk' may use the node: {node} cores");

    let sup_a = start_in_background(&mut rt.supervisor(), &a, &dir.join("run-a"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let reserved = loop {
        let apps = rt.apps();
        if let Some(r) = apps
            .iter()
            .find(|x| x["name"] == "a")
            .and_then(|x| x["reservation"]["cores"].as_f64())
        {
            break r;
        }
        assert!(Instant::now() < deadline, "'a' was never admitted");
        std::thread::sleep(Duration::from_millis(20));
    };
    let beside = quota_cores(&file);
    assert!(
        (beside - (node - reserved).max(0.1)).abs() < 0.02,
        "beside 'a' ({reserved:.2} reserved), 'bulk' gets {beside:.2} of {node:.2} cores"
    );
    let (exit, err) = finish(sup_a);
    assert!(exit.success(), "{err}");
    assert!(
        (quota_cores(&file) - node).abs() < 0.02,
        "'bulk' takes the cores back once 'a' has ended"
    );
    let stop = rt
        .supervisor()
        .args(["stop", "bulk"])
        .output()
        .expect("stop");
    assert!(stop.status.success(), "{}", printed(&stop));
    let (exit, err) = finish(sup_bulk);
    assert!(exit.success(), "{err}");
}
