//! Delivery under process faults: kill -9 of every kind of process mid-stream in a
//! request-guarantee app gives every input exactly once and in order; a seeded soak
//! kills a random stage every ~0.5 s; a best-effort app reports exactly the loss it
//! suffered. After every scenario: no process, memfd or held slot is left.

use serde_json::{json, Value};
use smartpipe_tests::kill::{assert_nothing_left, kill_and_wait_for_replacement, pid_of};
use smartpipe_tests::*;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Supervisors clean each other's stale runtime files and these tests load the CPU:
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn cpu_chain(name: &str, service: &str, count: u64, fps: u64) -> Value {
    cpu_chain_into(
        name,
        service,
        count,
        fps,
        json!({"format": "csv", "path": "rows.csv"}),
    )
}

/// The chain of [`cpu_chain`] with the tail's `table.print` params.
fn cpu_chain_into(name: &str, service: &str, count: u64, fps: u64, print: Value) -> Value {
    json!({
        "name": name,
        "service_type": service,
        "tasks": [
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 32, "height": 24, "count": count, "fps": fps}},
            {"name": "small", "kind": "cpu", "function": "image.resize", "inputs": ["gen"], "params": {"width": 16, "height": 12}},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["small"]},
            {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["fwd"], "params": print}
        ]
    })
}

/// Wait until the tail has written at least `n` rows.
fn wait_for_rows(csv: &Path, n: usize) {
    wait_for(&format!("{n} rows"), Duration::from_secs(60), || {
        std::fs::read_to_string(csv).is_ok_and(|t| t.lines().count() > n)
    });
}

#[test]
fn kill_9_of_head_body_and_tail_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("kill-cpu");
    let name = format!("killcpu{}", std::process::id());
    let count = 800;
    let app = write_app(&dir, &cpu_chain(&name, "request-guarantee", count, 200));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    for (k, label) in ["gen#0", "small#0", "fwd#0", "rows#0"].iter().enumerate() {
        wait_for_rows(&csv, 100 * (k + 1));
        kill_and_wait_for_replacement(&name, label);
    }
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let got = csv_seqs(&csv);
    assert_eq!(
        got,
        (0..count).collect::<Vec<_>>(),
        "every item once, in order"
    );
    let summary = read_summary(&dir.join("run"));
    for label in ["gen#0", "small#0", "fwd#0", "rows#0"] {
        assert_eq!(summary["restarts"][label], 1, "{label}: {summary}");
    }
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
    // The killed tail's deliveries count in the latency figures (they came with its
    // acknowledgements; before, only its final report had them, which it never sent).
    assert_eq!(
        summary["latency_ms"]["count"], count,
        "a latency per item delivered: {summary}"
    );
    assert_nothing_left(&name, &summary, pid);
}

/// A Parquet file has no footer until it is closed: a tail killed mid-run used to leave
/// an unreadable part while the rows in it counted as delivered. The rows now go to a
/// journal that the restarted tail resumes, and one file holds every item once.
#[test]
fn kill_9_of_a_parquet_tail_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("kill-parquet");
    let name = format!("killpq{}", std::process::id());
    let count = 600;
    let print = json!({"format": "parquet", "path": "rows.parquet"});
    let app = write_app(
        &dir,
        &cpu_chain_into(&name, "request-guarantee", count, 200, print),
    );
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let (file, journal) = (
        dir.join("rows.parquet"),
        dir.join("rows.parquet.rows.arrows"),
    );
    // A table of one frame row is a few hundred bytes in the journal (the file itself,
    // written at the end, is looked at too: a tail that wrote it as it went is killed
    // once it has rows as well).
    let grown = |f: &Path, bytes: u64| std::fs::metadata(f).is_ok_and(|m| m.len() > bytes);
    wait_for("rows in the journal", Duration::from_secs(60), || {
        grown(&journal, 40_000) || grown(&file, 4_000)
    });
    kill_and_wait_for_replacement(&name, "rows#0");
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert_eq!(
        parquet_seqs(&file),
        (0..count).collect::<Vec<_>>(),
        "every item once, in order, in one readable file"
    );
    assert!(
        !journal.exists(),
        "the journal is removed once the file is written"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["rows#0"], 1, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
    assert_eq!(
        summary["restarted_outputs"],
        json!([]),
        "resumed, not started over: {summary}"
    );
    assert_nothing_left(&name, &summary, pid);
}

/// The seq column of a pretty table (`| source | seq | …` rows), in order.
fn pretty_seqs(table: &str) -> Vec<u64> {
    table
        .lines()
        .filter(|l| l.starts_with("| gen "))
        .map(|l| {
            l.split('|')
                .nth(2)
                .and_then(|c| c.trim().parse().ok())
                .unwrap_or_else(|| panic!("a row without a seq: {l}"))
        })
        .collect()
}

/// A pretty table (the default format) is written at the end: a tail killed mid-run used
/// to come back with an empty table, so the rows before the kill were gone while they
/// counted as delivered. Its rows now wait in a journal the restarted tail resumes, both
/// for a file and for stdout.
#[test]
fn kill_9_of_a_pretty_tail_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for to_file in [true, false] {
        let dir = scratch(&format!("kill-pretty-{to_file}"));
        let name = format!("killpretty{}{}", u8::from(to_file), std::process::id());
        let count = 600;
        let print = if to_file {
            json!({"format": "pretty", "path": "table.txt"})
        } else {
            json!({})
        };
        let app = write_app(
            &dir,
            &cpu_chain_into(&name, "request-guarantee", count, 200, print),
        );
        let journal = if to_file {
            dir.join("table.txt.rows.jsonl")
        } else {
            dir.join("run/rows#0.table.rows.jsonl")
        };
        let stdout = std::fs::File::create(dir.join("stdout.txt")).expect("stdout file");
        let mut sup = supervisor()
            .arg("start")
            .arg(&app)
            .arg("--run-dir")
            .arg(dir.join("run"))
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the supervisor");
        let grown = |f: &Path, bytes: u64| std::fs::metadata(f).is_ok_and(|m| m.len() > bytes);
        wait_for("rows in the journal", Duration::from_secs(60), || {
            grown(&journal, 8_000)
        });
        kill_and_wait_for_replacement(&name, "rows#0");
        let status = sup.wait().expect("wait for the supervisor");
        assert!(status.success(), "to_file {to_file}");
        let table = if to_file {
            std::fs::read_to_string(dir.join("table.txt")).expect("table")
        } else {
            std::fs::read_to_string(dir.join("stdout.txt")).expect("stdout")
        };
        assert_eq!(
            pretty_seqs(&table),
            (0..count).collect::<Vec<_>>(),
            "to_file {to_file}: every item once, in order"
        );
        assert!(
            !journal.exists(),
            "the journal is removed once the table is written"
        );
        let summary = read_summary(&dir.join("run"));
        assert_eq!(summary["restarts"]["rows#0"], 1, "{summary}");
        assert_eq!(summary["lost_total"], 0, "{summary}");
        assert_eq!(
            summary["restarted_outputs"],
            json!([]),
            "resumed: {summary}"
        );
    }
}

#[test]
fn kill_9_of_gpu_stage_and_agent_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("kill-gpu");
    let name = format!("killgpu{}", std::process::id());
    let count = 150;
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": count, "fps": 30}},
                {"name": "pre", "kind": "cpu", "function": "model.preprocess", "inputs": ["gen"], "params": {"model": "mtcnn-pnet"}},
                {"name": "net", "kind": "gpu", "function": "model.inference", "inputs": ["pre"], "params": {"model": "mtcnn-pnet"}},
                {"name": "post", "kind": "cpu", "function": "model.postprocess", "inputs": ["net"], "params": {"model": "mtcnn-pnet"}},
                {"name": "shown", "kind": "tail", "function": "image.show", "inputs": ["post"], "params": {"dir": "frames"}}
            ]
        }),
    );
    // The app's own agent is the one killed (the node's shared agent has its own test,
    // shared_agent.rs): a supervisor of its own even when the suites run through the daemon.
    let sup = start_in_background(
        with_models(supervisor().env("SMARTPIPE_NO_DAEMON", "1")),
        &app,
        &dir.join("run"),
    );
    let frames = dir.join("frames");
    let written = || std::fs::read_dir(&frames).map_or(0, |d| d.count());
    wait_for("frames", Duration::from_secs(60), || written() >= 20);
    kill_and_wait_for_replacement(&name, "net#0");
    let at = written();
    wait_for("frames after the restart", Duration::from_secs(60), || {
        written() >= at + 20
    });
    kill_and_wait_for_replacement(&name, "gpu-agent-cpu0#0");
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["tails"][0]["items"], count, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], 0, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_eq!(summary["restarts"]["net#0"], 1, "{summary}");
    assert_eq!(summary["restarts"]["gpu-agent-cpu0#0"], 1, "{summary}");
    for seq in 0..count {
        assert!(
            frames.join(format!("gen-{seq}.png")).exists(),
            "frame {seq}"
        );
    }
    assert_eq!(written() as u64, count);
    assert_nothing_left(&name, &summary, pid);
}

#[test]
fn best_effort_reports_exactly_the_loss_it_suffered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("kill-best-effort");
    let name = format!("killbe{}", std::process::id());
    let count = 800;
    let app = write_app(&dir, &cpu_chain(&name, "best-effort", count, 200));
    let sup = start_in_background(&mut supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    for (k, label) in ["small#0", "fwd#0", "small#0"].iter().enumerate() {
        wait_for_rows(&csv, 100 * (k + 1));
        kill_and_wait_for_replacement(&name, label);
    }
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    let got = csv_seqs(&csv);
    let mut unique = got.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "no duplicates");
    let summary = read_summary(&dir.join("run"));
    let really_lost = count - got.len() as u64;
    assert_eq!(summary["lost_total"], really_lost, "{summary}");
    assert_eq!(summary["tails"][0]["missing"], really_lost, "{summary}");
    assert_eq!(summary["items_out"], got.len() as u64, "{summary}");
    assert_nothing_left(&name, &summary, pid);
}

/// A small deterministic generator, so a failing soak can be replayed by its seed.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
fn soak_random_kills_every_half_second_still_exactly_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("soak seed {seed} (rerun with SOAK_SEED={seed})");
    let mut rng = SplitMix(seed);
    let dir = scratch("soak");
    let name = format!("soak{}", std::process::id());
    let count = 5000;
    let app = write_app(&dir, &cpu_chain(&name, "request-guarantee", count, 500));
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_MAX_RESTARTS", "100"),
        &app,
        &dir.join("run"),
    );
    let csv = dir.join("rows.csv");
    wait_for_rows(&csv, 1);
    let labels = ["gen#0", "small#0", "fwd#0", "rows#0"];
    let mut kills = 0;
    let done =
        || std::fs::read_to_string(&csv).is_ok_and(|t| t.lines().count() as u64 > count - 200);
    while !done() {
        let label = labels[(rng.next() % labels.len() as u64) as usize];
        if let Some(pid) = pid_of(&name, label) {
            // SAFETY: killing a process of this test's app.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            kills += 1;
        }
        // ~0.5 s between kills, jittered by the seed.
        std::thread::sleep(Duration::from_millis(400 + rng.next() % 200));
    }
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "seed {seed}: {err}");
    let got = csv_seqs(&csv);
    assert_eq!(got.len() as u64, count, "seed {seed}: every item once");
    assert!(
        got.iter().enumerate().all(|(k, &s)| s == k as u64),
        "seed {seed}: in order"
    );
    let summary = read_summary(&dir.join("run"));
    let mut first: Vec<f64> = summary["restart_to_first_output_ms"]
        .as_array()
        .expect("restart times")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    first.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        first[((p / 100.0 * first.len() as f64).ceil() as usize).clamp(1, first.len()) - 1]
    };
    assert!(kills >= 10, "seed {seed}: only {kills} kills");
    assert!(!first.is_empty(), "seed {seed}: no restart produced output");
    println!(
        "soak: {count} items, {kills} kills, restart to first output p50 {:.0} ms, p99 {:.0} ms ({} restarts measured)",
        pct(50.0),
        pct(99.0),
        first.len()
    );
    assert_nothing_left(&name, &summary, pid);
}

#[test]
fn restart_through_the_api_replaces_a_stage_without_losing_an_item() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = PrivateRuntime::new("restart-api");
    let dir = scratch("restart-api");
    let name = format!("restartapi{}", std::process::id());
    let count = 600;
    let app = write_app(&dir, &cpu_chain(&name, "request-guarantee", count, 200));
    let sup = start_in_background(&mut runtime.supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    wait_for_rows(&csv, 100);
    let old = pid_of(&name, "small#0").expect("small runs");
    let out = runtime
        .supervisor()
        .args(["restart", &format!("{name}/small")])
        .output()
        .expect("restart");
    let said = printed(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("small#0"), "{said}");
    wait_for("the new small#0", Duration::from_secs(20), || {
        pid_of(&name, "small#0").is_some_and(|p| p != old)
    });
    let wrong = runtime
        .supervisor()
        .args(["restart", &format!("{name}/nope")])
        .output()
        .expect("restart");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("small"),
        "lists the tasks: {}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert_eq!(csv_seqs(&csv), (0..count).collect::<Vec<_>>());
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"]["small#0"], 1, "{summary}");
    assert_nothing_left(&name, &summary, pid);
}

/// A drain asked while a head is being restarted (killed, its new process not yet
/// started) reaches the new head: the app drains instead of producing on until the drain
/// times out and fails it (3 runs of 3 before the fix).
#[test]
fn a_drain_right_after_a_head_restart_reaches_the_new_head() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = PrivateRuntime::new("restart-drain");
    let dir = scratch("restart-drain");
    let name = format!("restartdrain{}", std::process::id());
    // 40 s of items at 50 per second: only a drain ends it within the test.
    let app = write_app(&dir, &cpu_chain(&name, "request-guarantee", 2000, 50));
    let sup = start_in_background(&mut runtime.supervisor(), &app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    wait_for_rows(&csv, 20);
    // The head killed (restarted after a 100 ms backoff), then at once the drain: it
    // reaches no head (the dead one's inbox is gone), so the new one must get it.
    let head = pid_of(&name, "gen#0").expect("the head runs");
    // SAFETY: killing the head this test's app started, then signalling its supervisor.
    unsafe {
        libc::kill(head, libc::SIGKILL);
        libc::kill(sup.id() as i32, libc::SIGINT);
    }
    let pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "drained, not failed: {err}");
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["outcome"], "drained after a signal", "{summary}");
    let got = csv_seqs(&csv);
    assert!(got.len() < 2000, "the drain ended the source early");
    assert_eq!(
        got,
        (0..got.len() as u64).collect::<Vec<_>>(),
        "once, in order"
    );
    assert_nothing_left(&name, &summary, pid);
}

/// Issue 14: a request-guarantee head whose every slot waits for the tails'
/// acknowledgements must get them as soon as the tail delivered, not when some
/// loop's receive times out (it ran at 40 items/s, 8 slots per 200 ms). The tail
/// counts every receive that timed out while it held an unsent acknowledgement.
#[test]
fn a_guaranteed_chain_never_waits_for_an_acknowledgement_timeout() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("ack-stalls");
    let count = 2000u64;
    let app = write_app(
        &dir,
        &json!({
            "name": format!("acks{}", std::process::id()),
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 64, "count": count, "fps": 0}},
                {"name": "f1", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
                {"name": "f2", "kind": "cpu", "function": "core.forward", "inputs": ["f1"]},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["f2"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(
        csv_seqs(&dir.join("rows.csv")),
        (0..count).collect::<Vec<_>>(),
        "every item once, in order"
    );
    assert_eq!(
        summary["stages"]["rows#0"]["ack_stalls"], 0,
        "the tail slept on acknowledgements the head was waiting for: {}",
        summary["stages"]["rows#0"]
    );
}
