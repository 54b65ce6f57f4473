//! What producing one item costs a head, for its profile and the planner: the CPU time
//! of the head's process and of the helper it reads from (an `ffmpeg` decoder child)
//! between one item and the next. Waiting (pacing, a full pool) takes no CPU time, so
//! it is not counted; decoding, drawing, copying into the slot and sending are.

use std::time::Duration;

/// CPU time spent since the last item, by this process and a watched child.
pub struct CpuMeter {
    child: Option<u32>,
    last: Duration,
}

impl CpuMeter {
    pub fn new() -> CpuMeter {
        let mut meter = CpuMeter {
            child: None,
            last: Duration::ZERO,
        };
        meter.last = meter.total();
        meter
    }

    /// Count the CPU time of process `pid` (a decoder this head reads from) too.
    pub fn watch_child(&mut self, pid: u32) {
        self.child = Some(pid);
        self.last = self.total();
    }

    /// CPU time used since the last call (or since the meter started).
    pub fn take(&mut self) -> Duration {
        let now = self.total();
        let spent = now.saturating_sub(self.last);
        self.last = now;
        spent
    }

    fn total(&self) -> Duration {
        own_cpu_time() + self.child.map_or(Duration::ZERO, child_cpu_time)
    }
}

impl Default for CpuMeter {
    fn default() -> Self {
        CpuMeter::new()
    }
}

/// CPU time of this process (all its threads).
fn own_cpu_time() -> Duration {
    let Ok(ts) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID) else {
        return Duration::ZERO;
    };
    Duration::new(
        ts.tv_sec().max(0) as u64,
        ts.tv_nsec().clamp(0, 999_999_999) as u32,
    )
}

/// User + system time of process `pid` from `/proc/<pid>/stat` (zero once it is gone).
fn child_cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    parse_stat_cpu(&stat, clock_ticks_per_s()).unwrap_or(Duration::ZERO)
}

fn clock_ticks_per_s() -> u64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(0);
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may hold spaces: the fields are counted after its `)`.
fn parse_stat_cpu(stat: &str, ticks_per_s: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / ticks_per_s.max(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_a_command_name_with_spaces() {
        let stat =
            "4242 (ff mpeg) S 1 4242 4242 0 -1 4194304 120 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_millis(3000)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
    }
}
