//! Kill -9 helpers (kill a stage and wait for its replacement; nothing left after a run)
//! and the kill -9 check that every user-stage suite runs: start a request-guarantee app whose
//! tail writes `rows.csv`, kill one stage process with SIGKILL once rows flow, and check
//! that the app ends with every item exactly once and in order, the stage restarted once,
//! nothing lost and no shared memory left behind.

use crate::{
    csv_seqs, finish, memfds_of, pids_with_cmdline, read_summary, start_in_background, wait_for,
    Background,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `app` (named `app_name`, its tail writing `dir/rows.csv` with `count` rows) with
/// `cmd`, kills `app_name/process` once 100 rows are written, and asserts what a user checks
/// after a crash of a stage in a request-guarantee app. Returns the run's summary.
pub fn kill_9_midway_loses_and_duplicates_nothing(
    cmd: &mut Command,
    app: &Path,
    dir: &Path,
    app_name: &str,
    process: &str,
    count: u64,
) -> serde_json::Value {
    let sup = start_in_background(cmd, app, &dir.join("run"));
    let csv = dir.join("rows.csv");
    wait_for("100 rows", Duration::from_secs(60), || {
        std::fs::read_to_string(&csv).is_ok_and(|t| t.lines().count() > 100)
    });
    kill_and_wait_for_replacement(app_name, process);
    let supervisor_pid = finish_with_every_row_once(sup, &csv, count);
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"][process], 1, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert_nothing_left(app_name, &summary, supervisor_pid);
    summary
}

/// Wait for the run of `sup` to end well and check that the tail's `csv` holds items
/// 0..`count` once each, in order. Returns the supervisor's pid (for
/// [`assert_nothing_left`]).
pub fn finish_with_every_row_once(sup: Background, csv: &Path, count: u64) -> u32 {
    let supervisor_pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert_eq!(
        csv_seqs(csv),
        (0..count).collect::<Vec<_>>(),
        "every item once, in order"
    );
    supervisor_pid
}

/// The pid of the one process running `label` (`task#replica`) of app `name`.
pub fn pid_of(name: &str, label: &str) -> Option<i32> {
    let pids = pids_with_cmdline(&format!(" {name}/{label}"));
    pids.first().copied()
}

/// Kill -9 the process of `label` and wait until a new one runs it.
pub fn kill_and_wait_for_replacement(name: &str, label: &str) {
    let old = pid_of(name, label).unwrap_or_else(|| panic!("{label} is not running"));
    // SAFETY: killing a process of this test's app.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for(
        &format!("{label} to be restarted"),
        Duration::from_secs(20),
        || pid_of(name, label).is_some_and(|p| p != old),
    );
}

/// After a run of app `name` (supervisor `supervisor_pid`): no process of the app, no
/// memfd of the supervisor and no held slot is left.
pub fn assert_nothing_left(name: &str, summary: &serde_json::Value, supervisor_pid: u32) {
    assert!(
        pids_with_cmdline(&format!(" {name}/")).is_empty(),
        "no process of the app is left"
    );
    assert!(memfds_of(supervisor_pid).is_empty(), "no memfd is left");
    assert_eq!(
        summary["slots_held_at_end"], 0,
        "no slot is held: {summary}"
    );
}
