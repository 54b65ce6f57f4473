//! Outputs written whole when their tail ends (a Parquet file, a pretty table to a file,
//! an MP4) after a stop at once: the run names each one it did not write and where its
//! items are kept, and `supervisor finish-outputs` writes them with every item the tails
//! had received; until then a new run, which would start them over, is refused.

use serde_json::json;
use smartpipe_tests::solid::solid_seqs;
use smartpipe_tests::*;
use std::path::Path;
use std::time::Duration;

/// Rows of the whole tables in a Parquet tail's journal so far (none while it is cut).
fn journal_rows(journal: &Path) -> usize {
    let Ok(open) = std::fs::File::open(journal) else {
        return 0;
    };
    arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(open), None)
        .map(|reader| reader.flatten().map(|b| b.num_rows()).sum())
        .unwrap_or(0)
}

/// The `seq` column of a pretty table (rule, header, rule, a line per row, rule).
fn seqs_of_table(table: &str) -> Vec<u64> {
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() >= 4, "not a table: {table}");
    assert!(lines[1].contains("| seq |"), "{table}");
    lines[3..lines.len() - 1]
        .iter()
        .map(|l| {
            l.split('|')
                .nth(2)
                .and_then(|c| c.trim().parse().ok())
                .expect("a seq")
        })
        .collect()
}

fn lines_in(file: &Path) -> usize {
    std::fs::read_to_string(file).map_or(0, |t| t.lines().count())
}

/// `supervisor COMMAND APP --run-dir RUN` with `test.fault` allowed.
fn with_faults(command: &[&str], app: &Path, run_dir: &Path) -> std::process::Output {
    supervisor()
        .env("SMARTPIPE_TEST_FAULTS", "1")
        .args(command)
        .arg(app)
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("supervisor")
}

fn finish_outputs(app: &Path) -> std::process::Output {
    supervisor()
        .env("SMARTPIPE_TEST_FAULTS", "1")
        .arg("finish-outputs")
        .arg(app)
        .output()
        .expect("supervisor finish-outputs")
}

/// 80 frames reach three tails, then the stage before them hangs ignoring stop: a drain
/// cannot end, and a second signal stops the app at once, its tails by SIGTERM before
/// they wrote their files.
#[test]
fn a_stop_at_once_names_the_outputs_not_written_and_finish_outputs_writes_them() {
    require_ffmpeg();
    let dir = scratch("unfinished-outputs");
    let name = format!("unfinished{}", std::process::id());
    let delivered = 80u64;
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "service_type": "best-effort",
            "strategy": "balance",
            "tasks": [
                {"name": "cam", "kind": "head", "function": "image.gen",
                 "params": {"width": 64, "height": 48, "count": 100000, "fps": 200, "pattern": "solid"}},
                {"name": "stuck", "kind": "cpu", "function": "test.fault", "inputs": ["cam"],
                 "params": {"mode": "ignore-stop", "after": delivered}},
                {"name": "video", "kind": "tail", "function": "image.show", "inputs": ["stuck"],
                 "params": {"path": "out/video.mp4"}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["stuck"],
                 "params": {"format": "parquet", "path": "out/rows.parquet"}},
                {"name": "table", "kind": "tail", "function": "table.print", "inputs": ["stuck"],
                 "params": {"path": "out/table.txt"}},
                {"name": "printed", "kind": "tail", "function": "table.print", "inputs": ["stuck"],
                 "params": {}}
            ]
        }),
    );
    let out = dir.join("out");
    let sup = start_in_background(
        supervisor().env("SMARTPIPE_TEST_FAULTS", "1"),
        &app,
        &dir.join("run"),
    );
    wait_for(
        "every tail to hold the 80 items",
        Duration::from_secs(60),
        || {
            lines_in(&out.join("video.mp4.segments/0.frames")) == 1 + delivered as usize
                && lines_in(&out.join("table.txt.rows.jsonl")) == 1 + delivered as usize
                && journal_rows(&out.join("rows.parquet.rows.arrows")) == delivered as usize
        },
    );

    // Its tails are writing: finishing their outputs now is refused, and so is a second
    // start (for that reason, not for the journals, which are the running tails').
    let early = finish_outputs(&app);
    assert!(!early.status.success(), "{}", printed(&early));
    assert!(
        printed(&early).contains("is written by the running app"),
        "{}",
        printed(&early)
    );
    let twice = with_faults(&["start"], &app, &dir.join("run-twice"));
    assert!(!twice.status.success());
    assert!(
        printed(&twice).contains("is written by the running app")
            && !printed(&twice).contains("did not write"),
        "{}",
        printed(&twice)
    );

    // SAFETY: signalling the supervisor this test started: a drain, then a stop at once.
    unsafe { libc::kill(sup.id() as i32, libc::SIGINT) };
    wait_for("the drain", Duration::from_secs(20), || {
        sup.stderr_so_far().contains("draining app")
    });
    // SAFETY: as above.
    unsafe { libc::kill(sup.id() as i32, libc::SIGINT) };
    let (status, err) = finish(sup);
    assert!(!status.success(), "a stop at once is a failure: {err}");
    for (tail, output) in [
        ("video", "video.mp4"),
        ("rows", "rows.parquet"),
        ("table", "table.txt"),
    ] {
        assert!(!out.join(output).exists(), "{output} was not written");
        assert!(
            err.contains(&format!("not written: tail '{tail}' ended before it wrote")),
            "the summary names {output}: {err}"
        );
    }
    let summary = read_summary(&dir.join("run"));
    let named: Vec<&str> = summary["unfinished_outputs"]
        .as_array()
        .expect("unfinished_outputs")
        .iter()
        .filter_map(|o| o["kept_in"].as_str())
        .collect();
    assert_eq!(named.len(), 4, "{summary}");
    assert!(named.iter().any(|k| k.ends_with("video.mp4.segments")));
    assert!(
        err.contains("not written: tail 'printed' ended before it printed its table"),
        "the stdout table is named too: {err}"
    );

    // A new run would start the outputs over: refused until they are written.
    let rerun = with_faults(&["start"], &app, &dir.join("run2"));
    assert!(!rerun.status.success(), "{}", printed(&rerun));
    assert!(
        printed(&rerun).contains("did not write") && printed(&rerun).contains("finish-outputs"),
        "{}",
        printed(&rerun)
    );
    assert!(out.join("video.mp4.segments").is_dir(), "kept");

    let done = finish_outputs(&app);
    let said = printed(&done);
    assert!(done.status.success(), "{said}");
    assert!(
        said.contains("80 frame(s) from 1 segment(s) joined"),
        "{said}"
    );
    let all: Vec<u64> = (0..delivered).collect();
    assert_eq!(solid_seqs(&out.join("video.mp4"), 64, 48), all);
    assert_eq!(parquet_seqs(&out.join("rows.parquet")), all);
    let table = std::fs::read_to_string(out.join("table.txt")).expect("table");
    assert_eq!(seqs_of_table(&table), all, "{table}");
    for left in [
        "video.mp4.segments",
        "rows.parquet.rows.arrows",
        "table.txt.rows.jsonl",
    ] {
        assert!(!out.join(left).exists(), "{left} is removed once written");
    }

    // The stdout table of that run, printed from its journal in the run folder.
    let table_out = with_faults(&["finish-outputs"], &app, &dir.join("run"));
    assert!(table_out.status.success(), "{}", printed(&table_out));
    let stdout = String::from_utf8_lossy(&table_out.stdout);
    assert_eq!(
        seqs_of_table(&stdout),
        all,
        "every row, on stdout: {stdout}"
    );

    let again = finish_outputs(&app);
    assert!(again.status.success(), "{}", printed(&again));
    assert!(printed(&again).contains("nothing to finish"));
}
