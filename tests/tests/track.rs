//! DeepSORT tracking end to end (`apps/track.json`: video → MTCNN → embedder →
//! `track.deepsort` → annotated frames + CSV) on a video made here with ffmpeg (two
//! astronaut faces drifting apart): ids per face over the frames, the same output
//! after a kill -9 of the tracker as without one, and bad inputs that name the task
//! and model.

use serde_json::{json, Value};
use smartpipe_tests::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// These runs load both cores: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn provisioned() -> PathBuf {
    let root = repo_root();
    for f in [
        ".smartpipe/lib/libonnxruntime.so.1.32.0",
        ".smartpipe/models/deepsort-mobilenetv2.onnx",
    ] {
        assert!(
            root.join(f).is_file(),
            "{f} is missing: run scripts/provision.sh (make test does)"
        );
    }
    root
}

/// `frames` frames of 640×360: two copies of the astronaut, 180 px wide, moving apart.
fn video(dir: &Path, frames: u32) -> PathBuf {
    require_ffmpeg();
    let out = dir.join("two.mp4");
    let astronaut = repo_root().join(".smartpipe/media/astronaut.png");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-loop", "1", "-framerate", "10", "-i"])
        .arg(&astronaut)
        .args(["-f", "lavfi", "-i", "color=c=0x303030:s=640x360:r=10", "-filter_complex"])
        .arg("[0:v]scale=180:180,split[a][b];[1:v][a]overlay=x='150-4*n':y=60[ab];[ab][b]overlay=x='310+4*n':y=100")
        .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("ffmpeg");
    assert!(ok.success(), "test video");
    out
}

/// The shipped app with its input and outputs in `dir`.
fn app(root: &Path, dir: &Path, name: &str, video: &Path, fps: u32) -> Value {
    let mut app: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("apps/track.json")).expect("track.json"),
    )
    .expect("json");
    app["name"] = json!(name);
    for task in app["tasks"].as_array_mut().expect("tasks") {
        match task["name"].as_str().unwrap_or("") {
            "frames" => task["params"] = json!({"path": video, "fps": fps}),
            "annotated" => task["params"] = json!({"dir": dir.join("png")}),
            "tracks-csv" => task["params"]["path"] = json!(dir.join("tracks.csv")),
            _ => {}
        }
    }
    app
}

fn command() -> std::process::Command {
    let mut cmd = supervisor();
    with_models(&mut cmd).env(
        "ORT_DYLIB_PATH",
        repo_root().join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
    );
    cmd
}

/// (seq, x1 rounded to 10 px, track_id) of each CSV row with a track id.
fn tracked(csv: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(csv).expect("tracks.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).expect(n);
    let (seq, x1, id) = (col("seq"), col("x1"), col("track_id"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|c| !c[id].is_empty())
        .map(|c| {
            let x: f32 = c[x1].parse().expect("x1");
            (
                c[seq].parse().expect("seq"),
                format!("{} at x≈{}", c[id], (x / 10.0).round() * 10.0),
            )
        })
        .collect()
}

#[test]
fn each_face_keeps_one_track_id_through_the_video() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = provisioned();
    let dir = scratch("track-app");
    let v = video(&dir, 10);
    let path = write_app(&dir, &app(&root, &dir, "track", &v, 0));
    let (_, summary) = run_ok_with(&mut command(), &path, &dir.join("run"));
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let text = std::fs::read_to_string(dir.join("tracks.csv")).expect("csv");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // Faces whose score passed the filter; from the third frame on each has a confirmed id.
    let id_col = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|h| h == "track_id")
        .unwrap();
    let x_col = 4;
    let mut left = std::collections::BTreeSet::new();
    let mut right = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| r[1].parse::<u64>().unwrap() >= 2) {
        let x: f32 = r[x_col].parse().unwrap();
        if x < 320.0 {
            left.insert(r[id_col])
        } else {
            right.insert(r[id_col])
        };
    }
    assert_eq!(
        left.len(),
        1,
        "the left face keeps one id: {left:?}\n{text}"
    );
    assert_eq!(
        right.len(),
        1,
        "the right face keeps one id: {right:?}\n{text}"
    );
    assert_ne!(left, right);
    assert!(
        !left.contains("") && !right.contains(""),
        "confirmed from frame 2 on:\n{text}"
    );
    assert_eq!(std::fs::read_dir(dir.join("png")).unwrap().count(), 10);
}

#[test]
fn a_tracker_killed_mid_video_gives_the_same_ids_as_an_uninterrupted_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = provisioned();
    let frames = 24;
    let base = scratch("track-kill");
    let v = video(&base, frames);
    // Uninterrupted.
    let calm = base.join("calm");
    std::fs::create_dir_all(&calm).unwrap();
    let path = write_app(&calm, &app(&root, &calm, "trackcalm", &v, 0));
    run_ok_with(&mut command(), &path, &calm.join("run"));
    let want = tracked(&calm.join("tracks.csv"));
    // Killed once a third of the frames are out.
    let hit = base.join("hit");
    std::fs::create_dir_all(&hit).unwrap();
    let name = format!("trackkill{}", std::process::id());
    let path = write_app(&hit, &app(&root, &hit, &name, &v, 3));
    let sup = start_in_background(&mut command(), &path, &hit.join("run"));
    let csv = hit.join("tracks.csv");
    wait_for("8 frames written", Duration::from_secs(120), || {
        std::fs::read_to_string(&csv).is_ok_and(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| l.split(',').nth(1))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                >= 8
        })
    });
    let label = format!(" {name}/ids#0");
    let old = *pids_with_cmdline(&label).first().expect("tracker running");
    // SAFETY: killing a process of this test's app.
    unsafe { libc::kill(old, libc::SIGKILL) };
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&hit.join("run"));
    assert_eq!(
        summary["restarts"]["ids#0"], 1,
        "the tracker was killed and restarted: {summary}"
    );
    assert_eq!(summary["lost_total"], 0, "{summary}");
    let got = tracked(&csv);
    assert!(
        want.len() >= 2 * (frames as usize - 2),
        "ids in the calm run: {want:?}"
    );
    assert_eq!(
        got, want,
        "ids after a kill -9 of the tracker differ from the uninterrupted run"
    );
}

#[test]
fn a_tracker_fed_a_table_without_embeddings_fails_naming_task_and_column() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = provisioned();
    let dir = scratch("track-no-embedding");
    let v = video(&dir, 3);
    let mut a = app(&root, &dir, "tracknoemb", &v, 0);
    let tasks = a["tasks"].as_array_mut().unwrap();
    for task in tasks.iter_mut() {
        if task["name"] == "ids" {
            task["inputs"] = json!(["confident"]);
        }
    }
    // The embedder's steps feed nothing now: out of the app (a branch that ends nowhere is refused).
    tasks.retain(|t| !t["name"].as_str().unwrap_or("").starts_with("embed"));
    let path = write_app(&dir, &a);
    let out = command()
        .arg("start")
        .arg(&path)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'ids'") && err.contains("'embedding'") && err.contains("embedder"),
        "{err}"
    );
}

#[test]
fn an_embedder_model_of_the_wrong_shape_fails_naming_task_and_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = provisioned();
    let dir = scratch("track-wrong-embedder");
    let v = video(&dir, 3);
    // The manifest's embedder entry pointed at a classifier-sized output: dim 1000.
    let mut manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("apps/models.json")).unwrap())
            .unwrap();
    for m in manifest["models"].as_array_mut().unwrap() {
        if m["name"] == "deepsort-mobilenetv2" {
            m["params"]["dim"] = json!(1000);
        }
    }
    let mpath = dir.join("models.json");
    std::fs::write(&mpath, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let path = write_app(&dir, &app(&root, &dir, "trackwrong", &v, 0));
    let out = command()
        .env("SMARTPIPE_MANIFEST", &mpath)
        .arg("start")
        .arg(&path)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(dir.join("run/logs/embed-post#0.log")).unwrap_or_default();
    let all = format!("{err}\n{log}");
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("task 'embed-post': model `deepsort-mobilenetv2` (embedder) output: shape [2, 1280] does not match: expected [2, 1000]"),
        "{all}"
    );
}
