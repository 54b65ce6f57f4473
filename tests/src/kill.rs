//! The kill -9 check that every user-stage suite runs: start a request-guarantee app whose
//! tail writes `rows.csv`, kill one stage process with SIGKILL once rows flow, and check
//! that the app ends with every item exactly once and in order, the stage restarted once,
//! nothing lost and no shared memory left behind.

use crate::{
    csv_seqs, finish, memfds_of, pids_with_cmdline, read_summary, start_in_background, wait_for,
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
    let needle = format!(" {app_name}/{process}");
    let pid_of = || pids_with_cmdline(&needle).first().copied();
    let old = pid_of().unwrap_or_else(|| panic!("{process} of {app_name} runs"));
    // SAFETY: kill(2) on a process of this test's own app; no memory is touched.
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_for(
        &format!("{process} to be restarted"),
        Duration::from_secs(20),
        || pid_of().is_some_and(|p| p != old),
    );
    let supervisor_pid = sup.id();
    let (status, err) = finish(sup);
    assert!(status.success(), "{err}");
    assert_eq!(
        csv_seqs(&csv),
        (0..count).collect::<Vec<_>>(),
        "every item once, in order"
    );
    let summary = read_summary(&dir.join("run"));
    assert_eq!(summary["restarts"][process], 1, "{summary}");
    assert_eq!(summary["lost_total"], 0, "{summary}");
    assert!(
        pids_with_cmdline(&format!(" {app_name}/")).is_empty(),
        "no process of the app is left"
    );
    assert!(memfds_of(supervisor_pid).is_empty(), "no memfd is left");
    assert_eq!(summary["slots_held_at_end"], 0, "{summary}");
    summary
}
