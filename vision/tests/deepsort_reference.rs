//! The DeepSORT tracker against `deep-sort-realtime` 1.3.2's own tracker (run by
//! `tools/reference/deepsort_ref.py` in `.smartpipe/venv`): the same detections and
//! embeddings, a synthetic sequence made here (boxes crossing, one leaving and coming
//! back, objects appearing together, a one-frame false detection), and the same track
//! id for every detection of every frame.
// Test code: a failed unwrap or expect is a failed test (clippy.toml allows them only
// inside #[test] functions, and these are helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use vision::tracking::{Detection, Tracker, TrackerConfig};

/// xorshift64*: the sequence is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// An object: where it is at frame `t` (None = not seen) and its appearance.
struct Object {
    start: (f32, f32),
    velocity: (f32, f32),
    size: (f32, f32),
    frames: std::ops::Range<usize>,
    hidden: std::ops::Range<usize>,
    look: Vec<f32>,
}

const DIM: usize = 64;

fn sequence(seed: u64, frames: usize) -> Vec<Vec<Detection>> {
    let mut rng = Rng(seed);
    let look = |rng: &mut Rng| (0..DIM).map(|_| rng.unit()).collect::<Vec<f32>>();
    let objects = vec![
        // Two that cross head-on at frame ~20.
        Object {
            start: (40.0, 200.0),
            velocity: (12.0, 0.5),
            size: (60.0, 120.0),
            frames: 0..frames,
            hidden: 0..0,
            look: look(&mut rng),
        },
        Object {
            start: (520.0, 215.0),
            velocity: (-12.0, 0.0),
            size: (64.0, 126.0),
            frames: 0..frames,
            hidden: 0..0,
            look: look(&mut rng),
        },
        // One that leaves for 8 frames and comes back further on.
        Object {
            start: (100.0, 20.0),
            velocity: (3.0, 4.0),
            size: (50.0, 50.0),
            frames: 0..frames,
            hidden: 18..26,
            look: look(&mut rng),
        },
        // Appears later, alone.
        Object {
            start: (300.0, 380.0),
            velocity: (-2.0, -1.0),
            size: (40.0, 80.0),
            frames: 8..frames,
            hidden: 0..0,
            look: look(&mut rng),
        },
        // Two appearing in the same frame, beside a tentative track they do not overlap
        // (frame 12's false detection): ties in the IoU assignment.
        Object {
            start: (560.0, 20.0),
            velocity: (-1.0, 2.0),
            size: (30.0, 30.0),
            frames: 13..frames,
            hidden: 0..0,
            look: look(&mut rng),
        },
        Object {
            start: (20.0, 400.0),
            velocity: (2.0, -1.0),
            size: (35.0, 35.0),
            frames: 13..frames,
            hidden: 0..0,
            look: look(&mut rng),
        },
    ];
    let mut out = Vec::new();
    for t in 0..frames {
        let mut dets = Vec::new();
        for o in &objects {
            if !o.frames.contains(&t) || o.hidden.contains(&t) {
                continue;
            }
            let k = (t - o.frames.start) as f32;
            let jitter = |rng: &mut Rng| rng.unit() * 1.5;
            let l = o.start.0 + o.velocity.0 * k + jitter(&mut rng);
            let top = o.start.1 + o.velocity.1 * k + jitter(&mut rng);
            let feature = o.look.iter().map(|v| v + 0.08 * rng.unit()).collect();
            dets.push(Detection {
                ltwh: [
                    l,
                    top,
                    o.size.0 + jitter(&mut rng),
                    o.size.1 + jitter(&mut rng),
                ],
                confidence: 0.6 + 0.4 * rng.unit().abs(),
                feature,
            });
        }
        if t == 12 {
            // A false detection for one frame: tentative, then deleted.
            dets.push(Detection {
                ltwh: [250.0, 50.0, 40.0, 40.0],
                confidence: 0.3,
                feature: look(&mut rng),
            });
        }
        // Detectors list boxes in no particular order.
        let n = dets.len();
        if n > 1 {
            let r = (rng.next() % n as u64) as usize;
            dets.rotate_left(r);
        }
        out.push(dets);
    }
    out
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference(
    config: &TrackerConfig,
    frames: &[Vec<Detection>],
    tag: &str,
) -> Vec<Vec<(u64, bool)>> {
    let root = repo_root();
    let python = root.join(".smartpipe/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/provision.sh (it installs deep-sort-realtime into the venv)",
        python.display()
    );
    let dir = std::env::temp_dir().join(format!("smartpipe-deepsort-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.json");
    let output = dir.join("out.json");
    let spec = json!({
        "config": config,
        "frames": frames.iter().map(|f| f.iter().map(|d| json!({
            "ltwh": d.ltwh, "confidence": d.confidence, "feature": d.feature,
        })).collect::<Vec<_>>()).collect::<Vec<_>>(),
    });
    std::fs::write(&input, serde_json::to_vec(&spec).unwrap()).unwrap();
    let run = Command::new(&python)
        .arg(root.join("tools/reference/deepsort_ref.py"))
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "reference failed (scripts/provision.sh installs deep-sort-realtime and scipy): {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    v["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            f.as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["track_id"].as_u64().unwrap(),
                        d["confirmed"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn ours(config: &TrackerConfig, frames: &[Vec<Detection>]) -> Vec<Vec<(u64, bool)>> {
    let mut tracker = Tracker::new(config.clone()).unwrap();
    frames
        .iter()
        .map(|f| {
            tracker
                .step(f)
                .unwrap()
                .into_iter()
                .map(|a| (a.track_id, a.confirmed))
                .collect()
        })
        .collect()
}

fn compare(config: TrackerConfig, seed: u64, tag: &str) -> Vec<Vec<(u64, bool)>> {
    let frames = sequence(seed, 48);
    let want = reference(&config, &frames, tag);
    let got = ours(&config, &frames);
    assert_eq!(got.len(), want.len());
    for (t, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g, w,
            "frame {t}: (track id, confirmed) per detection differ from deep-sort-realtime"
        );
    }
    got
}

/// The track id of the detection nearest to `(x, y)` (its box's top-left) in a frame.
fn id_near(frames: &[Vec<Detection>], ids: &[Vec<(u64, bool)>], t: usize, x: f32, y: f32) -> u64 {
    let (i, _) = frames[t]
        .iter()
        .enumerate()
        .map(|(i, d)| (i, (d.ltwh[0] - x).abs() + (d.ltwh[1] - y).abs()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    ids[t][i].0
}

#[test]
fn track_ids_equal_deep_sort_realtime_frame_by_frame() {
    let ids = compare(TrackerConfig::default(), 7, "default");
    let frames = sequence(7, 48);
    // What a user checks: the crossing objects keep their ids after crossing, and the
    // object that left for 8 frames comes back under its old id.
    let a_before = id_near(&frames, &ids, 5, 40.0 + 60.0, 202.5);
    let a_after = id_near(&frames, &ids, 40, 40.0 + 480.0, 220.0);
    assert_eq!(a_before, a_after, "object A changed id while crossing B");
    let b_before = id_near(&frames, &ids, 5, 520.0 - 60.0, 215.0);
    let b_after = id_near(&frames, &ids, 40, 520.0 - 480.0, 215.0);
    assert_eq!(b_before, b_after, "object B changed id while crossing A");
    assert_ne!(a_before, b_before);
    let c_before = id_near(&frames, &ids, 17, 100.0 + 51.0, 20.0 + 68.0);
    let c_after = id_near(&frames, &ids, 30, 100.0 + 90.0, 20.0 + 120.0);
    assert_eq!(
        c_before, c_after,
        "the object that left and came back got a new id"
    );
    // The false detection of frame 12 started a track that was never confirmed.
    let fp = id_near(&frames, &ids, 12, 250.0, 50.0);
    assert!(ids
        .iter()
        .flatten()
        .filter(|(id, _)| *id == fp)
        .all(|(_, c)| !c));
}

#[test]
fn track_ids_equal_deep_sort_realtime_with_a_budget_and_short_memory() {
    let config = TrackerConfig {
        max_age: 5,
        n_init: 2,
        nn_budget: Some(3),
        max_iou_distance: 0.5,
        ..TrackerConfig::default()
    };
    let ids = compare(config, 11, "budget");
    // max_age 5 < the 8-frame absence: the returning object is a new track.
    let frames = sequence(11, 48);
    let before = id_near(&frames, &ids, 17, 151.0, 88.0);
    let after = id_near(&frames, &ids, 30, 190.0, 140.0);
    assert_ne!(before, after);
}

#[test]
fn a_tracker_restored_from_its_json_snapshot_gives_the_same_ids_as_one_never_stopped() {
    let frames = sequence(7, 48);
    let want = ours(&TrackerConfig::default(), &frames);
    let mut tracker = Tracker::new(TrackerConfig::default()).unwrap();
    let mut got = Vec::new();
    for (t, f) in frames.iter().enumerate() {
        if t % 5 == 4 {
            let snapshot = serde_json::to_vec(&tracker).unwrap();
            tracker = serde_json::from_slice(&snapshot).unwrap();
        }
        got.push(
            tracker
                .step(f)
                .unwrap()
                .into_iter()
                .map(|a| (a.track_id, a.confirmed))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(got, want);
}

#[test]
fn bad_detections_are_errors_naming_the_detection() {
    let mut tracker = Tracker::new(TrackerConfig::default()).unwrap();
    let ok = Detection {
        ltwh: [0.0, 0.0, 10.0, 10.0],
        confidence: 1.0,
        feature: vec![1.0, 0.0],
    };
    tracker.step(std::slice::from_ref(&ok)).unwrap();
    let short = Detection {
        feature: vec![1.0],
        ..ok.clone()
    };
    let e = tracker.step(&[ok.clone(), short]).unwrap_err().to_string();
    assert!(
        e.contains("detection 1") && e.contains("embedding has 1 numbers"),
        "{e}"
    );
    let empty = Detection {
        ltwh: [0.0, 0.0, 0.0, 10.0],
        ..ok.clone()
    };
    let e = tracker.step(&[empty]).unwrap_err().to_string();
    assert!(e.contains("positive size"), "{e}");
    let nan = Detection {
        feature: vec![f32::NAN, 0.0],
        ..ok
    };
    assert!(tracker
        .step(&[nan])
        .unwrap_err()
        .to_string()
        .contains("NaN"));
}
