//! The API side of the control socket: routes, restart requests answered by a fake
//! run loop, and the registry's rules.

use super::*;
use crate::observe::live::LiveStage;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;

fn post(target: &str, body: &str) -> Request {
    Request {
        method: "POST".into(),
        target: target.into(),
        body: body.as_bytes().to_vec(),
    }
}

/// A registry hosting app `cam` (tasks src, det, out; det has 2 replicas), with its
/// restart channel when `restarts` is given.
fn hosting(restarts: Option<mpsc::Sender<RestartRequest>>) -> (Registry, Arc<AtomicBool>) {
    let registry = Registry::new(true);
    let stage = |task: &str, r: u32, replicas: u32| LiveStage {
        label: format!("{task}#{r}"),
        task: task.into(),
        replicas,
        ..LiveStage::default()
    };
    let live = LiveApp {
        name: "cam".into(),
        state: "running".into(),
        stages: vec![
            stage("src", 0, 1),
            stage("det", 0, 2),
            stage("det", 1, 2),
            stage("out", 0, 1),
        ],
        restarts,
        ..LiveApp::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    registry
        .host(
            "cam",
            Hosted {
                live: Arc::new(Mutex::new(live)),
                stop: stop.clone(),
                tasks: vec!["src".into(), "det".into(), "out".into()],
                outputs: vec!["/data/cam/rows.csv".into()],
            },
        )
        .expect("host cam");
    (registry, stop)
}

/// What a fake run loop was asked: (task, replica) per request.
type Asked = std::thread::JoinHandle<Vec<(String, Option<u32>)>>;

/// A fake run loop: answers every restart request with `answer(task, replica)`.
fn fake_run_loop(
    answer: fn(&str, Option<u32>) -> Result<String, String>,
) -> (mpsc::Sender<RestartRequest>, Asked) {
    let (tx, rx) = mpsc::channel::<RestartRequest>();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for req in rx {
            let _ = req.reply.send(answer(&req.task, req.replica));
            seen.push((req.task, req.replica));
        }
        seen
    });
    (tx, handle)
}

#[test]
fn restart_reaches_the_run_loop_and_returns_its_answer() {
    let (tx, run_loop) =
        fake_run_loop(|task, replica| Ok(format!("restarted {task}#{}", replica.unwrap_or(9))));
    let (registry, _) = hosting(Some(tx));
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "det", "replica": 1}"#),
        &registry,
        None,
    );
    assert_eq!((code, body.as_str()), (200, "restarted det#1\n"));
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "src"}"#),
        &registry,
        None,
    );
    assert_eq!((code, body.as_str()), (200, "restarted src#9\n"));
    // The run loop saw exactly what was asked.
    registry.remove("cam");
    drop(registry);
    let seen = run_loop.join().expect("fake run loop");
    assert_eq!(
        seen,
        vec![("det".to_string(), Some(1)), ("src".to_string(), None)]
    );
}

#[test]
fn a_refusal_of_the_run_loop_is_a_conflict_with_its_message() {
    let (tx, _run_loop) = fake_run_loop(|task, _| Err(format!("{task} is draining")));
    let (registry, _) = hosting(Some(tx));
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "out"}"#),
        &registry,
        None,
    );
    assert_eq!((code, body.as_str()), (409, "out is draining\n"));
}

#[test]
fn unknown_apps_tasks_and_replicas_are_refused_by_name() {
    let (tx, run_loop) = fake_run_loop(|_, _| Ok("restarted".into()));
    let (registry, _) = hosting(Some(tx));
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "nope"}"#),
        &registry,
        None,
    );
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "app 'cam' has no task 'nope'; its tasks: src, det, out\n"
    );
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "det", "replica": 2}"#),
        &registry,
        None,
    );
    assert_eq!(code, 404);
    assert_eq!(body, "task 'det' of app 'cam' has 2 replicas (#0 to #1)\n");
    let (code, _, body) = route(
        &post("/apps/dog/restart", r#"{"task": "det"}"#),
        &registry,
        None,
    );
    assert_eq!(
        (code, body.as_str()),
        (404, "no app 'dog' runs in this supervisor\n")
    );
    let (code, _, body) = route(&post("/apps/cam/restart", "det"), &registry, None);
    assert_eq!(code, 400, "{body}");
    // None of these reached the run loop.
    registry.remove("cam");
    drop(registry);
    assert!(run_loop.join().expect("fake run loop").is_empty());
}

#[test]
fn an_app_without_a_restart_channel_or_that_ended_cannot_restart() {
    let (registry, _) = hosting(None);
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "det"}"#),
        &registry,
        None,
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cannot restart"), "{body}");
    // The run loop is gone (its receiver dropped).
    let (tx, rx) = mpsc::channel();
    drop(rx);
    let (registry, _) = hosting(Some(tx));
    let (code, _, body) = route(
        &post("/apps/cam/restart", r#"{"task": "det"}"#),
        &registry,
        None,
    );
    assert_eq!(
        (code, body.as_str()),
        (409, "app 'cam' is ending and restarts nothing\n")
    );
}

#[test]
fn restart_over_the_socket_carries_the_body_and_the_answer() {
    let dir = std::env::temp_dir().join(format!("smartpipe-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("runtime dir");
    let (tx, _run_loop) =
        fake_run_loop(|task, replica| Ok(format!("{task}#{} replaced", replica.unwrap_or(0))));
    let (registry, _) = hosting(Some(tx));
    let sock = serve(&dir, Arc::new(registry), None, None).expect("serve");
    let (code, body) = crate::control::client::request(
        &sock,
        "POST",
        "/apps/cam/restart",
        Some(r#"{"task": "det", "replica": 0}"#),
        Duration::from_secs(30),
    )
    .expect("request");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((code, body.as_str()), (200, "det#0 replaced\n"));
}

#[test]
fn stop_one_app_and_status_lists_every_app() {
    let (registry, cam_stop) = hosting(None);
    let other_stop = Arc::new(AtomicBool::new(false));
    registry
        .host(
            "dog",
            Hosted {
                live: Arc::new(Mutex::new(LiveApp {
                    name: "dog".into(),
                    ..LiveApp::default()
                })),
                stop: other_stop.clone(),
                tasks: vec![],
                outputs: vec![],
            },
        )
        .expect("host dog");
    let (code, _, body) = route(&post("/apps/dog/stop", ""), &registry, None);
    assert_eq!((code, body.as_str()), (202, "draining app 'dog'\n"));
    assert!(other_stop.load(Ordering::SeqCst));
    assert!(!cam_stop.load(Ordering::SeqCst), "the other app runs on");
    let (code, _, body) = route(&post("/apps/cat/stop", ""), &registry, None);
    assert_eq!(code, 404, "{body}");
    let get = Request {
        method: "GET".into(),
        target: "/status".into(),
        body: vec![],
    };
    let (code, _, body) = route(&get, &registry, None);
    assert_eq!(code, 200);
    let status: SupervisorStatus = serde_json::from_str(&body).expect("status JSON");
    assert!(status.daemon && !status.closing);
    let names: Vec<&str> = status.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["cam", "dog"]);
}

#[test]
fn the_registry_refuses_a_second_app_of_a_name_and_any_app_once_closing() {
    let (registry, stop) = hosting(None);
    let again = || Hosted {
        live: Arc::new(Mutex::new(LiveApp::default())),
        stop: Arc::new(AtomicBool::new(false)),
        tasks: vec![],
        outputs: vec![],
    };
    assert_eq!(
        registry.host("cam", again()),
        Err(HostError::NameTaken("cam".into()))
    );
    let writing = |path: &str| Hosted {
        outputs: vec![path.into()],
        ..again()
    };
    assert_eq!(
        registry.host("copycat", writing("/data/cam/rows.csv")),
        Err(HostError::OutputTaken {
            path: "/data/cam/rows.csv".into(),
            app: "cam".into()
        }),
        "an output another app writes is refused"
    );
    registry
        .host("other", writing("/data/other/rows.csv"))
        .expect("another output is fine");
    registry.remove("other");
    assert!(!registry.close_if_idle(true), "an app still runs");
    assert_eq!(registry.close(), ["cam"]);
    assert!(stop.load(Ordering::SeqCst), "closing drains the apps");
    assert_eq!(registry.host("new", again()), Err(HostError::Closing));
    registry.remove("cam");
    assert!(registry.close_if_idle(false));
    // A daemon that never hosted an app waits for one, unless idle too long.
    let fresh = Registry::new(true);
    assert!(!fresh.close_if_idle(false));
    // Nor while a start request is being answered.
    let busy = fresh.busy();
    assert!(!fresh.close_if_idle(true));
    drop(busy);
    assert!(fresh.close_if_idle(true));
}

struct FakeLauncher(AtomicUsize);

impl Launcher for FakeLauncher {
    fn launch(&self, request: StartRequest) -> Result<String, ApiError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if request.file.ends_with("bad.json") {
            Err(ApiError::new(400, "1 problem in bad.json"))
        } else {
            Ok(format!("started {}", request.file.display()))
        }
    }
}

#[test]
fn apps_are_started_through_the_launcher_only() {
    let registry = Registry::new(false);
    let start = |file: &str| {
        post(
            "/apps",
            &serde_json::to_string(&StartRequest {
                file: file.into(),
                run_dir: "/r".into(),
                startup_timeout_s: 1,
                hang_after_ms: 1,
                env: None,
                cwd: None,
            })
            .expect("json"),
        )
    };
    let (code, _, body) = route(&start("/a/app.json"), &registry, None);
    assert_eq!(code, 405, "a foreground supervisor takes no app: {body}");
    let launcher = FakeLauncher(AtomicUsize::new(0));
    let (code, _, body) = route(&start("/a/app.json"), &registry, Some(&launcher));
    assert_eq!((code, body.as_str()), (200, "started /a/app.json\n"));
    let (code, _, body) = route(&start("/a/bad.json"), &registry, Some(&launcher));
    assert_eq!((code, body.as_str()), (400, "1 problem in bad.json\n"));
    let (code, _, _) = route(&post("/apps", "{}"), &registry, Some(&launcher));
    assert_eq!(code, 400);
    assert_eq!(launcher.0.load(Ordering::SeqCst), 2);
}

#[test]
fn a_start_request_out_of_range_is_refused_before_anything_runs() {
    let ok = StartRequest {
        file: "/apps/a.json".into(),
        run_dir: "/runs/a".into(),
        startup_timeout_s: 20,
        hang_after_ms: 300,
        env: None,
        cwd: None,
    };
    assert_eq!(ok.problem(), None);
    let huge = StartRequest {
        startup_timeout_s: u64::MAX,
        ..ok.clone()
    };
    assert!(huge
        .problem()
        .is_some_and(|p| p.starts_with("startup_timeout_s must be 1 to 86400")));
    let zero = StartRequest {
        hang_after_ms: 0,
        ..ok.clone()
    };
    assert!(zero
        .problem()
        .is_some_and(|p| p.starts_with("hang_after_ms")));
    let relative = StartRequest {
        cwd: Some("relative".into()),
        ..ok.clone()
    };
    assert!(relative.problem().is_some_and(|p| p.contains("absolute")));
    let missing = StartRequest {
        cwd: Some("/no/such/folder".into()),
        ..ok
    };
    assert!(missing
        .problem()
        .is_some_and(|p| p.contains("is not a folder")));
}

#[test]
fn two_spellings_of_one_output_resolve_to_one_path() {
    let dir = std::env::temp_dir().join(format!("sp-outputs-{}", std::process::id()));
    let real = dir.join("real");
    std::fs::create_dir_all(&real).expect("dir");
    let link = dir.join("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let real = real.canonicalize().expect("real");
    let want = real.join("rows.csv").display().to_string();
    std::fs::write(&want, b"rows").expect("the output of an earlier run");
    let _ = std::fs::remove_file(dir.join("to-rows.csv"));
    std::os::unix::fs::symlink(&want, dir.join("to-rows.csv")).expect("symlink to the file");
    for spelling in [
        format!("{}/rows.csv", real.display()),
        format!("{}/./rows.csv", real.display()),
        format!("{}//rows.csv", link.display()),
        format!("{}/../real/rows.csv", real.display()),
        dir.join("to-rows.csv").display().to_string(),
    ] {
        assert_eq!(super::resolved_output(&spelling), want, "{spelling}");
    }
    assert_eq!(
        super::resolved_output("/no/such/folder/./rows.csv"),
        "/no/such/folder/rows.csv",
        "a folder not made yet is taken as written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
