//! A full disk under the sinks other than csv/jsonl (those are in `outcomes.rs`):
//! `image.show` PNGs (never a cut file), `image.show` video (ENOSPC named, not "Broken
//! pipe"), Parquet (ENOSPC found while the app runs, the rows delivered kept in its journal),
//! an MP4 whose join does not fit (its segments kept for `finish-outputs`). Each test mounts a
//! small tmpfs and is skipped, saying why, where `mount` is not allowed.

use serde_json::json;
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Unmounts the small filesystem when the test ends, whatever happens.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A tmpfs of `size` at `dir/out`; `None` (printed) where it cannot be mounted.
fn small_disk(dir: &Path, size: &str) -> Option<Mounted> {
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&out)
        .output();
    match mounted {
        Ok(o) if o.status.success() => Some(Mounted(out)),
        Ok(o) => {
            println!(
                "skipped: cannot mount a small tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            println!("skipped: cannot run mount ({e})");
            None
        }
    }
}

/// A request-guarantee app: `count` noise frames (incompressible) of 64×64 into `tail`.
fn app_into(dir: &Path, name: &str, count: u64, tail: serde_json::Value) -> PathBuf {
    let mut tail = tail;
    tail["name"] = json!("out");
    tail["kind"] = json!("tail");
    tail["inputs"] = json!(["gen"]);
    write_app(
        dir,
        &json!({
            "name": name, "service_type": "request-guarantee", "strategy": "lazy",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 64, "count": count, "pattern": "noise", "fps": 0}},
                tail
            ]
        }),
    )
}

/// Run the app to its end: its stderr (it must fail, exit 1, without a panic) and summary.
fn run_failing(app: &Path, run: &Path) -> (String, serde_json::Value) {
    let out = supervisor()
        .arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run)
        .output()
        .expect("run supervisor");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "the app fails:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let summary = read_summary(run);
    assert_eq!(summary["outcome"], "failed", "{summary}");
    (err, summary)
}

#[test]
fn a_full_disk_leaves_only_whole_pngs_and_names_enospc() {
    let dir = scratch("disk-full-png");
    let Some(disk) = small_disk(&dir, "64k") else {
        return;
    };
    // A 64×64 noise PNG is ~12 KiB: the sixth or so does not fit.
    let app = app_into(
        &dir,
        "fullpng",
        200,
        json!({"function": "image.show", "params": {"dir": "out/frames"}}),
    );
    let (err, summary) = run_failing(&app, &dir.join("run"));
    assert!(err.contains("ENOSPC"), "the full disk is named:\n{err}");
    let mut whole = Vec::new();
    for entry in std::fs::read_dir(disk.0.join("frames")).expect("frames") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        assert!(
            name.ends_with(".png") && !name.starts_with('.'),
            "only finished PNGs are left, not {name}"
        );
        let img = image::open(&path)
            .unwrap_or_else(|e| panic!("{name} is a whole PNG: {e}"))
            .to_rgb8();
        assert_eq!((img.width(), img.height()), (64, 64), "{name}");
        whole.push(name);
    }
    assert!(!whole.is_empty(), "some PNGs fitted before the disk filled");
    let tail = &summary["tails"][0];
    assert_eq!(tail["items"], whole.len() as u64, "{summary}");
}

#[test]
fn a_full_disk_under_a_video_is_named_enospc_not_a_broken_pipe() {
    let dir = scratch("disk-full-mp4");
    let Some(_disk) = small_disk(&dir, "64k") else {
        return;
    };
    let count = 3000;
    let app = app_into(
        &dir,
        "fullmp4",
        count,
        json!({"function": "image.show", "params": {"path": "out/v.mp4", "fps": 25}}),
    );
    let (err, summary) = run_failing(&app, &dir.join("run"));
    assert!(
        err.contains("the disk is full (ENOSPC"),
        "the full disk is named, not only the pipe:\n{err}"
    );
    let written = summary["tails"][0]["items"].as_u64().unwrap_or(u64::MAX);
    assert!(
        written < count / 2,
        "the run ended when the disk filled, not at the end of its input: {summary}"
    );
}

/// A Parquet file is written from its journal when the tail finishes; a full disk is
/// found at the first table the journal cannot take, while the app runs, and the
/// journal keeps exactly the rows the summary counts as delivered, readable (the file
/// used to be cut without a footer while its rows counted as delivered).
#[test]
fn a_full_disk_under_parquet_is_found_while_the_app_runs_and_keeps_the_rows() {
    let dir = scratch("disk-full-parquet");
    let Some(disk) = small_disk(&dir, "64k") else {
        return;
    };
    let count = 100_000;
    let app = app_into(
        &dir,
        "fullparquet",
        count,
        json!({"function": "table.print", "params": {"format": "parquet", "path": "out/rows.parquet"}}),
    );
    let (err, summary) = run_failing(&app, &dir.join("run"));
    assert!(
        err.contains("the disk is full (ENOSPC"),
        "the full disk is named:\n{err}"
    );
    let journal = disk.0.join("rows.parquet.rows.arrows");
    assert!(
        err.contains(&journal.display().to_string()),
        "the journal keeping the rows is named:\n{err}"
    );
    // Found while the source had made a small part of its items.
    let made = summary["items_in"].as_u64().unwrap_or(u64::MAX);
    assert!(made < count / 4, "failed early: {summary}");
    let kept = arrow_stream_seqs(&journal);
    assert!(!kept.is_empty(), "rows fitted before the disk filled");
    assert_eq!(
        kept,
        (0..kept.len() as u64).collect::<Vec<_>>(),
        "whole rows, in order"
    );
    assert_eq!(
        summary["tails"][0]["items"],
        kept.len() as u64,
        "delivered means kept: {summary}"
    );
    assert_eq!(
        summary["unfinished_outputs"][0]["kept_in"],
        journal.display().to_string(),
        "the run names the file it did not write and where its rows are: {summary}"
    );
}

/// An MP4 is joined from its segments at the end into a file about as large: a disk
/// with less room is refused before ffmpeg fills it, the segments are kept and named,
/// and `supervisor finish-outputs` joins them once there is room.
#[test]
fn a_video_whose_join_does_not_fit_keeps_its_segments_for_finish_outputs() {
    require_ffmpeg();
    let dir = scratch("disk-full-join");
    let Some(disk) = small_disk(&dir, "512k") else {
        return;
    };
    // 150 noise frames of 64×64 encode to about 290 KiB: they fit, twice they do not.
    let count = 150;
    let app = app_into(
        &dir,
        "fulljoin",
        count,
        json!({"function": "image.show", "params": {"path": "out/v.mp4", "fps": 25}}),
    );
    let (err, summary) = run_failing(&app, &dir.join("run"));
    assert!(
        err.contains("joining the segments of") && err.contains("are free"),
        "the join is refused for want of room:\n{err}"
    );
    let segments = disk.0.join("v.mp4.segments");
    assert!(segments.is_dir() && !disk.0.join("v.mp4").exists());
    assert_eq!(summary["tails"][0]["items"], count, "{summary}");
    assert_eq!(
        summary["unfinished_outputs"][0]["kept_in"],
        segments.display().to_string(),
        "{summary}"
    );
    let finish = || {
        supervisor()
            .arg("finish-outputs")
            .arg(&app)
            .output()
            .expect("finish-outputs")
    };
    let still_full = finish();
    assert!(!still_full.status.success(), "{}", printed(&still_full));
    assert!(segments.is_dir(), "a failed join keeps the segments");

    let grown = Command::new("mount")
        .args(["-o", "remount,size=2m"])
        .arg(&disk.0)
        .status()
        .expect("remount");
    assert!(grown.success(), "the tmpfs grows");
    let done = finish();
    assert!(done.status.success(), "{}", printed(&done));
    let frames = video_rgb(&disk.0.join("v.mp4")).len() / (64 * 64 * 3);
    assert_eq!(
        frames as u64, count,
        "every frame delivered is in the video"
    );
    assert!(!segments.exists());
}
