//! Bad video input: a truncated file, one that ends before the frames it announces, one
//! cut while it is read, rotation tags, variable frame rates and a resolution that changes
//! mid-way — each delivers what decodes, as stored (a later size fitted into the first),
//! and says what was short, never a panic or a hang.

use serde_json::json;
use smartpipe_tests::*;
use std::path::Path;
use std::process::Command;

/// 30 frames of 64×48 encoded by ffmpeg with `codec` args into `dir/full.<ext of name>`,
/// and its first half written to `dir/name`.
fn half_of_a_video(dir: &Path, name: &str, codec: &[&str]) {
    write_frames(&dir.join("in"), 30, 64, 48);
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("mkv");
    let full = dir.join(format!("full.{ext}"));
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(dir.join("in/f-%03d.png"))
        .args(codec)
        .arg(&full)
        .status()
        .expect("ffmpeg");
    assert!(made.success());
    let bytes = std::fs::read(&full).expect("read");
    std::fs::write(dir.join(name), &bytes[..bytes.len() / 2]).expect("truncate");
}

/// A request-guarantee app in `dir`: `source.video` of `file` (as camera `cam`) into the
/// rows of `rows.jsonl`.
fn video_app(dir: &Path, name: &str, file: &str) -> std::path::PathBuf {
    write_app(
        dir,
        &tail_app(
            name,
            json!({"name": "cam", "kind": "head", "function": "source.video", "params": {"path": file}}),
            vec![],
            "cam",
        ),
    )
}

#[test]
fn truncated_video_delivers_what_decodes_and_says_so() {
    require_ffmpeg();
    let dir = scratch("truncated-video");
    half_of_a_video(&dir, "cut.mkv", &["-c:v", "ffv1"]);
    let app = video_app(&dir, "cut", "cut.mkv");
    let (_, summary) = run_ok(&app, &dir.join("run"));
    let out = summary["items_out"].as_u64().expect("items_out");
    assert!(out > 0 && out < 30, "part of the video arrives: {out}");
    assert_eq!(
        summary["items_in"], summary["items_out"],
        "nothing decoded is lost"
    );
    let rows = std::fs::read_to_string(dir.join("rows.jsonl"))
        .expect("rows")
        .lines()
        .count() as u64;
    assert_eq!(rows, out);
}

/// An MP4 whose index (moved to the front) announces 30 frames, cut in half: the run
/// delivers what decodes and its summary says the source ended short, not that all is well.
#[test]
fn a_video_that_ends_before_its_announced_frames_is_reported_short() {
    require_ffmpeg();
    let dir = scratch("short-video");
    half_of_a_video(
        &dir,
        "cut.mp4",
        &["-c:v", "mpeg4", "-q:v", "2", "-movflags", "+faststart"],
    );
    let app = video_app(&dir, "short", "cut.mp4");
    let (out, summary) = run_ok(&app, &dir.join("run"));
    let delivered = summary["items_out"].as_u64().expect("items_out");
    assert!(
        delivered > 0 && delivered < 30,
        "part of the video arrives: {delivered}"
    );
    let note = summary["short_sources"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        note.contains(&format!("source 'cam' read {delivered} of the 30 frames")),
        "{summary}"
    );
    assert!(printed(&out).contains("short:"), "{}", printed(&out));
}

/// `ffmpeg ARGS` in `dir`; panics unless it succeeds.
fn ffmpeg_in(dir: &Path, args: &[&str]) {
    let made = Command::new("ffmpeg")
        .current_dir(dir)
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg");
    assert!(made.success(), "ffmpeg {args:?}");
}

/// A phone's portrait clip carries a rotation tag, and a variable-rate video has gaps
/// between frames: the first came out as sheared garbage (turned by ffmpeg, read at the
/// probed unturned size), then sideways (read as stored), the second with frames repeated
/// to a constant rate (60 frames became 359 items). Frames are delivered upright, as a
/// player shows them, each once.
#[test]
fn rotated_and_variable_rate_videos_deliver_their_frames_upright_each_once() {
    let dir = scratch("video-tags");
    std::fs::create_dir_all(&dir).expect("dir");
    ffmpeg_in(
        &dir,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:d=1",
            "-pix_fmt",
            "yuv420p",
            "base.mp4",
        ],
    );
    ffmpeg_in(
        &dir,
        &[
            "-i",
            "base.mp4",
            "-c",
            "copy",
            "-metadata:s:v:0",
            "rotate=90",
            "rot90.mp4",
        ],
    );
    ffmpeg_in(
        &dir,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=30:d=2",
            "-vf",
            "setpts='if(lt(N,20),N/30,N/5)/TB'",
            "-fps_mode",
            "vfr",
            "vfr.mp4",
        ],
    );
    for (case, file, frames) in [("rot", "rot90.mp4", 10), ("vfr", "vfr.mp4", 60)] {
        std::fs::create_dir_all(dir.join(case)).expect("dir");
        let app = write_app(
            &dir.join(case),
            &tail_app(
                case,
                json!({"name": "clip", "kind": "head", "function": "source.video", "params": {"path": dir.join(file)}}),
                vec![
                    json!({"name": "frames", "kind": "tail", "function": "image.show", "inputs": ["clip"], "params": {"dir": "frames"}}),
                ],
                "clip",
            ),
        );
        let (_, summary) = run_ok(&app, &dir.join(case).join("run"));
        assert_eq!(summary["items_out"], frames, "{case}: {summary}");
        assert!(
            summary["short_sources"]
                .as_array()
                .is_none_or(|s| s.is_empty()),
            "{summary}"
        );
    }
    // The first frame as a player shows it (ffmpeg's own decoding turns it upright), and as
    // stored: a quarter turn of each other, so the delivered frame is neither sheared nor
    // sideways.
    let first_frame = |extra: &[&str]| {
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error"])
            .args(extra)
            .arg("-i")
            .arg(dir.join("rot90.mp4"))
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .expect("ffmpeg");
        out.stdout
    };
    let upright = first_frame(&[]);
    let stored = image::RgbImage::from_raw(64, 48, first_frame(&["-noautorotate"]))
        .expect("a 64x48 stored frame");
    let shown = image::open(dir.join("rot/frames/clip-0.png"))
        .expect("the first frame")
        .into_rgb8();
    assert_eq!(
        (shown.width(), shown.height()),
        (48, 64),
        "portrait, upright"
    );
    assert!(
        shown.as_raw() == &upright,
        "the frame is the one a player shows"
    );
    assert!(
        shown == image::imageops::rotate90(&stored) || shown == image::imageops::rotate270(&stored),
        "a quarter turn of the stored frame"
    );
}

/// A video cut while the source reads it: what was read is delivered and the summary says
/// the source is short of what the file announced when the run started (it compared with
/// the file as it was at the end, cut, and said nothing).
#[test]
fn a_video_cut_while_it_is_read_is_reported_short() {
    let dir = scratch("video-cut");
    std::fs::create_dir_all(&dir).expect("dir");
    // Noise does not compress: a file of several MB, read as it is decoded.
    ffmpeg_in(
        &dir,
        &[
            "-f",
            "lavfi",
            "-i",
            "nullsrc=s=320x240:r=25:d=12,geq=random(1)*255:128:128",
            "-c:v",
            "mpeg4",
            "-q:v",
            "2",
            "noise.avi",
        ],
    );
    let app = write_app(
        &dir,
        &tail_app(
            "cut",
            json!({"name": "cam", "kind": "head", "function": "source.video", "params": {"path": dir.join("noise.avi"), "fps": 100}}),
            vec![],
            "cam",
        ),
    );
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let rows = dir.join("rows.jsonl");
    wait_for("the first row", std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&rows).is_ok_and(|t| t.lines().count() >= 1)
    });
    std::fs::File::create(dir.join("noise.avi")).expect("cut the file to nothing");
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&dir.join("run"));
    let delivered = summary["items_out"].as_u64().expect("items_out");
    assert!(delivered < 300, "the cut stopped the source: {summary}");
    let note = summary["short_sources"][0].as_str().unwrap_or_default();
    assert!(
        note.contains(&format!("read {delivered} of the 300 frames")),
        "{summary}"
    );
}

/// A stream whose resolution changes mid-way (a camera switching modes; two MPEG-TS
/// recordings joined): every frame is delivered at the first frame's size, the later
/// ones fitted into it with their aspect kept and black around, as `image.show` fits
/// frames into a video. ffmpeg used to stretch them over the whole frame.
#[test]
fn a_video_that_changes_resolution_is_fitted_not_stretched() {
    let dir = scratch("video-resized");
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, source) in [
        ("wide.ts", "testsrc=size=64x48:rate=10"),
        ("tall.ts", "color=c=white:size=48x64:rate=10"),
    ] {
        ffmpeg_in(
            &dir,
            &[
                "-f",
                "lavfi",
                "-i",
                source,
                "-frames:v",
                "10",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                name,
            ],
        );
    }
    let mut joined = std::fs::read(dir.join("wide.ts")).expect("wide");
    joined.extend(std::fs::read(dir.join("tall.ts")).expect("tall"));
    std::fs::write(dir.join("joined.ts"), joined).expect("joined");
    let app = write_app(
        &dir,
        &tail_app(
            "resized",
            json!({"name": "clip", "kind": "head", "function": "source.video", "params": {"path": dir.join("joined.ts")}}),
            vec![
                json!({"name": "frames", "kind": "tail", "function": "image.show", "inputs": ["clip"], "params": {"dir": "frames"}}),
            ],
            "clip",
        ),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_out"], 20, "{summary}");
    let frame = |n: u32| {
        image::open(dir.join(format!("frames/clip-{n}.png")))
            .expect("a frame")
            .into_rgb8()
    };
    let tall = frame(15);
    assert_eq!((tall.width(), tall.height()), (64, 48));
    // 48×64 fitted into 64×48: 36 wide, centred (x 14..50), black on both sides.
    let grey = |x: u32, y: u32| {
        tall.get_pixel(x, y)
            .0
            .iter()
            .map(|&c| u32::from(c))
            .sum::<u32>()
            / 3
    };
    for y in [2, 24, 45] {
        assert!(
            grey(32, y) > 200,
            "the fitted frame's middle is white (row {y})"
        );
        for x in [0, 5, 58, 63] {
            assert!(
                grey(x, y) < 40,
                "black beside the fitted frame ({x}, {y}), not stretched"
            );
        }
    }
    let wide = frame(3);
    assert_eq!((wide.width(), wide.height()), (64, 48));
}

/// The frame rate ffprobe reads of a video's first stream (`r_frame_rate`, e.g. `30/1`).
fn frame_rate_of(file: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=r_frame_rate", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A 30 fps clip written by `image.show` played at 25 fps (20 % slow, a 60 fps clip at
/// less than half speed): a video tail without `fps` now writes at its source's rate.
#[test]
fn a_video_is_written_at_its_sources_frame_rate_unless_the_tail_gives_one() {
    require_ffmpeg();
    let dir = scratch("video-rate");
    ffmpeg_in(
        &dir,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=30:d=1",
            "-pix_fmt",
            "yuv420p",
            "clip.mp4",
        ],
    );
    let app = write_app(
        &dir,
        &json!({
            "name": "rate",
            "tasks": [
                {"name": "clip", "kind": "head", "function": "source.video", "params": {"path": "clip.mp4"}},
                {"name": "same", "kind": "tail", "function": "image.show", "inputs": ["clip"], "params": {"path": "same.mp4"}},
                {"name": "slow", "kind": "tail", "function": "image.show", "inputs": ["clip"], "params": {"path": "slow.mp4", "fps": 10}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_out"], 30, "{summary}");
    assert_eq!(frame_rate_of(&dir.join("same.mp4")), "30/1");
    assert_eq!(
        frame_rate_of(&dir.join("slow.mp4")),
        "10/1",
        "the tail's own rate"
    );
}

/// `start_s` starts a video at a time: its first item is the frame shown then (a seek to the
/// key frame before it, then decoded up to the exact frame), and `limit` counts from there.
#[test]
fn a_video_started_at_a_time_begins_with_the_frame_shown_then() {
    require_ffmpeg();
    let dir = scratch("video-start");
    // 10 fps, a key frame every 8 frames: 1.0 s is frame 10, two frames after a key frame.
    ffmpeg_in(
        &dir,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10:d=3",
            "-c:v",
            "libx264",
            "-g",
            "8",
            "-pix_fmt",
            "yuv420p",
            "clip.mp4",
        ],
    );
    let app = write_app(
        &dir,
        &json!({
            "name": "start",
            "tasks": [
                {"name": "clip", "kind": "head", "function": "source.video", "params": {"path": "clip.mp4", "start_s": 1.0, "limit": 5}},
                {"name": "frames", "kind": "tail", "function": "image.show", "inputs": ["clip"], "params": {"dir": "frames"}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_out"], 5, "{summary}");
    // Frame 10 of the clip as ffmpeg decodes it from the start.
    let tenth = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(dir.join("clip.mp4"))
        .args(["-vf", "select=eq(n\\,10)", "-frames:v", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    let first = image::open(dir.join("frames/clip-0.png"))
        .expect("the first frame")
        .into_rgb8();
    assert_eq!(first.as_raw().len(), tenth.stdout.len());
    assert!(
        first.as_raw() == &tenth.stdout,
        "the first item is the frame shown at 1.0 s"
    );
    assert!(dir.join("frames/clip-4.png").exists() && !dir.join("frames/clip-5.png").exists());
}
