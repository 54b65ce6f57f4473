//! User-written stages (a task naming a `program` built on the `stage` SDK): the
//! example Rust stage runs in an app and its output is checked pixel by pixel; kill -9
//! of it in a request-guarantee app loses and duplicates nothing; `validate` and
//! `start` refuse, before anything runs, a program whose kinds do not fit its
//! neighbours, one that is missing, not executable, speaks another protocol version or
//! does not answer.

use serde_json::{json, Value};
use smartpipe_tests::kill::kill_9_midway_loses_and_duplicates_nothing;
use smartpipe_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// These tests start apps and load the CPU: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `supervisor validate APP`: (success, everything printed).
fn validate(app: &Path) -> (bool, String) {
    let out = supervisor()
        .arg("validate")
        .arg(app)
        .output()
        .expect("run supervisor validate");
    (out.status.success(), printed(&out))
}

/// `supervisor start APP` to its end: (success, everything printed).
fn start(app: &Path, run_dir: &Path) -> (bool, String) {
    let out = supervisor()
        .arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("run supervisor start");
    (out.status.success(), printed(&out))
}

/// An app: a frame source, one task in the middle, a CSV tail.
fn chain(name: &str, service: &str, middle: Value, count: u64, fps: u64) -> Value {
    json!({
        "name": name,
        "service_type": service,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 24, "count": count, "fps": fps}},
            middle,
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["inv"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

fn invert_task() -> Value {
    json!({"name": "inv", "kind": "cpu", "program": "stage-invert", "inputs": ["gen"]})
}

/// A shell script in `dir` (mode `mode`) that answers the describe flag with `answer`.
fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn a_rust_user_stage_runs_in_an_app_and_inverts_every_other_frame() {
    let _serial = lock();
    let dir = scratch("user-stage-run");
    let count = 12;
    let app = write_app(
        &dir,
        &json!({
            "name": format!("userrun{}", std::process::id()),
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 40, "height": 30, "count": count, "pattern": "noise"}},
                {"name": "inv", "kind": "cpu", "program": {"path": "stage-invert", "args": []}, "inputs": ["gen"], "params": {"every": 2}},
                {"name": "orig", "kind": "tail", "function": "image.show", "inputs": ["gen"], "params": {"dir": "orig"}},
                {"name": "neg", "kind": "tail", "function": "image.show", "inputs": ["inv"], "params": {"dir": "neg"}}
            ]
        }),
    );
    let (ok, said) = validate(&app);
    assert!(ok, "{said}");
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    for seq in 0..count {
        let file = format!("gen-{seq}.png");
        let (orig, neg) = (
            rgb(&dir.join("orig").join(&file)),
            rgb(&dir.join("neg").join(&file)),
        );
        assert_eq!(orig.dimensions(), (40, 30));
        assert_eq!(neg.dimensions(), orig.dimensions());
        for (o, n) in orig.pixels().zip(neg.pixels()) {
            let want = if seq % 2 == 0 {
                o.0.map(|c| 255 - c)
            } else {
                o.0
            };
            assert_eq!(
                n.0, want,
                "frame {seq}: inverted when even, forwarded when odd"
            );
        }
    }
    let log = std::fs::read_to_string(dir.join("run/logs/inv#0.log")).expect("the stage's log");
    assert!(log.contains("started"), "the user stage logs: {log}");
}

#[test]
fn kill_9_of_a_rust_user_stage_loses_and_duplicates_nothing() {
    let _serial = lock();
    let dir = scratch("user-stage-kill");
    let name = format!("userkill{}", std::process::id());
    let count = 600;
    let app = write_app(
        &dir,
        &chain(&name, "request-guarantee", invert_task(), count, 200),
    );
    kill_9_midway_loses_and_duplicates_nothing(
        &mut supervisor(),
        &app,
        &dir,
        &name,
        "inv#0",
        count,
    );
}

#[test]
fn kinds_that_do_not_fit_a_neighbour_are_a_validate_error_naming_both() {
    let _serial = lock();
    let dir = scratch("user-stage-kinds");
    // A frame-making program into a table function.
    let app = write_app(
        &dir,
        &json!({
            "name": "kinds",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "count": 1}},
                invert_task(),
                {"name": "keep", "kind": "cpu", "function": "table.filter", "inputs": ["inv"], "params": {"where": "score > 0.5"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["keep"]}
            ]
        }),
    );
    let (ok, said) = validate(&app);
    assert!(!ok, "validate refuses: {said}");
    assert!(
        said.contains("'keep' (table.filter) takes table")
            && said.contains("'inv' (program ")
            && said.contains("makes frame"),
        "names both tasks and the kinds: {said}"
    );
    // A frame-taking program fed with tensors.
    let app = write_app(
        &dir,
        &json!({
            "name": "kinds",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "bench.blob", "params": {"bytes": 64, "count": 1}},
                invert_task(),
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["inv"]}
            ]
        }),
    );
    let (ok, said) = validate(&app);
    assert!(!ok, "validate refuses: {said}");
    assert!(
        said.contains("'inv' (program ")
            && said.contains("takes frame but its input 'gen' (bench.blob) makes tensor"),
        "names both tasks and the kinds: {said}"
    );
    let (ok, said) = start(&app, &dir.join("run"));
    assert!(
        !ok && said.contains("makes tensor"),
        "start refuses too: {said}"
    );
    assert!(!dir.join("run/summary.json").exists(), "nothing ran");
}

/// Each broken program: (file name, script body, mode, what the error must say).
const BROKEN: &[(&str, &str, u32, &str)] = &[
    ("absent", "", 0, "does not exist"),
    ("plain", "exit 0", 0o644, "is not executable (mode 644)"),
    (
        "old-version",
        r#"echo '{"protocol": 6, "takes": ["frame"], "makes": ["frame"]}'"#,
        0o755,
        "speaks protocol version 6 but this supervisor speaks",
    ),
    (
        "not-a-stage",
        "echo hello",
        0o755,
        "printed no stage declaration",
    ),
    (
        "silent",
        "exec sleep 30",
        0o755,
        "did not answer --smartpipe-describe within 500 ms",
    ),
    (
        "silent-parent",
        "sleep 4217 & wait",
        0o755,
        "did not answer --smartpipe-describe within 500 ms",
    ),
];

/// Processes whose command line is exactly `args` (a zombie's is empty).
fn running(args: &[&str]) -> Vec<String> {
    let wanted: String = args.iter().map(|a| format!("{a}\0")).collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_missing_unexecutable_foreign_or_silent_program_is_refused_before_the_app_runs() {
    let _serial = lock();
    for (file, body, mode, says) in BROKEN {
        let dir = scratch(&format!("user-stage-broken-{file}"));
        let stages = dir.join("stages");
        std::fs::create_dir_all(&stages).expect("mkdir");
        if *mode != 0 {
            script(&stages, file, body, *mode);
        }
        let task = json!({"name": "inv", "kind": "cpu", "program": format!("stages/{file}"), "inputs": ["gen"]});
        let app = write_app(&dir, &chain("broken", "best-effort", task, 3, 0));
        for (what, cmd) in [("validate", "validate"), ("start", "start")] {
            let out = supervisor()
                .env("SMARTPIPE_DESCRIBE_TIMEOUT_MS", "500")
                .arg(cmd)
                .arg(&app)
                .args(if cmd == "start" {
                    vec![
                        "--run-dir".to_string(),
                        dir.join("run").display().to_string(),
                    ]
                } else {
                    vec![]
                })
                .output()
                .expect("run the supervisor");
            let said = printed(&out);
            assert!(!out.status.success(), "{what} refuses {file}: {said}");
            assert!(
                said.contains("tasks[1] (inv).program") && said.contains(says),
                "{what} of {file} says where and why ('{says}'): {said}"
            );
        }
        assert!(!dir.join("rows.csv").exists(), "{file}: nothing ran");
    }
    // A silent program is stopped with what it started.
    assert_eq!(
        running(&["sleep", "4217"]),
        Vec::<String>::new(),
        "its child is left"
    );
}
