//! Tests of [`super::Residency`] with real sessions (MTCNN's models; skipped when
//! ONNX Runtime is not provisioned and SMARTPIPE_SKIP_MODEL_TESTS=1).

use super::*;

use crate::test_models::{files_as_they_are, model, mtcnn, runtime};

/// Waits for the load in flight and takes it in.
fn settle(res: &mut Residency, done: &mpsc::Receiver<Loaded>) -> Result<(), String> {
    let loaded = done
        .recv_timeout(Duration::from_secs(60))
        .expect("a load finishes");
    res.accept_loaded(loaded, &Demand::default())
}

/// A loader of sessions at one intra-op thread with `opts`, and where its loads arrive.
fn one_thread_loader(
    rt: Runtime,
    opts: SessionOptions,
) -> (mpsc::Sender<AgentModel>, mpsc::Receiver<Loaded>) {
    let (tx, done) = mpsc::channel();
    let threads = Arc::new(AtomicUsize::new(1));
    let loader = start_loader(rt, opts, threads, tx, |l| l).expect("loader");
    (loader, done)
}

#[test]
fn a_model_hosted_for_another_app_with_other_outputs_or_file_is_refused() {
    let (loader, _requests) = mpsc::channel();
    let rec = AgentModel {
        name: "rec".into(),
        path: "/models/rec.onnx".into(),
        bytes: 1,
        max_rows: None,
        max_run_values: None,
        native_tail: None,
        own_arena: false,
        strips: None,
        top1_outputs: true,
        winograd: false,
        outputs: vec!["scores".into()],
    };
    let mut res = Residency::new(vec![], None, loader);
    res.add_models("a", vec![rec.clone()], false)
        .expect("hosted");
    res.add_models("b", vec![rec.clone()], false)
        .expect("the same file answering the same outputs is shared");
    let full = AgentModel {
        top1_outputs: false,
        ..rec.clone()
    };
    let err = res.add_models("c", vec![full], false).unwrap_err();
    assert!(
        err.contains("'rec'") && err.contains("'c'") && err.contains("full outputs"),
        "{err}"
    );
    assert!(
        err.contains("top-1 head") && err.contains("another name"),
        "{err}"
    );
    let fewer = AgentModel {
        outputs: vec![],
        ..rec.clone()
    };
    assert!(res.add_models("c", vec![fewer], false).is_err());
    let other_file = AgentModel {
        path: "/models/other.onnx".into(),
        ..rec
    };
    let err = res.add_models("c", vec![other_file], false).unwrap_err();
    assert!(
        err.contains("other.onnx") && err.contains("rename"),
        "{err}"
    );
    let users = res.users.get("rec").expect("rec is hosted");
    assert!(
        !users.contains("c"),
        "nothing of a refused app is hosted: {users:?}"
    );
}

#[test]
fn loads_ahead_within_the_budget_evicts_least_recently_used_and_skips_failures() {
    let Some(rt) = runtime() else { return };
    let (pnet, rnet) = (
        model("pnet", "mtcnn-pnet.onnx"),
        model("rnet", "mtcnn-rnet.onnx"),
    );
    let broken = AgentModel {
        name: "broken".into(),
        path: "/nonexistent/broken.onnx".into(),
        bytes: 1,
        max_rows: None,
        max_run_values: None,
        native_tail: None,
        own_arena: false,
        strips: None,
        top1_outputs: false,
        winograd: false,
        outputs: vec![],
    };
    // room for rnet, or pnet and the broken one, not for rnet and pnet together
    let budget = rnet.bytes + 1;
    let order: Vec<String> = ["broken", "pnet", "rnet"].map(String::from).to_vec();
    let (tx, done) = mpsc::channel();
    let threads = Arc::new(AtomicUsize::new(1));
    let loader = start_loader(rt, files_as_they_are(), threads, tx, |l| l).expect("loader");
    let mut res = Residency::new(
        vec![broken, pnet.clone(), rnet.clone()],
        Some(budget),
        loader,
    );

    // ahead of requests: the broken model fails once and is not tried again ahead
    res.prefetch_idle(&order);
    assert_eq!(res.loading(), Some("broken"));
    assert!(settle(&mut res, &done).is_err());
    res.prefetch_idle(&order);
    assert_eq!(res.loading(), Some("pnet"));
    settle(&mut res, &done).expect("pnet loads");
    // rnet does not fit beside pnet: nothing more is loaded ahead
    res.prefetch_idle(&order);
    assert_eq!(res.loading(), None);
    assert_eq!(res.used(), pnet.bytes);

    // a request for rnet loads it and evicts pnet, the least recently used idle model
    assert!(res.prefetch("rnet"));
    assert!(!res.prefetch("pnet"), "one load at a time");
    settle(&mut res, &done).expect("rnet loads");
    assert!(res.is_resident("rnet") && !res.is_resident("pnet"));
    assert_eq!((res.loads, res.evictions), (2, 1));

    // a busy model is never evicted, even past the budget
    let (session, generation) = res.checkout("rnet", 0).expect("rnet is idle");
    assert!(res.checkout("rnet", 0).is_none());
    assert!(res.prefetch("pnet"));
    settle(&mut res, &done).expect("pnet loads");
    assert!(res.is_resident("rnet") && res.is_resident("pnet"));
    assert_eq!(res.used(), pnet.bytes + rnet.bytes);
    res.checkin("rnet", session, generation, Some(0));
    assert!(res.checkout("rnet", 0).is_some());
}

#[test]
fn new_threads_renew_every_session_including_the_busy_one_and_a_load_in_flight() {
    let Some(rt) = runtime() else { return };
    let (pnet, rnet, onet) = mtcnn();
    let (tx, done) = mpsc::channel();
    let threads = Arc::new(AtomicUsize::new(2));
    let loader = start_loader(rt, files_as_they_are(), threads.clone(), tx, |l| l).expect("loader");
    let mut res = Residency::new(vec![pnet, rnet, onet], None, loader);
    for name in ["pnet", "rnet"] {
        assert!(res.prefetch(name));
        settle(&mut res, &done).expect("loads");
    }
    let (busy, generation) = res.checkout("rnet", 0).expect("rnet is idle");
    assert!(res.prefetch("onet"));
    // The threads change while rnet runs and onet loads.
    threads.store(1, Ordering::Relaxed);
    res.renew_sessions();
    assert!(
        !res.is_resident("pnet"),
        "idle sessions are dropped at once"
    );
    settle(&mut res, &done).expect("the old load ends");
    assert!(
        !res.is_resident("onet"),
        "a load requested before is not kept"
    );
    res.checkin("rnet", busy, generation, Some(0));
    assert!(
        !res.is_resident("rnet"),
        "the busy session is dropped when it returns"
    );
    assert_eq!(res.used(), 0);
    // Each is made again (with the new threads) when asked for.
    assert!(res.prefetch("rnet"));
    settle(&mut res, &done).expect("rnet loads again");
    assert!(res.is_resident("rnet"));
}

#[test]
fn one_session_per_executor_loaded_ahead_only_beside_every_models_first_extras_evicted_first() {
    let Some(rt) = runtime() else { return };
    let (pnet, rnet, onet) = (
        model("pnet", "mtcnn-pnet.onnx"),
        model("rnet", "mtcnn-rnet.onnx"),
        // a third model a byte larger than rnet (P-Net's file under another name)
        AgentModel {
            bytes: model("rnet", "mtcnn-rnet.onnx").bytes + 1,
            ..model("onet", "mtcnn-pnet.onnx")
        },
    );
    let (p, r, o) = (pnet.bytes, rnet.bytes, onet.bytes);
    // Room for one session of every model and a second of pnet, not of rnet as well:
    // extra sessions never take a model's first one's room.
    let budget = 2 * p + r + o + r / 2;
    // onet is only asked for by a request, below
    let order: Vec<String> = ["pnet", "rnet"].map(String::from).to_vec();
    let (loader, done) = one_thread_loader(rt, files_as_they_are());
    let mut res = Residency::new(
        vec![pnet.clone(), rnet.clone(), onet.clone()],
        Some(budget),
        loader,
    )
    .with_instances(2);
    // Ahead of requests: first one session of each model that fits, then seconds.
    let mut loaded = Vec::new();
    loop {
        res.prefetch_idle(&order);
        let Some(name) = res.loading().map(String::from) else {
            break;
        };
        settle(&mut res, &done).expect("loads");
        loaded.push(name);
    }
    assert_eq!(loaded, ["pnet", "rnet", "pnet"]);
    assert_eq!((res.sessions("pnet"), res.sessions("rnet")), (2, 1));
    // With room for them, the second rnet session is loaded too.
    let budget = 2 * p + 2 * r + o;
    res.set_budget(Some(budget));
    res.prefetch_idle(&order);
    assert_eq!(res.loading(), Some("rnet"));
    settle(&mut res, &done).expect("loads");
    assert_eq!((res.sessions("pnet"), res.sessions("rnet")), (2, 2));
    assert_eq!(res.used(), budget - o);
    // Two runs of pnet at once: both sessions out, none idle.
    let a = res.checkout("pnet", 0).expect("one");
    let b = res.checkout("pnet", 1).expect("the other");
    assert!(res.checkout("pnet", 0).is_none() && !res.has_idle("pnet"));
    // The budget shrinks (another app attached) and onet is needed: the extra idle rnet
    // session goes, not a model's only one.
    res.set_budget(Some(2 * p + r + o));
    assert!(res.prefetch("onet"));
    settle(&mut res, &done).expect("onet loads");
    assert_eq!(
        (
            res.sessions("pnet"),
            res.sessions("rnet"),
            res.sessions("onet")
        ),
        (2, 1, 1)
    );
    assert_eq!(res.evictions, 1);
    res.checkin("pnet", a.0, a.1, Some(0));
    res.checkin("pnet", b.0, b.1, Some(1));
    assert_eq!(res.sessions("pnet"), 2);
    assert!(res.has_idle("pnet"));
}

#[test]
fn an_executor_gets_the_session_it_ran_last() {
    // Idle sessions in the order they went idle, by the executor that ran each last.
    assert_eq!(session_for(&[Some(0), Some(1)], |&e| e, 0), Some(0));
    assert_eq!(session_for(&[Some(0), Some(1)], |&e| e, 1), Some(1));
    assert_eq!(session_for(&[Some(1), Some(0)], |&e| e, 0), Some(1));
    // The one it ran most recently when it ran several.
    assert_eq!(
        session_for(&[Some(0), Some(1), Some(0)], |&e| e, 0),
        Some(2)
    );
    // None of its own: a fresh one before one another executor ran…
    assert_eq!(session_for(&[Some(1), None, Some(1)], |&e| e, 0), Some(1));
    // …else the one that went idle last.
    assert_eq!(session_for(&[Some(1), Some(2)], |&e| e, 0), Some(1));
    assert_eq!(session_for(&[None, None], |&e| e, 3), Some(1));
    assert_eq!(session_for(&[], |&e| e, 0), None);
}

/// waifu2x UpConv7 under `budget` (a multiple of its file's bytes), its first load settled:
/// Winograd's weights of its two widest layers are 4× theirs on cpu:0.
fn upconv7_loaded_once(
    rt: Runtime,
    budget_files: Option<u64>,
) -> (Residency, mpsc::Receiver<Loaded>, u64) {
    let sr = AgentModel {
        winograd: true,
        ..model("sr", "waifu2x-upconv7-x2.onnx")
    };
    let file_bytes = sr.bytes;
    let (loader, done) = one_thread_loader(rt, SessionOptions::default());
    let budget = budget_files.map(|n| n * file_bytes);
    let mut res = Residency::new(vec![sr], budget, loader);
    assert!(res.prefetch("sr"));
    settle(&mut res, &done).expect("sr loads");
    (res, done, file_bytes)
}

#[test]
fn a_model_rewritten_larger_than_its_file_counts_what_was_loaded() {
    let Some(rt) = runtime() else { return };
    let (res, _, file_bytes) = upconv7_loaded_once(rt, None);
    assert!(
        res.used() > 2 * file_bytes,
        "{} bytes used for a {file_bytes}-byte file",
        res.used()
    );
}

#[test]
fn a_model_whose_winograd_weights_outgrow_the_budget_is_loaded_again_without_them() {
    let Some(rt) = runtime() else { return };
    // the file fits twice over; its graph with Winograd's weights does not (test above)
    let (mut res, done, file_bytes) = upconv7_loaded_once(rt, Some(2));
    assert_eq!(res.sessions("sr"), 0, "the grown session is dropped");
    assert!(!res.prefetch("sr"), "and loaded again at once");
    settle(&mut res, &done).expect("sr loads again");
    assert_eq!(res.sessions("sr"), 1);
    assert_eq!(
        res.used(),
        file_bytes,
        "counted as its file: the graph as it is"
    );
}

#[test]
fn a_best_effort_apps_load_evicts_its_own_models_before_a_guaranteed_apps() {
    let Some(rt) = runtime() else { return };
    let (pnet, rnet, onet) = mtcnn();
    // room for pnet and onet, not for all three
    let budget = pnet.bytes + onet.bytes;
    assert!(
        rnet.bytes > pnet.bytes,
        "rnet alone must not make room for onet"
    );
    let (loader, done) = one_thread_loader(rt, files_as_they_are());
    let mut res = Residency::new(vec![], Some(budget), loader);
    res.add_models("g", vec![pnet.clone()], true)
        .expect("hosted");
    res.add_models("b", vec![rnet.clone(), onet.clone()], false)
        .expect("hosted");
    for name in ["pnet", "rnet"] {
        assert!(res.prefetch(name));
        settle(&mut res, &done).expect("loads");
    }
    // pnet is the least recently used, but the guaranteed app's: rnet goes
    assert!(res.prefetch("onet"));
    settle(&mut res, &done).expect("onet loads");
    assert!(
        res.is_resident("pnet") && res.is_resident("onet") && !res.is_resident("rnet"),
        "the best-effort app's model was evicted, not the guaranteed app's"
    );
    assert_eq!(res.evictions, 1);

    // once 'g' has left, its model is no longer hosted at all
    assert_eq!(res.remove_app("g"), ["pnet"]);
    assert!(!res.is_resident("pnet"));
}

#[test]
fn a_loaded_session_runs_with_its_manifest_value_cap() {
    let Some(rt) = runtime() else { return };
    let rnet = AgentModel {
        max_run_values: Some(32_000),
        ..model("rnet", "mtcnn-rnet.onnx")
    };
    let (loader, done) = one_thread_loader(rt, SessionOptions::default());
    let mut res = Residency::new(vec![rnet], None, loader);
    assert!(res.prefetch("rnet"));
    settle(&mut res, &done).expect("rnet loads");
    let (session, generation) = res.checkout("rnet", 0).expect("resident");
    // 32,000 values hold 18 crops of 24×24×3; a bigger batch runs 18 at a time.
    assert_eq!(session.rows_per_run_for(&[400, 24, 24, 3]), Some(18));
    assert_eq!(session.rows_per_run_for(&[10, 24, 24, 3]), Some(18));
    res.checkin("rnet", session, generation, Some(0));
}

#[test]
fn a_model_with_its_own_arena_is_loaded_outside_the_shared_one() {
    let Some(rt) = runtime() else { return };
    let (pnet, rnet, _) = mtcnn();
    let pnet = AgentModel {
        own_arena: true,
        ..pnet
    };
    // The agent's options on cpu:0: every session in the shared arena but pnet's.
    let opts = crate::sessions::agent_session_options(vision::Provider::Cpu, 1);
    assert!(opts.shared_arena);
    let (loader, done) = one_thread_loader(rt, opts);
    let mut res = Residency::new(vec![pnet, rnet], None, loader);
    for name in ["pnet", "rnet"] {
        assert!(res.prefetch(name));
        settle(&mut res, &done).expect("loads");
    }
    let (p, pg) = res.checkout("pnet", 0).expect("resident");
    let (r, rg) = res.checkout("rnet", 0).expect("resident");
    assert_eq!((p.shared_arena(), r.shared_arena()), (false, true));
    res.checkin("pnet", p, pg, Some(0));
    res.checkin("rnet", r, rg, Some(0));
}

#[test]
fn a_session_with_a_native_tail_answers_the_whole_graphs_output() {
    let Some(rt) = runtime() else { return };
    let pose = AgentModel {
        native_tail: Some(vision::native_tail::NativeTail::MovenetMultipose),
        ..model("pose", "movenet-multipose.onnx")
    };
    let (loader, done) = one_thread_loader(rt, SessionOptions::default());
    let mut res = Residency::new(vec![pose], None, loader);
    assert!(res.prefetch("pose"));
    settle(&mut res, &done).expect("the graph is cut at MoveNet's heads");
    let (mut session, generation) = res.checkout("pose", 0).expect("resident");
    assert_eq!(
        session.native_tail(),
        Some(vision::native_tail::NativeTail::MovenetMultipose)
    );
    let frame = vision::TensorF32::zeros(vec![1, 128, 128, 3]);
    let out = session.run(std::slice::from_ref(&frame)).expect("run");
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].shape,
        [1, 6, 56],
        "the decoded output, not the heads"
    );
    res.checkin("pose", session, generation, Some(0));
}
