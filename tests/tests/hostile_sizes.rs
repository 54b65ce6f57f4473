//! Hostile inputs (issue 17, items 1 and 6): image headers that claim billions of pixels,
//! size parameters past any memory, and numbers at the edges of their types. Each is
//! refused or counted with its sizes named; none takes a supervisor, or a daemon's other
//! apps, down.

use serde_json::json;
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn corpus(name: &str) -> PathBuf {
    repo_root().join("tests/corpus/images").join(name)
}

/// A folder of two good PNGs, the 429-byte PNG whose IHDR claims 60000×60000 and a JPEG
/// whose SOF was patched to 65500×65500, in that file-name order.
fn hostile_folder(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    write_frames(&input, 2, 64, 48);
    for (from, to) in [
        ("bomb-60000x60000.png", "f-002-bomb.png"),
        ("sof-65500x65500.jpg", "f-003-sof.jpg"),
    ] {
        std::fs::copy(corpus(from), input.join(to)).expect("copy corpus file");
    }
    input
}

fn images_app(dir: &Path, name: &str, input: &Path) -> PathBuf {
    write_app(
        dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "pics", "kind": "head", "function": "source.images", "params": {"path": input}},
                {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["pics"], "params": {"width": 32, "height": 24}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    )
}

#[test]
fn a_bomb_png_and_a_patched_jpeg_are_counted_as_bad_input_with_their_sizes() {
    let dir = scratch("hostile-headers");
    let input = hostile_folder(&dir);
    let app = images_app(&dir, "bombs", &input);
    // The plan sizes the pool from the good images only: 64×48 RGB slots.
    let plan = supervisor()
        .args(["plan", "--json"])
        .arg(&app)
        .output()
        .expect("plan");
    // The JSON comes first; a note on profiles may follow it.
    let plan: serde_json::Value = serde_json::Deserializer::from_slice(&plan.stdout)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .expect("plan JSON");
    assert_eq!(
        plan["stages"][0]["pool"]["slot_size"],
        64 * 48 * 3,
        "{plan}"
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_in"], 4, "{summary}");
    assert_eq!(summary["items_out"], 2, "{summary}");
    assert_eq!(summary["lost"]["bad_input"], 2, "{summary}");
    let seqs = csv_seqs(&dir.join("rows.csv"));
    assert_eq!(seqs, [0, 1]);
    let log = std::fs::read_to_string(dir.join("run/logs/pics#0.log")).expect("head log");
    for said in [
        "f-002-bomb.png: 60000×60000 = 3.6 Gpx exceeds the 100 Mpx limit (SMARTPIPE_MAX_PIXELS)",
        "f-003-sof.jpg: 65500×65500 = 4.2 Gpx exceeds the 100 Mpx limit (SMARTPIPE_MAX_PIXELS)",
    ] {
        assert!(
            log.contains(said),
            "the head log should say {said:?}:\n{log}"
        );
    }
}

#[test]
fn the_pixel_limit_is_set_by_the_environment() {
    let dir = scratch("hostile-limit-env");
    let input = dir.join("in");
    write_frames(&input, 3, 64, 48);
    let app = images_app(&dir, "limited", &input);
    // 64×48 = 3,072 px: a 3,000-pixel limit refuses every image, by name and size (and a
    // request-guarantee app that delivered nothing has failed).
    let out = supervisor()
        .env("SMARTPIPE_MAX_PIXELS", "3000")
        .arg("start")
        .arg(&app)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .expect("start");
    assert_eq!(out.status.code(), Some(1), "{}", printed(&out));
    assert!(
        printed(&out).contains("all 3 items were bad input"),
        "{}",
        printed(&out)
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["lost"]["bad_input"], 3, "{summary}");
    let log = std::fs::read_to_string(dir.join("run/logs/pics#0.log")).expect("head log");
    assert!(
        log.contains("f-000.png: 64×48 = 3 kpx exceeds the 3 kpx limit (SMARTPIPE_MAX_PIXELS)"),
        "{log}"
    );
    // A setting that is not a size is refused before anything starts.
    let out = supervisor()
        .env("SMARTPIPE_MAX_PIXELS", "lots")
        .arg("validate")
        .arg(&app)
        .output()
        .expect("validate");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        printed(&out).contains("SMARTPIPE_MAX_PIXELS=\"lots\" is not a size"),
        "{}",
        printed(&out)
    );
}

/// An app with one task changed by `edit`.
fn gen_app(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut app = json!({
        "name": "extreme",
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": 10}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 32, "height": 24}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    });
    edit(&mut app);
    std::fs::create_dir_all(dir).expect("app dir");
    write_app(dir, &app)
}

/// A change to an app's JSON.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

#[test]
fn validate_refuses_extreme_numbers_that_start_would_refuse_or_crash_on() {
    let dir = scratch("hostile-numbers");
    let long = "n".repeat(300);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "fps",
            Box::new(|a| a["tasks"][0]["params"]["fps"] = json!(1e-320)),
            "tasks[0] (gen).params.fps: must be 0 (unpaced) or between 0.001 and 1000000 items per second",
        ),
        (
            "replicas",
            Box::new(|a| a["tasks"][1]["replicas"] = json!(4294967295u64)),
            "the app needs 4294967297 processes",
        ),
        (
            "batch",
            Box::new(|a| a["tasks"][1]["batch"] = json!({"size": 2147483648u64})),
            "tasks[1] (small).batch.size: must be at most 1024",
        ),
        (
            "gen-height",
            Box::new(|a| a["tasks"][0]["params"]["height"] = json!(8589934592u64)),
            "tasks[0] (gen).params.height: must be at most 4294967295 (32 bits)",
        ),
        (
            "resize-width",
            Box::new(|a| a["tasks"][1]["params"]["width"] = json!(4294967295u64)),
            "tasks[1] (small).params: the frame: 4294967295×24 = 103 Gpx exceeds the 100 Mpx limit",
        ),
        (
            "max-wait",
            Box::new(|a| a["tasks"][1]["batch"] = json!({"size": 2, "max_wait_ms": 1e300})),
            "tasks[1] (small).batch.max_wait_ms: must be at most 3600000",
        ),
        (
            "rate",
            Box::new(|a| a["request_frequency"] = json!(1e-320)),
            "request_frequency: must be 0 (unpaced) or between",
        ),
        (
            "name",
            Box::new(move |a| a["name"] = json!(long)),
            "name: is 300 bytes long; at most 100",
        ),
        (
            "where",
            Box::new(|a| {
                a["tasks"]
                    .as_array_mut()
                    .expect("tasks")
                    .insert(2, json!({"name": "few", "kind": "cpu", "function": "table.filter", "inputs": ["post"], "params": {"where": "width >"}}));
                a["tasks"][3]["inputs"] = json!(["few"]);
                // A filter takes a table: a detector's, whose tasks come last (any order).
                let tasks = a["tasks"].as_array_mut().expect("tasks");
                tasks.push(json!({"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["small"], "params": {"model": "mtcnn-pnet"}}));
                tasks.push(json!({"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}}));
                tasks.push(json!({"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}}));
            }),
            "tasks[2] (few).params.where: predicate `width >`, at character",
        ),
        (
            "tail-replicas",
            Box::new(|a| {
                a["tasks"][2]["replicas"] = json!(2);
                a["tasks"][2]["params"] = json!({"format": "csv"});
            }),
            "tasks[2] (rows).replicas: a tail of a request-guarantee app runs as one replica",
        ),
        (
            "tail-replicas-one-file",
            Box::new(|a| a["tasks"][2]["replicas"] = json!(2)),
            "tasks[2] (rows).replicas: replicas of this tail would each write rows.csv over the others' output",
        ),
        (
            "model",
            Box::new(|a| {
                a["tasks"][1] = json!({"name": "small", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "no-such-model"}});
            }),
            "tasks[1] (small).params.model",
        ),
    ];
    for (case, edit, said) in cases {
        let app = gen_app(&dir.join(case), edit);
        let out = with_models(&mut supervisor())
            .arg("validate")
            .arg(&app)
            .output()
            .expect("validate");
        let text = printed(&out);
        assert_eq!(out.status.code(), Some(1), "{case}: refused\n{text}");
        assert!(!text.contains("panicked"), "{case}: no panic\n{text}");
        assert!(text.contains(said), "{case}: should say {said:?}\n{text}");
    }
    // The unedited app is valid: the cases above are refused for their one change.
    let app = gen_app(&dir.join("plain"), |_| {});
    let out = supervisor()
        .arg("validate")
        .arg(&app)
        .output()
        .expect("validate");
    assert!(out.status.success(), "{}", printed(&out));
}

#[test]
fn a_daemons_other_app_survives_an_oversized_app_sent_to_it() {
    let rt = PrivateRuntime::new("hostile-daemon");
    let dir = scratch("hostile-daemon");
    let name = format!("calm{}", std::process::id());
    std::fs::create_dir_all(dir.join("calm")).expect("dir");
    let calm = write_app(
        &dir.join("calm"),
        &json!({
            "name": name,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 1000000, "fps": 50}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let detach = |app: &Path, run: &str| {
        rt.supervisor()
            .arg("start")
            .arg(app)
            .arg("--detach")
            .arg("--run-dir")
            .arg(dir.join(run))
            .output()
            .expect("start --detach")
    };
    let out = detach(&calm, "run-calm");
    assert!(out.status.success(), "{}", printed(&out));
    let daemon = rt.supervisor_pids();
    assert_eq!(daemon.len(), 1, "one daemon");
    // The bomb folder goes into the daemon: it runs, counting both images as bad input.
    let bombs_dir = dir.join("bombs");
    let input = hostile_folder(&bombs_dir);
    let bombs = images_app(&bombs_dir, &format!("bombs{}", std::process::id()), &input);
    let out = detach(&bombs, "run-bombs");
    assert!(out.status.success(), "{}", printed(&out));
    wait_for("the bomb app's summary", Duration::from_secs(60), || {
        dir.join("run-bombs/summary.json").exists()
    });
    let summary = read_summary(&dir.join("run-bombs"));
    assert_eq!(summary["lost"]["bad_input"], 2, "{summary}");
    // Sizes past the limit are refused by the CLI, naming them; nothing reaches the daemon.
    let huge = gen_app(&dir.join("huge"), |a| {
        a["name"] = json!("huge");
        a["tasks"][1]["params"]["width"] = json!(4294967295u64);
    });
    let out = detach(&huge, "run-huge");
    assert_eq!(out.status.code(), Some(1), "{}", printed(&out));
    assert!(
        printed(&out).contains("exceeds the 100 Mpx limit"),
        "{}",
        printed(&out)
    );
    assert!(
        !printed(&out).trim_end().ends_with("error:"),
        "{}",
        printed(&out)
    );
    // The first app still runs in the same daemon, and keeps writing.
    assert_eq!(
        rt.supervisor_pids(),
        daemon,
        "the same daemon, no second one"
    );
    let rows = dir.join("calm/rows.csv");
    let before = csv_seqs(&rows).len();
    wait_for(
        "the calm app to write more rows",
        Duration::from_secs(30),
        || csv_seqs(&rows).len() > before,
    );
    let state = rt
        .apps()
        .iter()
        .find(|a| a["name"] == name.as_str())
        .map(|a| a["state"].clone());
    assert_eq!(state, Some(json!("running")));
}
