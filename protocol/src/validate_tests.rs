//! One test per class of app error: each asserts the message names the place.

use super::*;

fn app_with(tasks: &str) -> String {
    format!(r#"{{"name": "t", "tasks": [{tasks}]}}"#)
}

const HEAD: &str = r#"{"name": "src", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}}"#;
const TAIL: &str =
    r#"{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["src"]}"#;

fn errors(text: &str) -> Vec<String> {
    match load_app(text) {
        Ok(_) => panic!("expected errors for {text}"),
        Err(SpecErrors(errs)) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn assert_one_contains(errs: &[String], needles: &[&str]) {
    assert!(
        errs.iter().any(|e| needles.iter().all(|n| e.contains(n))),
        "no error contains all of {needles:?}: {errs:#?}"
    );
}

#[test]
fn a_minimal_app_is_valid_and_gets_defaults() {
    let app = load_app(&app_with(&format!("{HEAD}, {TAIL}"))).expect("valid");
    assert_eq!(app.service_type, crate::spec::ServiceType::BestEffort);
    assert_eq!(app.strategy, crate::spec::Strategy::Balance);
    assert_eq!(app.tasks.len(), 2);
}

#[test]
fn json_syntax_error_has_line_and_column() {
    let text = "{\n  \"name\": \"t\",\n  \"tasks\": [\n    {\"name\": \"a\",, }\n  ]\n}";
    let errs = errors(text);
    assert_one_contains(&errs, &["4:", "invalid JSON"]);
}

#[test]
fn wrong_field_type_names_the_field_path() {
    let text = app_with(r#"{"name": "src", "kind": "body", "function": "image.gen"}"#);
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[0].kind", "unknown variant `body`"]);
}

#[test]
fn unknown_top_level_field_is_rejected() {
    let text = r#"{"name": "t", "tasks": [], "qouta": {}}"#;
    let errs = errors(text);
    assert_one_contains(&errs, &["qouta"]);
}

#[test]
fn unknown_function_is_named_with_a_hint() {
    let text = app_with(&format!(
        r#"{HEAD}, {{"name": "r", "kind": "cpu", "function": "image.resise", "inputs": ["src"]}}, {TAIL}"#
    ));
    let errs = errors(&text);
    assert_one_contains(
        &errs,
        &[
            "tasks[1] (r).function",
            "image.resise",
            "did you mean 'image.resize'",
        ],
    );
}

#[test]
fn dangling_input_is_named() {
    let text = app_with(&format!(
        r#"{HEAD}, {{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["srcc"]}}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[1] (out).inputs[0]", "unknown task 'srcc'"]);
}

#[test]
fn cycle_names_its_tasks() {
    let text = app_with(&format!(
        r#"{HEAD},
        {{"name": "a", "kind": "cpu", "function": "core.forward", "inputs": ["c"]}},
        {{"name": "b", "kind": "cpu", "function": "core.forward", "inputs": ["a"]}},
        {{"name": "c", "kind": "cpu", "function": "core.forward", "inputs": ["b"]}},
        {TAIL}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["cycle", "a → b → c → a"]);
}

#[test]
fn head_with_inputs_is_named() {
    let text = app_with(&format!(
        r#"{{"name": "src", "kind": "head", "function": "image.gen", "inputs": ["out"], "params": {{"width": 4, "height": 4}}}}, {TAIL}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[0] (src).inputs", "takes no inputs"]);
}

#[test]
fn tail_feeding_others_is_named() {
    let text = app_with(&format!(
        r#"{HEAD}, {TAIL}, {{"name": "more", "kind": "tail", "function": "table.print", "inputs": ["out"]}}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[2] (more).inputs[0]", "'out' is a tail"]);
}

#[test]
fn param_of_wrong_type_is_named() {
    let text = app_with(&format!(
        r#"{HEAD}, {{"name": "r", "kind": "cpu", "function": "image.resize", "inputs": ["src"], "params": {{"width": "640", "height": 0}}}}, {TAIL}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[1] (r).params.width", "integer", "\"640\""]);
    assert_one_contains(&errs, &["tasks[1] (r).params.height", "≥ 1"]);
}

#[test]
fn missing_and_unknown_params_are_named() {
    let text = app_with(&format!(
        r#"{HEAD}, {{"name": "r", "kind": "cpu", "function": "image.resize", "inputs": ["src"], "params": {{"width": 3, "hieght": 2}}}}, {TAIL}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[1] (r).params.height", "missing required"]);
    assert_one_contains(&errs, &["tasks[1] (r).params.hieght", "unknown parameter"]);
}

#[test]
fn function_in_the_wrong_kind_is_named() {
    let text = app_with(&format!(
        r#"{HEAD}, {{"name": "out", "kind": "cpu", "function": "table.print", "inputs": ["src"]}}"#
    ));
    let errs = errors(&text);
    assert_one_contains(&errs, &["tasks[1] (out).kind", "runs as tail"]);
}

#[test]
fn duplicate_names_and_bad_numbers_are_all_reported_together() {
    let text = r#"{"name": "t", "quota": {"max_loss_pct": 120}, "tasks": [
        {"name": "src", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}},
        {"name": "src", "kind": "tail", "function": "table.print", "inputs": ["src"], "replicas": 0}
    ]}"#;
    let errs = errors(text);
    assert_one_contains(&errs, &["quota.max_loss_pct", "percentage"]);
    assert_one_contains(&errs, &["tasks[1] (src).name", "duplicate"]);
    assert_one_contains(&errs, &["tasks[1] (src).replicas", "at least 1"]);
    // The duplicate is reported once, not again as its consequences.
    assert!(
        !errs
            .iter()
            .any(|e| e.contains("own input") || e.contains("cycle")),
        "{errs:#?}"
    );
}

#[test]
fn topological_order_puts_inputs_first() {
    let app = load_app(&app_with(&format!(
        r#"{{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["mid"]}}, {{"name": "mid", "kind": "cpu", "function": "core.forward", "inputs": ["src"]}}, {HEAD}"#
    )))
    .expect("valid");
    let order = topological_order(&app);
    let pos = |name: &str| {
        order
            .iter()
            .position(|&i| app.tasks[i].name == name)
            .expect("present")
    };
    assert!(pos("src") < pos("mid"));
    assert!(pos("mid") < pos("out"));
}

#[test]
fn a_stateful_tracker_runs_as_one_replica_and_more_are_refused() {
    let track = |replicas: &str| {
        format!(
            r#"{{"name": "ids", "kind": "cpu", "function": "track.deepsort", "inputs": ["post"]{replicas}}}"#
        )
    };
    // The tracker takes a detection table: a model's, whose tasks come after (the order
    // of the file is free) so that the tracker stays tasks[1].
    let tail = r#"{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["ids"]},
        {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["src"], "params": {"model": "m"}},
        {"name": "inf", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "m"}},
        {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["inf"], "params": {"model": "m"}}"#;
    let app = load_app(&app_with(&format!("{HEAD}, {}, {tail}", track("")))).expect("valid");
    assert_eq!(app.tasks[1].replicas, Some(1), "pinned to one replica");
    let errs = errors(&app_with(&format!(
        "{HEAD}, {}, {tail}",
        track(r#", "replicas": 2"#)
    )));
    assert_one_contains(
        &errs,
        &["tasks[1] (ids).replicas", "one replica", "split a source"],
    );
}

/// Replicas of a tail writing one file each truncated it and wrote over the other's rows
/// (25 of 50 rows were left, and the run said all was well).
#[test]
fn replicas_of_a_tail_writing_one_file_are_refused() {
    let tail = |params: &str| {
        format!(
            r#"{HEAD}, {{"name": "out", "kind": "tail", "function": "{params}, "inputs": ["src"], "replicas": 2}}"#
        )
    };
    for (params, path) in [
        (
            r#"table.print", "params": {"format": "csv", "path": "o.csv"}"#,
            "o.csv",
        ),
        (r#"image.show", "params": {"path": "v.mp4"}"#, "v.mp4"),
    ] {
        let errs = errors(&app_with(&tail(params)));
        assert_one_contains(
            &errs,
            &["tasks[1] (out).replicas", path, "runs as one replica"],
        );
    }
    // One file per item, or rows on stdout: replicas are fine.
    load_app(&app_with(&tail(
        r#"image.show", "params": {"dir": "frames"}"#,
    )))
    .expect("dir");
    load_app(&app_with(&tail(
        r#"table.print", "params": {"format": "csv"}"#,
    )))
    .expect("stdout");
}

/// A Parquet file or pretty table keeps its rows in `<path>.rows.arrows` / `.rows.jsonl`
/// until it ends: another output there mixed with it and both were lost.
#[test]
fn an_output_in_the_place_of_another_ones_journal_is_refused() {
    let app = |first: &str, second: &str| {
        app_with(&format!(
            r#"{HEAD}, {{"name": "a", "kind": "tail", "function": "table.print", "inputs": ["src"], "params": {first}}},
            {{"name": "b", "kind": "tail", "function": "table.print", "inputs": ["src"], "params": {second}}}"#
        ))
    };
    let errs = errors(&app(
        r#"{"format": "jsonl", "path": "out/x.rows.arrows"}"#,
        r#"{"format": "parquet", "path": "out/x"}"#,
    ));
    assert_one_contains(
        &errs,
        &[
            "tasks[2] (b).params.path's journal",
            "out/x.rows.arrows",
            "tasks[1] (a)",
        ],
    );
    let errs = errors(&app(
        r#"{"format": "pretty", "path": "out/t"}"#,
        r#"{"format": "csv", "path": "out/t.rows.jsonl"}"#,
    ));
    assert_one_contains(
        &errs,
        &["out/t.rows.jsonl", "tasks[1] (a).params.path's journal"],
    );
    load_app(&app(
        r#"{"format": "csv", "path": "out/x.rows.arrows"}"#,
        r#"{"format": "csv", "path": "out/x"}"#,
    ))
    .expect("csv keeps no journal");
    // A video's segments folder is its journal.
    let shown = |video: &str| {
        app_with(&format!(
            r#"{HEAD}, {{"name": "v", "kind": "tail", "function": "image.show", "inputs": ["src"], "params": {{"path": "{video}"}}}},
            {{"name": "f", "kind": "tail", "function": "image.show", "inputs": ["src"], "params": {{"dir": "out/v.mp4.segments"}}}}"#
        ))
    };
    assert_one_contains(
        &errors(&shown("out/v.mp4")),
        &["out/v.mp4.segments", "tasks[1] (v).params.path's journal"],
    );
    load_app(&shown("out/v.gif")).expect("a video started over keeps no segments");
}

/// A tail keeps the first copy of an item: two inputs fed by one head lost the second's
/// rows (the detections of a frame printed beside it) while the run said all was well.
#[test]
fn a_tail_fed_the_same_items_twice_is_refused() {
    let errs = errors(&app_with(&format!(
        r#"{HEAD}, {{"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["src"], "params": {{"width": 2, "height": 2}}}},
        {{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["src", "small"]}}"#
    )));
    assert_one_contains(
        &errs,
        &[
            "tasks[2] (out).inputs[1]",
            "'src' and 'small'",
            "table.merge",
        ],
    );
    // Two heads into one tail are two streams of items: fine.
    let other = r#"{"name": "src2", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}}"#;
    load_app(&app_with(&format!(
        r#"{HEAD}, {other}, {{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["src", "src2"]}}"#
    )))
    .expect("two heads");
}

#[test]
fn a_branch_without_a_tail_is_refused_naming_the_task() {
    let resize = r#"{"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["src"], "params": {"width": 2, "height": 2}}"#;
    let errs = errors(&app_with(&format!("{HEAD}, {resize}")));
    assert_one_contains(&errs, &["tasks[1] (small)", "go nowhere", "tail"]);
    // The same task with a tail after it is fine.
    let tail = r#"{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["small"]}"#;
    load_app(&app_with(&format!("{HEAD}, {resize}, {tail}"))).expect("valid");
}

#[test]
fn a_merge_of_two_heads_is_refused_and_of_one_heads_branches_is_valid() {
    let second = r#"{"name": "other", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}}"#;
    let merge = |a: &str, b: &str| {
        format!(
            r#"{{"name": "m", "kind": "cpu", "function": "table.merge", "inputs": ["{a}", "{b}"], "params": {{"how": "concat"}}}}"#
        )
    };
    let tail = r#"{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["m"]}"#;
    let errs = errors(&app_with(&format!(
        "{HEAD}, {second}, {}, {tail}",
        merge("src", "other")
    )));
    assert_one_contains(
        &errs,
        &[
            "tasks[2] (m).inputs[1]",
            "head 'src'",
            "head 'other'",
            "never meet",
        ],
    );
    let branch = |name: &str| {
        format!(
            r#"{{"name": "{name}", "kind": "cpu", "function": "image.resize", "inputs": ["src"], "params": {{"width": 2, "height": 2}}}}"#
        )
    };
    load_app(&app_with(&format!(
        "{HEAD}, {}, {}, {}, {tail}",
        branch("x"),
        branch("y"),
        merge("x", "y")
    )))
    .expect("two branches of one head merge");
}

#[test]
fn a_video_source_limited_to_no_frame_is_refused() {
    let src = r#"{"name": "src", "kind": "head", "function": "source.video", "params": {"path": "v.mp4", "limit": 0}}"#;
    let errs = errors(&app_with(&format!("{src}, {TAIL}")));
    assert_one_contains(&errs, &["tasks[0] (src)", "limit 0 would read no frame"]);
}

#[test]
fn a_select_naming_a_column_twice_is_refused() {
    let select = r#"{"name": "cols", "kind": "cpu", "function": "table.select", "inputs": ["src"], "params": {"columns": ["seq", "text", "text"]}}"#;
    let tail = r#"{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["cols"], "params": {"format": "csv"}}"#;
    let errs = errors(&app_with(&format!("{HEAD}, {select}, {tail}")));
    assert_one_contains(&errs, &["tasks[1] (cols)", "column 'text' is named twice"]);
}

#[test]
fn a_memory_limit_too_small_to_start_is_refused() {
    let text =
        format!(r#"{{"name": "t", "constraints": {{"memory_mb": 0}}, "tasks": [{HEAD}, {TAIL}]}}"#);
    let errs = errors(&text);
    assert_one_contains(
        &errs,
        &["constraints.memory_mb", "0 MiB", "at least 16 MiB"],
    );
}

#[test]
fn two_tails_writing_one_file_are_refused() {
    let tail = |name: &str, path: &str| {
        format!(
            r#"{{"name": "{name}", "kind": "tail", "function": "table.print", "inputs": ["src"], "params": {{"format": "csv", "path": "{path}"}}}}"#
        )
    };
    let errs = errors(&app_with(&format!(
        "{HEAD}, {}, {}",
        tail("a", "out/rows.csv"),
        tail("b", "./out//rows.csv")
    )));
    assert_one_contains(
        &errs,
        &[
            "tasks[2] (b).params.path",
            "already written by tasks[1] (a).params.path",
        ],
    );
    load_app(&app_with(&format!(
        "{HEAD}, {}, {}",
        tail("a", "out/a.csv"),
        tail("b", "out/b.csv")
    )))
    .expect("two files");
}

#[test]
fn a_byte_order_mark_is_ignored_and_an_array_is_named() {
    load_app(&format!("\u{feff}{}", app_with(&format!("{HEAD}, {TAIL}")))).expect("BOM ignored");
    let errs = errors("[]");
    assert_one_contains(&errs, &["an app is a JSON object", "holds an array"]);
}

#[test]
fn a_negative_rate_is_named_once() {
    let src = r#"{"name": "src", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4, "fps": -1}}"#;
    let text = format!(r#"{{"name": "t", "request_frequency": -3, "tasks": [{src}, {TAIL}]}}"#);
    let errs = errors(&text);
    for path in ["request_frequency", "tasks[0] (src).params.fps"] {
        let n = errs
            .iter()
            .filter(|e| e.starts_with(&format!("{path}:")))
            .count();
        assert_eq!(n, 1, "{path} named once: {errs:#?}");
    }
}

#[test]
fn a_parquet_table_without_a_path_is_refused() {
    let tail = |params: &str| {
        format!(
            r#"{{"name": "out", "kind": "tail", "function": "table.print", "inputs": ["src"], "params": {params}}}"#
        )
    };
    let errs = errors(&app_with(&format!(
        "{HEAD}, {}",
        tail(r#"{"format": "parquet"}"#)
    )));
    assert_one_contains(&errs, &["tasks[1] (out)", "format parquet writes a file"]);
    load_app(&app_with(&format!(
        "{HEAD}, {}",
        tail(r#"{"format": "parquet", "path": "t.parquet"}"#)
    )))
    .expect("with a path");
}
