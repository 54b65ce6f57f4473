//! Fuzz test of the app file: mutants of the seed apps in `tests/corpus/apps` (byte-level
//! and JSON-aware) through parsing, `validate` and `plan`, in-process. None may panic or
//! hang, and whatever the checks `supervisor validate` runs accept, `start` must accept
//! too: the process limit and the pool limits that wiring and `SlotPool::create` check.
//! Inputs that once failed are kept in `tests/corpus/apps/crashes` and replayed first.
//! `FUZZ_SEED=` replays a run; `FUZZ_CASES=` changes the count.

use crate::plan::plan_with;
use crate::plan::preflight::task_problems;
use protocol::limits::Limits;
use protocol::shm::{region_bytes, MAX_HOLDER_ID};
use protocol::spec::parse_app;
use protocol::validate::validate_with;
use serde_json::Value;
use smartpipe_tests::mutate::{
    cases_from_env, corpus_files, mutate_bytes, mutate_json, watch_for_hangs, Rng,
};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// What one input came to.
#[derive(Debug, PartialEq)]
enum Verdict {
    Unparsed,
    Refused,
    Accepted,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus")
}

/// Point every source at the corpus images (a mutated path could name `/` or a glob over
/// the whole disk) and leave video sources out (ffprobe per mutant is too slow).
fn tame(mut doc: Value) -> Option<Value> {
    let images = corpus().join("images").display().to_string();
    let Some(tasks) = doc.get_mut("tasks").and_then(Value::as_array_mut) else {
        return Some(doc);
    };
    for task in tasks {
        match task.get("function").and_then(Value::as_str) {
            Some("source.video") => return None,
            Some("source.images") => {
                if let Some(params) = task.get_mut("params").and_then(Value::as_object_mut) {
                    params.insert("path".into(), Value::String(images.clone()));
                }
            }
            _ => {}
        }
    }
    Some(doc)
}

/// Parse, validate and plan `text` as `supervisor validate` does; panics (naming the
/// input) when validation accepts what `start` would refuse.
fn check(text: &str, limits: &Limits) -> Verdict {
    let Ok(app) = parse_app(text) else {
        return Verdict::Unparsed;
    };
    if validate_with(&app, Ok(*limits)).is_err() || !task_problems(&app).is_empty() {
        return Verdict::Refused;
    }
    let Ok(plan) = plan_with(&app, limits) else {
        return Verdict::Refused;
    };
    let agent = u64::from(
        app.tasks
            .iter()
            .any(|t| t.kind == protocol::spec::TaskKind::Gpu),
    );
    let processes: u64 = plan
        .stages
        .iter()
        .map(|s| u64::from(s.replicas))
        .sum::<u64>()
        + agent;
    assert!(
        processes <= u64::from(MAX_HOLDER_ID),
        "validated, but wiring refuses {processes} processes:\n{text}"
    );
    for s in &plan.stages {
        if let Some(p) = &s.pool {
            let bytes = region_bytes(p.slots, p.slot_size, 1);
            assert!(
                limits.check_pool("", bytes).is_ok()
                    && limits.check_slot("", p.slot_size.into()).is_ok(),
                "validated, but SlotPool::create refuses {} slots of {} bytes for '{}':\n{text}",
                p.slots,
                p.slot_size,
                s.task
            );
        }
    }
    Verdict::Accepted
}

/// The fuzz loop; sends a heartbeat per case so the caller can tell a hang.
fn run(cases: usize, seed: u64, beat: mpsc::Sender<String>) -> [usize; 3] {
    let limits = Limits::default();
    let mut counts = [0usize; 3];
    let mut tally = |v: Verdict| {
        counts[match v {
            Verdict::Unparsed => 0,
            Verdict::Refused => 1,
            Verdict::Accepted => 2,
        }] += 1
    };
    for crash in corpus_files(&corpus().join("apps/crashes")) {
        let text = std::fs::read_to_string(&crash).unwrap_or_default();
        let _ = beat.send(text.clone());
        tally(check(&text, &limits));
    }
    let seeds: Vec<Value> = corpus_files(&corpus().join("apps"))
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .filter_map(tame)
        .collect();
    assert!(seeds.len() >= 4, "the seed apps of tests/corpus/apps");
    for seed_doc in &seeds {
        let text = seed_doc.to_string();
        assert_eq!(check(&text, &limits), Verdict::Accepted, "seed:\n{text}");
    }
    let mut rng = Rng::new(seed);
    let mut checked = 0;
    while checked < cases {
        let mut doc = rng.pick(&seeds).clone();
        let text = if rng.below(4) != 0 {
            mutate_json(&mut rng, &mut doc);
            match tame(doc) {
                Some(doc) => doc.to_string(),
                None => continue,
            }
        } else {
            let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
            mutate_bytes(&mut rng, &mut bytes);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match serde_json::from_str::<Value>(&text).ok().map(tame) {
                Some(None) => continue,
                Some(Some(doc)) => doc.to_string(),
                None => text,
            }
        };
        let _ = beat.send(text.clone());
        tally(check(&text, &limits));
        checked += 1;
    }
    counts
}

#[test]
fn app_file_mutants_never_panic_hang_or_pass_validate_where_start_refuses() {
    let cases = cases_from_env(10_000);
    let seed = Rng::seed_from_env(0x05ee_da99);
    let (beat, beats) = mpsc::channel::<String>();
    let worker = std::thread::spawn(move || run(cases, seed, beat));
    let last = watch_for_hangs(beats, |text| format!("this input:\n{text}"));
    match worker.join() {
        Ok([unparsed, refused, accepted]) => {
            println!(
                "app fuzz (seed {seed}): {} cases: {unparsed} not parsed, {refused} refused, {accepted} accepted",
                unparsed + refused + accepted
            );
            assert!(
                unparsed + refused + accepted >= cases * 9 / 10,
                "most mutants were checked"
            );
            assert!(
                accepted > 0 && refused > 0,
                "the mutants reach both verdicts"
            );
        }
        Err(_) => panic!(
            "a mutant panicked (its input is above); add it to tests/corpus/apps/crashes:\n{last}"
        ),
    }
}
