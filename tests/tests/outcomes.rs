//! What a run reports when its input or its output goes wrong: a full disk (whole rows
//! only, ENOSPC named, true counts), a truncated JPEG (bad input, said so in the log and
//! the summary), a request-guarantee app whose every item was bad input (a failure, saying
//! why), logs as JSON lines, and a best-effort app with no latency quota (its producers
//! wait: nothing shed).

use serde_json::json;
use smartpipe_tests::*;
use std::process::Command;

/// Unmounts the small filesystem when the test ends, whatever happens.
struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_whole_rows_names_enospc_and_keeps_the_counts_true() {
    let dir = scratch("disk-full");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&out)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipped: cannot mount a small tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot run mount ({e})");
            return;
        }
    }
    let _mounted = Mounted(out.clone());
    // ~50 bytes a row: 20,000 rows do not fit in 64 KiB.
    let app = write_app(
        &dir,
        &json!({
            "name": "diskfull", "service_type": "request-guarantee", "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "count": 20000, "fps": 0}},
                {"name": "csv", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "out/rows.csv"}},
                {"name": "jsonl", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "jsonl", "path": "out/rows.jsonl"}}
            ]
        }),
    );
    let result = start_to_end(&mut supervisor(), &app, &dir.join("run"));
    let err = String::from_utf8_lossy(&result.stderr).to_string();
    assert_eq!(result.status.code(), Some(1), "the app fails:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("ENOSPC"), "the full disk is named:\n{err}");
    let csv = std::fs::read_to_string(out.join("rows.csv")).expect("csv");
    let jsonl = std::fs::read_to_string(out.join("rows.jsonl")).expect("jsonl");
    for (name, text) in [("csv", &csv), ("jsonl", &jsonl)] {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{name}: the last row is whole: {:?}",
            &text[text.len().saturating_sub(80)..]
        );
    }
    let csv_rows = csv_seqs(&out.join("rows.csv"));
    assert_eq!(csv_rows, (0..csv_rows.len() as u64).collect::<Vec<_>>());
    let mut json_rows = 0u64;
    for line in jsonl.lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("a whole JSON row");
        assert_eq!(row["seq"], json_rows, "{line}");
        json_rows += 1;
    }
    assert!(
        !csv_rows.is_empty() || json_rows > 0,
        "something was written before the disk filled"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["outcome"], "failed", "{summary}");
    let items = |tail: &str| {
        summary["tails"]
            .as_array()
            .expect("tails")
            .iter()
            .find(|t| t["task"] == tail)
            .and_then(|t| t["items"].as_u64())
            .unwrap_or(u64::MAX)
    };
    assert_eq!(items("csv"), csv_rows.len() as u64, "{summary}");
    assert_eq!(items("jsonl"), json_rows, "{summary}");
    assert!(
        summary["items_in"].as_u64().unwrap_or(0) >= csv_rows.len() as u64,
        "{summary}"
    );
}

fn images_app(name: &str, service: &str) -> serde_json::Value {
    json!({
        "name": name, "service_type": service,
        "tasks": [
            {"name": "pics", "kind": "head", "function": "source.images", "params": {"path": "in"}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["pics"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn a_truncated_jpeg_is_bad_input_and_the_log_and_summary_say_it_is_cut_off() {
    let dir = scratch("truncated-jpeg");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).expect("in");
    for i in 0..3u8 {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, i * 50]));
        img.save(input.join(format!("f-{i:03}.jpg"))).expect("jpeg");
    }
    let cut = input.join("f-001.jpg");
    let bytes = std::fs::read(&cut).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("truncate");
    let app = write_app(&dir, &images_app("cutjpeg", "best-effort"));
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_in"], 3, "{summary}");
    assert_eq!(summary["items_out"], 2, "{summary}");
    assert_eq!(summary["lost"]["bad_input"], 1, "{summary}");
    assert_eq!(csv_seqs(&dir.join("rows.csv")), vec![0, 2]);
    let log = std::fs::read_to_string(dir.join("run/logs/pics#0.log")).expect("log");
    assert!(
        log.contains("f-001.jpg") && log.contains("truncated JPEG"),
        "{log}"
    );
    // The summary says why without the log: the source's warning for the file.
    let why = summary["stages"]["pics#0"]["bad_input_example"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("f-001.jpg") && why.contains("truncated JPEG") && why.contains("seq=1"),
        "{summary}"
    );
}

#[test]
fn a_guaranteed_app_whose_every_item_was_bad_input_fails_saying_why() {
    let dir = scratch("all-bad");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).expect("in");
    for i in 0..2 {
        std::fs::write(
            input.join(format!("f-{i}.png")),
            b"\x89PNG\r\n\x1a\ngarbage",
        )
        .expect("corrupt");
    }
    let app = write_app(&dir, &images_app("allbad", "request-guarantee"));
    let out = start_to_end(&mut supervisor(), &app, &dir.join("run"));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("all 2 items were bad input"), "{err}");
    // The message names the stage that counted them and why it dropped the first.
    assert!(
        err.contains("counted by pics#0 (2): skipping image:")
            && err.contains("f-0.png: cannot decode image")
            && err.contains("logs/pics#0.log"),
        "{err}"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["outcome"], "failed", "{summary}");
    assert_eq!(summary["lost"]["bad_input"], 2, "{summary}");
    let report = std::fs::read_to_string(dir.join("run/report.html")).expect("report");
    assert!(
        report.contains("Bad input, per stage") && report.contains("f-0.png: cannot decode image"),
        "the report says why too"
    );
}

/// Stage logs as JSON lines (`SMARTPIPE_LOG_FORMAT=json`) are JSON on every line, and the
/// summary still quotes why an item was dropped.
#[test]
fn json_logs_are_json_lines_and_the_summary_still_says_why_input_was_bad() {
    let dir = scratch("json-logs");
    let input = dir.join("in");
    std::fs::create_dir_all(&input).expect("in");
    image::RgbImage::new(16, 12)
        .save(input.join("f-0.png"))
        .expect("png");
    std::fs::write(input.join("f-1.png"), b"\x89PNG\r\n\x1a\ngarbage").expect("corrupt");
    let app = write_app(&dir, &images_app("jsonlogs", "best-effort"));
    let (_, summary) = run_ok_with(
        supervisor().env("SMARTPIPE_LOG_FORMAT", "json"),
        &app,
        &dir.join("run"),
    );
    assert_eq!(summary["items_out"], 1, "{summary}");
    let why = summary["stages"]["pics#0"]["bad_input_example"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("f-1.png") && why.contains("cannot decode image"),
        "{summary}"
    );
    let log = std::fs::read_to_string(dir.join("run/logs/pics#0.log")).expect("log");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "the source logged its warning");
    for line in lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not a JSON line: {line}");
    }
}

#[test]
fn a_best_effort_app_with_no_quota_and_an_unpaced_source_sheds_nothing() {
    let dir = scratch("no-quota-no-shed");
    // The source makes its 300 items at once; 'slow' stops for a second after 5 of
    // them. With no latency quota there is nothing to shed for: the source waits.
    let count = 300;
    let app = write_app(
        &dir,
        &json!({
            "name": "noquota", "service_type": "best-effort", "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": 0}},
                {"name": "resize", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 32, "height": 24}},
                {"name": "slow", "kind": "cpu", "function": "test.fault", "inputs": ["resize"], "params": {"mode": "stall", "after": 5, "stall_ms": 1000}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["slow"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let (_, summary) = run_ok_with(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["items_out"], count, "{summary}");
    let waited = summary["stages"]["gen#0"]["waiting_for_slot_ns"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        waited > 0,
        "the source waited instead of shedding: {summary}"
    );
    assert_eq!(
        csv_seqs(&dir.join("rows.csv")),
        (0..count).collect::<Vec<_>>()
    );
}

#[test]
fn a_restart_intensity_that_is_not_a_number_is_refused_before_anything_runs() {
    let dir = scratch("bad-max-restarts");
    let input = dir.join("in");
    write_frames(&input, 2, 16, 16);
    let app = write_app(&dir, &images_app("badrestarts", "best-effort"));
    let out = start_to_end(
        supervisor().env("SMARTPIPE_MAX_RESTARTS", "abc"),
        &app,
        &dir.join("run"),
    );
    assert_eq!(out.status.code(), Some(1), "{}", printed(&out));
    assert!(
        printed(&out).contains("SMARTPIPE_MAX_RESTARTS=\"abc\" is not a whole number of restarts"),
        "{}",
        printed(&out)
    );
    assert!(!dir.join("run/summary.json").exists(), "nothing ran");
}
