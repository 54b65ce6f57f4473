//! End-to-end runs through `supervisor start`: images, video, fan-out, process count,
//! and a clean stop on SIGTERM.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde_json::json;
use smartpipe_tests::*;
use std::process::Command;
use std::time::Duration;

fn reference_resize(src: &image::RgbImage, w: u32, h: u32) -> Vec<u8> {
    let src_ref =
        ImageRef::new(src.width(), src.height(), src.as_raw(), PixelType::U8x3).expect("src");
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let mut dst = Image::from_slice_u8(w, h, &mut buf, PixelType::U8x3).expect("dst");
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new()
        .resize(&src_ref, &mut dst, &opts)
        .expect("resize");
    buf
}

/// A JPEG as phones write a portrait photo: landscape pixels (left half red, right half
/// blue) and an EXIF orientation of 6 ("turn a quarter clockwise to show").
fn portrait_jpeg(path: &std::path::Path) {
    use image::ImageEncoder;
    let (w, h) = (64u32, 32u32);
    let pixels = image::RgbImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            image::Rgb([220, 20, 20])
        } else {
            image::Rgb([20, 20, 220])
        }
    });
    // TIFF, big-endian: IFD0 at 8 with one entry, Orientation (0x0112) SHORT 1 = 6.
    let exif = [
        b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0,
    ];
    let mut bytes = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
    enc.set_exif_metadata(exif.to_vec()).expect("exif");
    enc.write_image(&pixels, w, h, image::ExtendedColorType::Rgb8)
        .expect("jpeg");
    std::fs::write(path, bytes).expect("write jpeg");
}

/// Phone photos are stored landscape and tagged to be turned: they came out sideways
/// (an OCR or face model then sees sideways text and faces), where viewers and OpenCV's
/// `imread` show them upright. Planned, decoded, shown and counted upright.
#[test]
fn a_photo_tagged_to_be_turned_comes_out_upright() {
    let dir = scratch("exif-turned");
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    portrait_jpeg(&dir.join("in/portrait.jpg"));
    let app = write_app(
        &dir,
        &json!({
            "name": "turned", "service_type": "request-guarantee",
            "tasks": [
                {"name": "pics", "kind": "head", "function": "source.images", "params": {"path": "in"}},
                // The upright photo is 32 wide and 64 high: this crop fits only that way.
                {"name": "top", "kind": "cpu", "function": "image.crop", "inputs": ["pics"], "params": {"x": 0, "y": 0, "width": 32, "height": 64}},
                {"name": "show", "kind": "tail", "function": "image.show", "inputs": ["top"], "params": {"dir": "out"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["pics"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let rows = std::fs::read_to_string(dir.join("rows.csv")).expect("rows");
    assert!(
        rows.lines().nth(1).is_some_and(|l| l.contains(",32,64,")),
        "upright size (32×64) in the table: {rows}"
    );
    let shown = std::fs::read_dir(dir.join("out"))
        .expect("out")
        .flatten()
        .next()
        .expect("a frame shown")
        .path();
    let img = image::open(&shown).expect("png").to_rgb8();
    assert_eq!((img.width(), img.height()), (32, 64));
    // Turned a quarter clockwise, the left (red) half is on top.
    let top = img.get_pixel(16, 10).0;
    let bottom = img.get_pixel(16, 54).0;
    assert!(top[0] > 150 && top[2] < 100, "red on top: {top:?}");
    assert!(bottom[2] > 150 && bottom[0] < 100, "blue below: {bottom:?}");
}

/// A video has one frame size: a folder of landscape and portrait photos into one
/// `image.show` video failed the app at the first frame of another size. Such frames are
/// fitted into the first frame's size, aspect kept, black around them.
#[test]
fn frames_of_other_sizes_are_fitted_into_one_video() {
    require_ffmpeg();
    let dir = scratch("video-sizes");
    std::fs::create_dir_all(dir.join("in")).expect("dir");
    for (name, w, h, rgb) in [
        ("a.png", 64, 48, [200, 20, 20]),
        ("b.png", 32, 64, [20, 200, 20]),
        ("c.png", 128, 96, [20, 20, 200]),
    ] {
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
            .save(dir.join("in").join(name))
            .expect("png");
    }
    for service in ["best-effort", "request-guarantee"] {
        let app = write_app(
            &dir,
            &json!({
                "name": "sizes", "service_type": service,
                "tasks": [
                    {"name": "pics", "kind": "head", "function": "source.images", "params": {"path": "in"}},
                    {"name": "show", "kind": "tail", "function": "image.show", "inputs": ["pics"], "params": {"path": "v.mp4", "fps": 2}}
                ]
            }),
        );
        let (_, summary) = run_ok(&app, &dir.join(format!("run-{service}")));
        assert_eq!(summary["items_out"], 3, "{service}: {summary}");
        assert_eq!(
            summary["stages"]["show#0"]["frames_fitted"], 2,
            "{service}: the two frames of other sizes are counted: {summary}"
        );
        let rgb = video_rgb(&dir.join("v.mp4"));
        let frame = 64 * 48 * 3;
        assert_eq!(rgb.len(), 3 * frame, "{service}: three 64x48 frames");
        let at = |k: usize, x: usize, y: usize| {
            let i = k * frame + (y * 64 + x) * 3;
            [rgb[i], rgb[i + 1], rgb[i + 2]]
        };
        // The portrait frame (32x64 → 24x48): green in the middle, black at the sides.
        let (middle, side) = (at(1, 32, 24), at(1, 4, 24));
        assert!(middle[1] > 150 && middle[0] < 80, "{service}: {middle:?}");
        assert!(side.iter().all(|&c| c < 40), "{service}: {side:?}");
        // The larger frame of the same aspect fills the video: blue to the edge.
        let edge = at(2, 2, 24);
        assert!(edge[2] > 150 && edge[0] < 80, "{service}: {edge:?}");
    }
}

#[test]
fn images_resize_show_matches_a_direct_resize() {
    let dir = scratch("images");
    let frames = write_frames(&dir.join("in"), 6, 97, 61);
    let app = write_app(
        &dir,
        &json!({
            "name": "images", "service_type": "request-guarantee",
            "tasks": [
                {"name": "pics", "kind": "head", "function": "source.images", "params": {"path": "in"}},
                {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["pics"], "params": {"width": 40, "height": 30}},
                {"name": "show", "kind": "tail", "function": "image.show", "inputs": ["small"], "params": {"dir": "out"}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_in"], 6);
    assert_eq!(summary["items_out"], 6);
    for (seq, frame) in frames.iter().enumerate() {
        let out = dir.join("out").join(format!("pics-{seq}.png"));
        let got = image::open(&out)
            .unwrap_or_else(|e| panic!("{}: {e}", out.display()))
            .into_rgb8();
        assert_eq!((got.width(), got.height()), (40, 30), "{}", out.display());
        let src = image::open(frame).expect("input").into_rgb8();
        assert_eq!(
            got.as_raw(),
            &reference_resize(&src, 40, 30),
            "pixels of {}",
            out.display()
        );
    }
}

#[test]
fn video_frames_arrive_all_and_in_order() {
    require_ffmpeg();
    let dir = scratch("video");
    write_frames(&dir.join("in"), 12, 64, 48);
    let video = dir.join("clip.mkv");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(dir.join("in/f-%03d.png"))
        .args(["-c:v", "ffv1", "-pix_fmt", "bgr0"])
        .arg(&video)
        .status()
        .expect("run ffmpeg");
    assert!(made.success(), "ffmpeg could not make the test video");
    let app = write_app(
        &dir,
        &json!({
            "name": "video", "service_type": "request-guarantee",
            "tasks": [
                {"name": "cam", "kind": "head", "function": "source.video", "params": {"path": "clip.mkv"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["cam"], "params": {"format": "jsonl", "path": "rows.jsonl"}},
                {"name": "show", "kind": "tail", "function": "image.show", "inputs": ["cam"], "params": {"dir": "out"}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_out"], 12);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("rows.jsonl"))
        .expect("rows")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let seqs: Vec<u64> = rows
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (0..12).collect::<Vec<_>>(), "frames in order");
    for r in &rows {
        assert_eq!(
            (r["width"].as_u64(), r["height"].as_u64()),
            (Some(64), Some(48))
        );
        assert_eq!(r["source"], "cam");
        assert!(r["latency_ms"].as_f64().is_some_and(|l| l >= 0.0));
    }
    // Frame k carries red = 20k: the decoded frames are the encoded ones, in order.
    for k in 0..12u32 {
        let img = image::open(dir.join(format!("out/cam-{k}.png")))
            .expect("frame")
            .into_rgb8();
        let red = img.get_pixel(10, 10)[0];
        assert_eq!(red, (k * 20 % 256) as u8, "frame {k}");
    }
}

#[test]
fn fan_out_delivers_everything_to_both_tails() {
    let dir = scratch("fanout");
    let app = write_app(
        &dir,
        &json!({
            "name": "fanout", "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 16, "count": 300}},
                {"name": "a", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "a.csv"}},
                {"name": "b", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "jsonl", "path": "b.jsonl"}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    let a = std::fs::read_to_string(dir.join("a.csv")).expect("a");
    let b = std::fs::read_to_string(dir.join("b.jsonl")).expect("b");
    assert_eq!(a.lines().count(), 301, "header + 300 rows");
    assert_eq!(b.lines().count(), 300);
    for tail in summary["tails"].as_array().expect("tails") {
        assert_eq!(tail["items"], 300, "{tail}");
        assert_eq!(tail["missing"], 0, "{tail}");
        // The head's stay of every item after the first four (warm-up), for the planner's
        // per-item variability; one stage on the path, so nothing else to share it with.
        let stays = tail["stays"].as_array().expect("stays");
        assert_eq!(stays.len(), 1, "{tail}");
        assert_eq!(stays[0]["stage"], 0);
        assert_eq!(stays[0]["n"], 296);
        assert_eq!(stays[0]["r"], 0.0);
    }
    assert_eq!(summary["lost_total"], 0);
}

fn endless_app(name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 64, "count": 100000, "fps": 50}},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"], "replicas": 3},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["fwd"], "replicas": 2, "params": {"width": 8, "height": 8}},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
        ]
    })
}

#[test]
fn one_process_per_stage_replica_and_sigterm_leaves_nothing() {
    let dir = scratch("procs");
    let name = format!("procs{}", std::process::id());
    let app = write_app(&dir, &endless_app(&name));
    // The pools checked are memfds of the app's own supervisor.
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_NO_DAEMON", "1"),
        &app,
        &dir.join("run"),
    );
    let sup_pid = sup.id();
    let needle = format!("--stage {name}/");
    // 1 head + 3 forward + 2 resize + 1 tail replicas.
    wait_for("7 stage processes", Duration::from_secs(20), || {
        pids_with_cmdline(&needle).len() == 7
    });
    for (task, n) in [("gen#", 1), ("fwd#", 3), ("small#", 2), ("rows#", 1)] {
        let count = pids_with_cmdline(&format!("{needle}{task}")).len();
        assert_eq!(count, n, "processes of {task}");
    }
    // Let items flow, then stop it like a service manager would.
    wait_for("rows flowing", Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("rows.csv"))
            .map(|t| t.lines().count() > 5)
            .unwrap_or(false)
    });
    assert!(
        !memfds_of(sup_pid).is_empty(),
        "pools are memfds of the supervisor while it runs"
    );
    // SAFETY: sending SIGTERM to a child we started.
    unsafe { libc::kill(sup_pid as i32, libc::SIGTERM) };
    let (status, err) = finish(sup);
    assert!(status.success(), "drained cleanly: {status}\n{err}");
    assert!(err.contains("drained"), "{err}");
    assert!(
        pids_with_cmdline(&needle).is_empty(),
        "no stage process left"
    );
    assert!(
        memfds_of(sup_pid).is_empty(),
        "no memfd left: {:?}",
        memfds_of(sup_pid)
    );
    // SAFETY: getuid never fails.
    let runtime = std::path::PathBuf::from(format!("/tmp/smartpipe-{}/{sup_pid}", unsafe {
        libc::getuid()
    }));
    assert!(
        !runtime.exists(),
        "runtime dir {} removed",
        runtime.display()
    );
    let summary = read_summary(&dir.join("run"));
    let rows = std::fs::read_to_string(dir.join("rows.csv"))
        .expect("rows")
        .lines()
        .count() as u64
        - 1;
    assert_eq!(
        summary["items_out"].as_u64(),
        Some(rows),
        "summary counts what the tail wrote"
    );
}

#[test]
fn validate_names_file_line_and_column() {
    let dir = scratch("validate");
    let path = dir.join("bad.json");
    std::fs::write(&path, "{\n  \"name\": \"x\",\n  \"tasks\": [ oops ]\n}\n").expect("write");
    let out = supervisor()
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("invalid JSON"), "{err}");
}

#[test]
fn schema_is_json_with_every_function() {
    let out = supervisor().arg("schema").output().expect("run");
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    let names = schema["properties"]["tasks"]["items"]["properties"]["function"]["enum"]
        .as_array()
        .expect("function enum");
    for f in [
        "source.video",
        "image.resize",
        "table.print",
        "model.inference",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} in schema");
    }
}

#[test]
fn every_run_writes_a_report_with_qos_plots_and_plan() {
    let dir = scratch("report");
    let app = write_app(
        &dir,
        &json!({
            "name": "reported",
            "quota": {"max_latency_ms": 1000, "throughput_per_min": 60},
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 32, "count": 40, "fps": 40}},
                {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 8, "height": 8}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["small"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let (out, summary) = run_ok(&app, &dir.join("run"));
    let page = std::fs::read_to_string(dir.join("run/report.html")).expect("report.html written");
    for needle in [
        "SmartPipe run: reported",
        "Quality of service",
        "latency_p99_ms",
        "Replies per second",
        "End-to-end latency distribution",
        "max_latency_ms quota (1000)",
        "Utilisation per stage",
        "small#0",
        "image.resize",
    ] {
        assert!(page.contains(needle), "report lacks {needle:?}");
    }
    assert!(page.matches("<svg").count() >= 5, "five charts");
    assert!(!page.contains("could not be drawn"), "every chart drawn");
    assert!(String::from_utf8_lossy(&out.stderr).contains("report.html"));
    let qos = summary["qos"].as_array().expect("qos");
    assert!(
        qos.iter()
            .any(|q| q["metric"] == "latency_p99_ms" && q["met"] == true),
        "{qos:?}"
    );
}

#[test]
fn transport_bench_chain_delivers_every_byte_intact() {
    // The chain of the transport benchmark, small: bench.sink checks every byte and the
    // bench fails on any corrupted or missing item.
    let dir = scratch("bench");
    let json_out = dir.join("bench.json");
    let out = supervisor()
        .args([
            "bench",
            "transport",
            "--sizes",
            "4096",
            "--items",
            "20",
            "--json",
        ])
        .arg(&json_out)
        .output()
        .expect("bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_out).expect("json")).expect("json");
    let row = &rows[0];
    assert_eq!(row["bytes"], 4096);
    assert_eq!(row["chain_corrupt_or_lost"], 0);
    assert_eq!(
        row["chain_hop_p50_us"].as_array().map(|h| h.len()),
        Some(4),
        "four hops"
    );
    assert!(row["chain_items_per_s"].as_f64().is_some_and(|r| r > 0.0));
}
