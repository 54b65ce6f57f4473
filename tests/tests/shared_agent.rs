//! One GPU agent per device for every app of a node (issue 13, item 2): apps started
//! with `--detach` go into the node's daemon and their GPU stages use the daemon's one
//! agent for the device instead of one each. Killing that agent (kill -9) while two
//! request-guarantee apps use it restarts it once; both apps attach again and still
//! deliver every item exactly once.

use serde_json::json;
use smartpipe_tests::*;
use std::path::Path;
use std::time::Duration;

/// The daemon's agent for `cpu:0` (an app's own agent is `APP/gpu-agent-cpu0#0`).
const NODE_AGENT: &str = "--agent node/gpu-agent-cpu0";

fn gpu_app(dir: &Path, name: &str, count: u64) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("app dir");
    write_app(
        dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": 25}},
                {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
                {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}},
                {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}},
                {"name": "shown", "kind": "tail", "function": "image.show", "inputs": ["post"], "params": {"dir": "frames"}}
            ]
        }),
    )
}

/// The node agents whose parent is this runtime's daemon (other tests run daemons too).
fn node_agents(rt: &PrivateRuntime) -> Vec<i32> {
    let daemons = rt.supervisor_pids();
    pids_with_cmdline(NODE_AGENT)
        .into_iter()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis: state, then the parent's pid.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            ppid.is_some_and(|p| daemons.contains(&p))
        })
        .collect()
}

fn frames_written(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("frames")).map_or(0, |d| d.count())
}

#[test]
fn two_apps_share_the_nodes_agent_and_survive_its_kill_with_every_item_once() {
    let rt = PrivateRuntime::new("shared-agent");
    let dir = scratch("shared-agent");
    let count = 200;
    let names = [
        format!("sa{}", std::process::id()),
        format!("sb{}", std::process::id()),
    ];
    for name in &names {
        let app = gpu_app(&dir.join(name), name, count);
        start_detached(
            with_models(&mut rt.supervisor()),
            &app,
            &dir.join(format!("run-{name}")),
        );
    }
    // Both apps run their GPU stage on the one agent of the node.
    wait_for("both apps delivering", Duration::from_secs(60), || {
        names.iter().all(|n| frames_written(&dir.join(n)) >= 20)
    });
    let agents = node_agents(&rt);
    assert_eq!(agents.len(), 1, "one agent for the device: {agents:?}");
    for name in &names {
        assert!(
            pids_with_cmdline(&format!(" {name}/gpu-agent")).is_empty(),
            "app {name} has no agent of its own"
        );
        assert_eq!(
            pids_with_cmdline(&format!("--stage {name}/net#0")).len(),
            1,
            "app {name}'s GPU stage runs"
        );
    }
    // Its log, in the daemon's runtime folder, names both apps.
    let log = std::fs::read_to_string(rt.dir.join("agents/gpu-agent-cpu0.log")).unwrap_or_default();
    for name in &names {
        assert!(log.contains(&format!("app=\"{name}\"")), "{log}");
    }

    // kill -9 of the shared agent: it comes back, both apps attach again.
    let old = agents[0];
    // SAFETY: the agent of this test's daemon.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for("the agent restarted", Duration::from_secs(30), || {
        node_agents(&rt).iter().any(|&p| p != old)
    });

    for name in &names {
        let run = dir.join(format!("run-{name}"));
        wait_for(
            &format!("{name} to finish"),
            Duration::from_secs(120),
            || run.join("summary.json").is_file(),
        );
        let summary = read_summary(&run);
        assert_eq!(summary["tails"][0]["items"], count, "{name}: {summary}");
        assert_eq!(summary["tails"][0]["missing"], 0, "{name}: {summary}");
        assert_eq!(summary["lost_total"], 0, "{name}: {summary}");
        assert_eq!(frames_written(&dir.join(name)) as u64, count, "{name}");
        for seq in 0..count {
            assert!(
                dir.join(name)
                    .join(format!("frames/gen-{seq}.png"))
                    .exists(),
                "{name}: frame {seq}"
            );
        }
        // Its GPU stage was pointed at the new agent while items were in flight.
        let stage_log = std::fs::read_to_string(run.join("logs/net#0.log")).unwrap_or_default();
        assert!(
            stage_log.contains("output rewired to a restarted process"),
            "{name}: {stage_log}"
        );
        let timeline = std::fs::read_to_string(run.join("supervisor.log")).unwrap_or_default();
        assert!(!timeline.contains("error:"), "{name}: {timeline}");
    }
}

/// Every frame file of a run, by name.
fn frames_of(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("frames"))
        .expect("frames")
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("frame"),
            )
        })
        .collect()
}

#[test]
fn two_apps_on_the_nodes_agent_load_their_model_once_and_match_a_solo_run() {
    let rt = PrivateRuntime::new("shared-models");
    let dir = scratch("shared-models");
    let count = 40;
    // The same app alone, in the foreground with an agent of its own.
    let solo = format!("so{}", std::process::id());
    let solo_app = gpu_app(&dir.join(&solo), &solo, count);
    let (_, summary) = run_ok_with(
        with_models(rt.supervisor().env("SMARTPIPE_NO_DAEMON", "1")),
        &solo_app,
        &dir.join("run-solo"),
    );
    assert_eq!(summary["tails"][0]["items"], count, "{summary}");
    let expected = frames_of(&dir.join(&solo));
    assert_eq!(expected.len() as u64, count);

    // 'ma' runs long enough (6 s at 25 fps) that 'mb' attaches while it runs however slow
    // the machine: the agent drops a model when the last app using it detaches, and at 40
    // items each 'ma' could end before 'mb' came.
    let names = [
        (format!("ma{}", std::process::id()), 150),
        (format!("mb{}", std::process::id()), count),
    ];
    for (name, items) in &names {
        let app = gpu_app(&dir.join(name), name, *items);
        start_detached(
            with_models(&mut rt.supervisor()),
            &app,
            &dir.join(format!("run-{name}")),
        );
    }
    for (name, items) in &names {
        let run = dir.join(format!("run-{name}"));
        wait_for(
            &format!("{name} to finish"),
            Duration::from_secs(120),
            || run.join("summary.json").is_file(),
        );
        // The same frames, byte for byte, as the solo run (frame names carry the
        // source, which is `gen` in every app, and the item's number).
        let frames = frames_of(&dir.join(name));
        assert_eq!(frames.len() as u64, *items, "{name}");
        for (file, bytes) in &expected {
            assert_eq!(frames.get(file), Some(bytes), "{name}: {file}");
        }
    }
    let log = std::fs::read_to_string(rt.dir.join("agents/gpu-agent-cpu0.log")).unwrap_or_default();
    assert!(log.contains("app attached"), "{log}");
    // One load for both apps: the second app finds the model resident. (On `cpu:0` the
    // agent makes one session per executor thread: the first is the model's load.)
    let loads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("loaded model=mtcnn-pnet"))
        .collect();
    assert_eq!(
        loads.iter().filter(|l| l.contains(" sessions=1 ")).count(),
        1,
        "one load for both apps: {log}"
    );
    let executors: usize = log
        .split("executors=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    assert!(
        loads.len() <= executors,
        "at most one session per executor ({executors}): {log}"
    );
}
