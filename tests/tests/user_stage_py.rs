//! User stages in Python (the `smartpipe` package over the Rust SDK, installed into
//! `.smartpipe/venv` by scripts/provision.sh): the example stage inverts frames end to
//! end; kill -9 of it in a request-guarantee app loses and duplicates nothing; a raising
//! stage fails the app with its traceback in the stage's log; `BadInput` drops one item,
//! its reason in the summary; a stage that stops
//! asking for items is taken for hung and replaced.

use serde_json::{json, Value};
use smartpipe_tests::kill::kill_9_midway_loses_and_duplicates_nothing;
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The provisioned Python, checked to import `smartpipe`.
fn python() -> PathBuf {
    let py = repo_root().join(".smartpipe/venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import smartpipe"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import smartpipe: run scripts/provision.sh (make test does)",
        py.display()
    );
    py
}

/// A supervisor command that runs `.py` stages with the provisioned Python.
fn sup() -> Command {
    let mut cmd = supervisor();
    cmd.env("SMARTPIPE_PYTHON", python());
    cmd
}

fn example() -> String {
    repo_root()
        .join("examples/stages/python/invert.py")
        .display()
        .to_string()
}

fn chain(name: &str, program: &str, count: u64, fps: u64, restart: &str) -> Value {
    json!({
        "name": name,
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 24, "count": count, "fps": fps}},
            {"name": "inv", "kind": "cpu", "program": program, "inputs": ["gen"], "restart": restart},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["inv"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

/// A Python stage in `dir` that passes items on and runs `before` (Python) first.
fn stage_script(dir: &Path, before: &str) -> String {
    let path = dir.join("stage.py");
    let text = format!(
        "import os, sys, time\nimport smartpipe\n\ndef step(ctx, item):\n{}\n    return item\n\nsys.exit(smartpipe.run_body(step, takes=['any'], makes=['any']))\n",
        before
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    std::fs::write(&path, text).expect("write the stage");
    path.display().to_string()
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn a_python_stage_inverts_frames_in_place_and_passes_others_on() {
    let _serial = lock();
    let dir = scratch("py-stage-run");
    let count = 10;
    let app = write_app(
        &dir,
        &json!({
            "name": format!("pyrun{}", std::process::id()),
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 40, "height": 30, "count": count, "pattern": "noise"}},
                {"name": "inv", "kind": "cpu", "program": example(), "inputs": ["gen"], "params": {"every": 2}},
                {"name": "orig", "kind": "tail", "function": "image.show", "inputs": ["gen"], "params": {"dir": "orig"}},
                {"name": "neg", "kind": "tail", "function": "image.show", "inputs": ["inv"], "params": {"dir": "neg"}}
            ]
        }),
    );
    let (_, summary) = run_ok_with(&mut sup(), &app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    for seq in 0..count {
        let file = format!("gen-{seq}.png");
        let (orig, neg) = (
            rgb(&dir.join("orig").join(&file)),
            rgb(&dir.join("neg").join(&file)),
        );
        assert_eq!(neg.dimensions(), (40, 30));
        for (o, n) in orig.pixels().zip(neg.pixels()) {
            let want = if seq % 2 == 0 {
                o.0.map(|c| 255 - c)
            } else {
                o.0
            };
            assert_eq!(n.0, want, "frame {seq}");
        }
    }
}

#[test]
fn kill_9_of_a_python_stage_loses_and_duplicates_nothing() {
    let _serial = lock();
    let dir = scratch("py-stage-kill");
    let name = format!("pykill{}", std::process::id());
    let count = 400;
    let app = write_app(&dir, &chain(&name, &example(), count, 150, "transient"));
    kill_9_midway_loses_and_duplicates_nothing(&mut sup(), &app, &dir, &name, "inv#0", count);
}

#[test]
fn a_raising_python_stage_fails_the_app_with_its_traceback_in_the_log() {
    let _serial = lock();
    let dir = scratch("py-stage-raise");
    let script = stage_script(
        &dir,
        "if item.seq == 3:\n    raise ValueError('boom on purpose at ' + str(item.seq))",
    );
    let app = write_app(&dir, &chain("pyraise", &script, 20, 0, "transient"));
    let out = start_to_end(&mut sup(), &app, &dir.join("run"));
    let said = printed(&out);
    assert!(
        !out.status.success(),
        "a stage error fails the app (transient): {said}"
    );
    let log = std::fs::read_to_string(dir.join("run/logs/inv#0.log")).expect("the stage log");
    assert!(
        log.contains("Traceback (most recent call last)")
            && log.contains("in step")
            && log.contains("ValueError: boom on purpose at 3"),
        "the traceback is in the stage log: {log}"
    );
}

/// `raise smartpipe.BadInput(...)` drops the one item, counted as bad input, and the run's
/// summary quotes the stage's reason for the first.
#[test]
fn a_python_stages_bad_input_is_dropped_and_the_summary_says_why() {
    let _serial = lock();
    let dir = scratch("py-stage-bad-input");
    let script = stage_script(
        &dir,
        "if item.seq % 2:\n    raise smartpipe.BadInput('odd item ' + str(item.seq) + ' refused')",
    );
    let app = write_app(&dir, &chain("pybad", &script, 6, 0, "transient"));
    let out = start_to_end(&mut sup(), &app, &dir.join("run"));
    let said = printed(&out);
    assert!(out.status.success(), "{said}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["items_out"], 3, "{summary}");
    assert_eq!(summary["lost"]["bad_input"], 3, "{summary}");
    assert!(
        said.contains("bad input:  inv#0 (3): item dropped: odd item 1 refused"),
        "{said}"
    );
}

#[test]
fn a_python_stage_that_stops_asking_for_items_is_taken_for_hung_and_replaced() {
    let _serial = lock();
    let dir = scratch("py-stage-hang");
    let name = format!("pyhang{}", std::process::id());
    let marker = dir.join("hung-once");
    // The first process sticks on item 5; its replacement finds the marker and goes on.
    let script = stage_script(
        &dir,
        &format!(
            "if item.seq == 5 and not os.path.exists({m:?}):\n    open({m:?}, 'w').close()\n    time.sleep(3600)",
            m = marker.display().to_string()
        ),
    );
    let count = 30;
    let app = write_app(&dir, &chain(&name, &script, count, 50, "transient"));
    let s = start_in_background(
        sup()
            .env("SMARTPIPE_ITEM_TIMEOUT_MS", "300")
            .env("SMARTPIPE_HANG_AFTER_MS", "600"),
        &app,
        &dir.join("run"),
    );
    let (status, err) = finish(s);
    assert!(status.success(), "{err}");
    assert!(marker.exists(), "the first process did stick");
    assert!(
        err.contains("inv#0 stopped answering"),
        "taken for hung: {err}"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["inv#0"], 1, "{summary}");
    assert_eq!(
        csv_seqs(&dir.join("rows.csv")),
        (0..count).collect::<Vec<_>>(),
        "every item once, in order"
    );
    let log = std::fs::read_to_string(dir.join("run/logs/inv#0.log")).expect("the stage log");
    assert!(log.contains("held one item for more than 300 ms"), "{log}");
}

#[test]
fn a_python_stage_reads_tensors_in_place_with_their_dtype_and_shape() {
    let _serial = lock();
    let dir = scratch("py-stage-tensor");
    // bench.blob's bytes: byte i of item seq is checked by bench.sink; the stage checks the
    // view's type, shape and first bytes against what it sees through `bytes()`.
    let script = stage_script(
        &dir,
        "t = item.tensor()\nassert t is not None and t.dtype.name == 'uint8' and t.shape == (4096,), (t.dtype, t.shape)\nassert not t.flags.writeable, 'inputs are read-only'\nassert item.frame() is None and item.table_ipc() is None",
    );
    let app = write_app(
        &dir,
        &json!({
            "name": "pytensor",
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "bench.blob", "params": {"bytes": 4096, "count": 50}},
                {"name": "inv", "kind": "cpu", "program": script, "inputs": ["gen"]},
                {"name": "sink", "kind": "tail", "function": "bench.sink", "inputs": ["inv"]}
            ]
        }),
    );
    let (_, summary) = run_ok_with(&mut sup(), &app, &dir.join("run"));
    assert_eq!(summary["tails"][0]["items"], 50, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
}

#[test]
fn a_python_stage_filters_a_detection_table_with_pyarrow_like_the_built_in_filter() {
    let _serial = lock();
    let root = repo_root();
    let dir = scratch("py-stage-table");
    let confident = root.join("examples/stages/python/confident.py");
    // MTCNN's detection tables of three video frames (faces scored 0.92 and 0.99+),
    // filtered by the Python stage and by table.filter.
    let app = |name: &str, filter: Value| {
        let mut tasks = vec![
            json!({"name": "images", "kind": "head", "function": "source.video",
            "params": {"path": root.join(".smartpipe/media/faces.mp4"), "limit": 3}}),
        ];
        let mut prev = "images".to_string();
        for model in ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"] {
            for (step, kind, function) in [
                ("pre", "cpu", "model.preprocess"),
                ("net", "gpu", "model.inference"),
                ("post", "cpu", "model.postprocess"),
            ] {
                let task = format!("{model}-{step}");
                tasks.push(json!({"name": task, "kind": kind, "function": function,
                    "inputs": [prev], "params": {"model": model}}));
                prev = task;
            }
        }
        tasks.push(filter);
        tasks.push(
            json!({"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["keep"],
            "params": {"format": "csv", "path": format!("{name}.csv")}}),
        );
        json!({"name": name, "service_type": "request-guarantee", "tasks": tasks})
    };
    let run = |name: &str, filter: Value| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("dir");
        let path = write_app(&sub, &app(name, filter));
        let mut cmd = sup();
        with_models(&mut cmd).env(
            "ORT_DYLIB_PATH",
            root.join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
        );
        let (_, summary) = run_ok_with(&mut cmd, &path, &sub.join("run"));
        assert_eq!(summary["lost_total"], 0, "{summary}");
        std::fs::read_to_string(sub.join(format!("{name}.csv"))).expect("csv")
    };
    let python = run(
        "pyfilter",
        json!({"name": "keep", "kind": "cpu", "program": confident, "inputs": ["mtcnn-onet-post"], "params": {"min_score": 0.95}}),
    );
    let built_in = run(
        "filter",
        json!({"name": "keep", "kind": "cpu", "function": "table.filter", "inputs": ["mtcnn-onet-post"], "params": {"where": "score >= 0.95"}}),
    );
    let unfiltered = run(
        "pyall",
        json!({"name": "keep", "kind": "cpu", "program": confident, "inputs": ["mtcnn-onet-post"], "params": {"min_score": 0.0}}),
    );
    let rows = python.lines().count();
    assert!(rows > 1, "some faces kept:\n{python}");
    assert!(
        unfiltered.lines().count() > rows,
        "some faces dropped:\n{unfiltered}"
    );
    assert_eq!(python, built_in, "the same rows as table.filter");
}

/// A stage that starts a process of its own in a new session and never ends it: when the
/// app ends, what is left in its cgroup is killed (it ran on under init and kept the
/// cgroup from being removed).
#[test]
fn what_a_stage_started_and_left_running_is_killed_when_the_app_ends() {
    let _serial = lock();
    let dir = scratch("py-stage-leftover");
    let marker = format!("{}", 40_000 + std::process::id() % 20_000);
    let script = stage_script(
        &dir,
        &format!(
            "if item.seq == 0:\n    import subprocess\n    subprocess.Popen(['sleep', '{marker}'], start_new_session=True)"
        ),
    );
    let app = write_app(&dir, &chain("pyleftover", &script, 5, 0, "transient"));
    let out = start_to_end(&mut sup(), &app, &dir.join("run"));
    assert!(out.status.success(), "{}", printed(&out));
    let summary = read_summary(&dir.join("run"));
    let enforced = summary["constraints"]
        .as_str()
        .is_some_and(|c| c.starts_with("constraints enforced"));
    let left = pids_with_cmdline(&format!("sleep {marker}"));
    if !enforced {
        for pid in left {
            // SAFETY: ending the sleep this test's stage started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        println!(
            "test skipped: no cgroup here ({}), so nothing can find what a stage left",
            summary["constraints"]
        );
        return;
    }
    assert_eq!(
        left,
        Vec::<i32>::new(),
        "the stage's sleep outlived the app"
    );
}
