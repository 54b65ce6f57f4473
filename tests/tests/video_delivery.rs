//! A killed video tail: an MP4 (MOV, MKV, AVI, WebM) continues in segments and holds
//! every frame once, in order; a container that cannot be resumed keeps the earlier
//! process's frames in a part and says so.

use serde_json::json;
use smartpipe_tests::kill::{assert_nothing_left, kill_and_wait_for_replacement};
use smartpipe_tests::solid::solid_seqs;
use smartpipe_tests::*;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Supervisors clean each other's stale runtime files and these tests load the CPU:
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Run a request-guarantee app `name` in `dir`: `image.gen` of `count` 50-per-second
/// frames of `gen` params (`width`, `height`, `pattern`) into `image.show {path: video}`;
/// kill -9 its tail once `started` holds, and let it finish. Returns the summary, the
/// console and the supervisor's pid.
fn run_with_tail_killed(
    dir: &Path,
    name: &str,
    gen: serde_json::Value,
    video: &str,
    started: impl Fn() -> bool,
) -> (serde_json::Value, String, u32) {
    let mut params = gen;
    params["fps"] = json!(50);
    let app = write_app(
        dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": params},
                {"name": "video", "kind": "tail", "function": "image.show", "inputs": ["gen"], "params": {"path": video}}
            ]
        }),
    );
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    wait_for(
        "frames sent to the encoder",
        Duration::from_secs(60),
        started,
    );
    kill_and_wait_for_replacement(name, "video#0");
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["video#0"], 1, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
    (summary, err, pid)
}

/// An MP4 is readable only once its index is written at the end and cannot be cut back
/// to a frame: a killed tail's restarted process used to start a new file, the earlier
/// frames in a part beside it (and one frame in both). The tail now encodes into
/// segments that a restarted process continues, skipping the frames sent again that the
/// earlier segment holds, and joins them at the end: one file with every frame once, in
/// order, as an uninterrupted run's.
#[test]
fn a_killed_mp4_tail_continues_its_video_with_every_frame_once_in_order() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("kill-mp4");
    let name = format!("killmp4{}", std::process::id());
    let count = 200u64;
    let listed = dir.join("video.mp4.segments/0.frames");
    let (summary, err, pid) = run_with_tail_killed(
        &dir,
        &name,
        json!({"width": 64, "height": 48, "count": count, "pattern": "solid"}),
        "video.mp4",
        || std::fs::read_to_string(&listed).is_ok_and(|t| t.lines().count() > 60),
    );
    assert!(
        summary["restarted_outputs"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "the video was resumed, nothing to point at: {summary}"
    );
    assert!(!err.contains("restarted:"), "{err}");
    let expected: Vec<u64> = (0..count).map(|s| s % 128).collect();
    assert_eq!(
        solid_seqs(&dir.join("video.mp4"), 64, 48),
        expected,
        "every frame once, in order"
    );
    assert!(!dir.join("video.part-1.mp4").exists(), "no part is left");
    assert!(
        !dir.join("video.mp4.segments").exists(),
        "the segments are removed once joined"
    );
    assert_nothing_left(&name, &summary, pid);
}

/// A video in a container that cannot be resumed (MPEG-TS here; also `.flv`…): a tail
/// killed mid-run used to have its restarted process write the file over, so the items
/// before the kill were gone while the summary said every item was out. The restarted
/// tail moves the earlier file aside as `video.part-1.ts`, the console and summary.json
/// say so, and the two files hold every frame (a frame written just before the kill can
/// be in both).
#[test]
fn a_killed_video_tail_keeps_the_earlier_frames_in_a_part_and_says_so() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("kill-video");
    let name = format!("killvideo{}", std::process::id());
    let count = 200u64;
    let (video, part) = (dir.join("video.ts"), dir.join("video.part-1.ts"));
    // Noise does not compress: the video grows as frames are encoded.
    let (summary, err, pid) = run_with_tail_killed(
        &dir,
        &name,
        json!({"width": 160, "height": 120, "count": count, "pattern": "noise"}),
        "video.ts",
        || std::fs::metadata(&video).is_ok_and(|m| m.len() > 256 * 1024),
    );
    // The killed tail's ffmpeg outlives it: it ends its file (under the part's name)
    // when it reads the end of its input.
    let encoder = video.display().to_string();
    wait_for(
        "the killed tail's encoder to end",
        Duration::from_secs(20),
        || pids_with_cmdline(&encoder).is_empty(),
    );
    let restarted = &summary["restarted_outputs"];
    assert_eq!(restarted[0]["task"], "video", "{summary}");
    assert_eq!(restarted[0]["restarts"], 1, "{summary}");
    assert_eq!(
        restarted[0]["earlier_parts"],
        json!([part.display().to_string()]),
        "{summary}"
    );
    let said = format!(
        "restarted:  tail 'video' was restarted 1 time; its output {} cannot be resumed",
        video.display()
    );
    assert!(err.contains(&said), "the console says: {err}");
    assert!(err.contains(&part.display().to_string()), "{err}");
    let part_len = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(part_len > 0, "{} holds the earlier frames", part.display());
    let ffprobe = std::process::Command::new("ffprobe")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ffprobe {
        let frames = |f: &Path| {
            video_frames(f).unwrap_or_else(|| panic!("ffprobe cannot read {}", f.display()))
        };
        let (before, after) = (frames(&part), frames(&video));
        assert!(before > 0, "the part holds frames");
        assert!(
            before + after >= count,
            "every frame is in one of the files: {before} + {after} < {count}"
        );
    } else {
        println!("frame counts not checked: ffprobe is not installed");
    }
    assert_nothing_left(&name, &summary, pid);
}
