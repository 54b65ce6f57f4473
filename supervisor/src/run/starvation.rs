//! Telling a stage starved of CPU from a hung one. A stage's heartbeats come from a
//! thread of its own named `heartbeat`; on an overloaded machine that thread can wait on
//! a run queue for longer than the hang bound while the stage is healthy. Before a
//! silent stage is killed, the kernel's scheduler statistics of that thread
//! (`/proc/PID/task/TID/stat` state and `schedstat` run delay) say whether it was
//! runnable but not running (starved: wait longer, up to [`MAX_GRACE`] bounds) or not
//! (stopped, stuck, or its heartbeats switched off on purpose: hung). A thread asleep
//! while the machine is under heavy CPU pressure (PSI) is given the same grace: its
//! message, or the supervisor's reading of it, may be what waits for a CPU. A stopped
//! thread (SIGSTOP) is hung whatever the load.

use std::path::Path;
use std::time::{Duration, Instant};

/// A starved stage is waited for at most this many of its hang bounds in all.
pub const MAX_GRACE: u32 = 10;

/// What the scheduler says of a stage's heartbeat thread now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatThread {
    /// `R` runnable, `S` sleeping, `T` stopped, …
    pub state: char,
    /// Time it spent runnable but waiting for a CPU, since it started (ns).
    pub run_delay_ns: u64,
}

/// The heartbeat thread of process `pid`, if it has one (none: the process is gone,
/// or its heartbeats were switched off and the thread ended).
pub fn heartbeat_thread(pid: i32) -> Option<HeartbeatThread> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "heartbeat" {
            return read_thread(&dir);
        }
    }
    None
}

fn read_thread(dir: &Path) -> Option<HeartbeatThread> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // The state follows the command's closing parenthesis (the command may hold spaces).
    let state = stat.rsplit(')').next()?.trim_start().chars().next()?;
    let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    let run_delay_ns = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(HeartbeatThread {
        state,
        run_delay_ns,
    })
}

/// The share of the last 10 s in which some task of the machine waited for a CPU
/// (`/proc/pressure/cpu`, `some avg10`), 0..1; none where the kernel has no PSI.
pub fn cpu_pressure() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some "))?;
    let avg10 = some
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?;
    avg10.parse::<f64>().ok().map(|p| p / 100.0)
}

/// CPU pressure above this share makes a silent, sleeping heartbeat thread look delayed
/// (its message, or the supervisor reading it, waiting for a CPU) rather than hung.
pub const PRESSURE_FORGIVES: f64 = 0.5;

/// Whether a silent stage looks starved of CPU rather than hung: its heartbeat thread
/// is runnable now, or spent at least a quarter of the time since `earlier` waiting for
/// a CPU, or it sleeps while the machine is under CPU pressure (`pressure`, 0..1). A
/// stopped thread (`T`, `t`: SIGSTOP, a debugger) is never starved.
pub fn starved(
    now: HeartbeatThread,
    earlier: Option<(u64, Instant)>,
    pressure: Option<f64>,
) -> bool {
    match now.state {
        'T' | 't' => return false,
        'R' => return true,
        _ => {}
    }
    let queued = earlier.is_some_and(|(delay, at)| {
        let waited = now.run_delay_ns.saturating_sub(delay);
        let window = at.elapsed().as_nanos().max(1) as f64;
        waited as f64 >= 0.25 * window
    });
    queued || pressure.is_some_and(|p| p > PRESSURE_FORGIVES)
}

/// Whether the grace for a starved stage is over: silent for [`MAX_GRACE`] bounds.
pub fn grace_over(silent: Duration, bound: Duration) -> bool {
    silent > bound * MAX_GRACE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(state: char, run_delay_ns: u64) -> HeartbeatThread {
        HeartbeatThread {
            state,
            run_delay_ns,
        }
    }

    #[test]
    fn a_runnable_or_queued_heartbeat_thread_is_starved_a_stopped_or_sleeping_one_is_not() {
        let long_ago = Instant::now() - Duration::from_millis(400);
        assert!(
            starved(thread('R', 0), None, None),
            "waiting on a run queue now"
        );
        assert!(
            !starved(thread('T', 0), None, Some(1.0)),
            "SIGSTOP'd: hung, whatever the load"
        );
        assert!(
            !starved(thread('S', 5_000_000), None, Some(0.1)),
            "asleep on a calm machine"
        );
        assert!(
            starved(thread('S', 5_000_000), None, Some(0.9)),
            "asleep, machine overloaded"
        );
        // Queued 100 s since a look 400 ms ago: starved (the window is at least 400 ms and
        // grows with however long this thread waits for a core; 100 s outweighs it).
        assert!(starved(
            thread('S', 100_100_000_000),
            Some((100_000_000, long_ago)),
            None
        ));
        // Queued 10 ms of 400: not starved, its silence is its own.
        assert!(!starved(
            thread('S', 110_000_000),
            Some((100_000_000, long_ago)),
            Some(0.0)
        ));
    }

    #[test]
    fn cpu_pressure_is_a_share_when_the_kernel_reports_it() {
        if let Some(p) = cpu_pressure() {
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
    }

    #[test]
    fn the_grace_ends_after_ten_bounds() {
        let bound = Duration::from_millis(300);
        assert!(!grace_over(Duration::from_millis(2999), bound));
        assert!(grace_over(Duration::from_millis(3001), bound));
    }

    #[test]
    fn a_gone_process_has_no_heartbeat_thread() {
        assert_eq!(heartbeat_thread(i32::MAX), None);
    }

    #[test]
    fn a_thread_named_heartbeat_is_found_with_its_scheduler_figures() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || {
                // The thread names itself when it starts: say when that is done.
                let _ = ready_tx.send(());
                let _ = rx.recv();
            })
            .expect("thread");
        ready.recv().expect("the thread started");
        let found = heartbeat_thread(std::process::id() as i32);
        let _ = tx.send(());
        let _ = t.join();
        let found = found.expect("the thread is listed under /proc/self/task");
        assert!(matches!(found.state, 'S' | 'R'), "{found:?}");
    }
}
