//! A cgroup per app (issue 13, item 6): the app's processes (stages and GPU agent) run
//! in a cgroup of their own, created under the supervisor's own cgroup, with the CPU
//! limited to the app's granted cores (CFS quota) and memory to its `memory_mb`. Written
//! directly through the cgroup files, v1 (`cpu`, `memory` hierarchies) or v2 (unified);
//! a child joins before it execs (its `pre_exec` writes `0`, itself, to `cgroup.procs`),
//! so no work escapes the limit. OOM kills are read from `memory.oom_control` (v1) or
//! `memory.events` (v2), field `oom_kill`. Where cgroups cannot be written the app runs
//! without them, and says so.

use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Replaces `/sys/fs/cgroup` (tests point it at a folder that cannot hold cgroups).
pub const ENV_ROOT: &str = "SMARTPIPE_CGROUP_ROOT";
const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy with a memory and a cpu controller under {0}")]
    NoHierarchy(String),
    #[error("cannot write {path}: {detail}")]
    Write { path: String, detail: String },
}

/// The app's cgroup: one folder per hierarchy (v1: cpu and memory; v2: one).
#[derive(Debug)]
pub struct AppCgroup {
    dirs: Vec<PathBuf>,
    /// The folder whose memory files count OOM kills, and its limit in MiB.
    memory_dir: PathBuf,
    pub memory_mb: Option<u64>,
    pub cpu_cores: Option<f64>,
    v2: bool,
    oom_seen: u64,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| CgroupError::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    })
}

/// This process's cgroup path in hierarchy `controller` (v1), or the unified one (v2).
fn own_path(controller: Option<&str>) -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next(), parts.next(), parts.next());
        let (Some(list), Some(path)) = (list, path) else {
            continue;
        };
        let matches = match controller {
            Some(c) => list.split(',').any(|x| x == c),
            None => list.is_empty(),
        };
        if matches {
            return path.trim_start_matches('/').to_string();
        }
    }
    String::new()
}

/// Remove the app cgroups under `parent` left by supervisors that are gone (killed before
/// they could remove their own): `smartpipe-PID-APP` whose PID no longer runs. A group that
/// still holds a process cannot be removed and stays (the kernel refuses).
fn remove_orphans(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("smartpipe-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir(entry.path()) {
                Ok(()) => tracing::info!(
                    "removed the cgroup {} of a supervisor that is gone",
                    entry.path().display()
                ),
                Err(e) => tracing::debug!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Limit a running group to `cores` through one of its [`AppCgroup::cpu_files`].
pub fn set_cpu_quota(file: &Path, cores: f64) -> Result<(), CgroupError> {
    let quota = ((cores * CFS_PERIOD_US as f64).ceil() as u64).max(1000);
    if file.ends_with("cpu.max") {
        write(file, &format!("{quota} {CFS_PERIOD_US}"))
    } else {
        write(file, &quota.to_string())
    }
}

impl AppCgroup {
    /// Create the cgroup of app `app` (run by supervisor `pid`) with its limits.
    pub fn create(
        app: &str,
        cpu_cores: Option<f64>,
        memory_mb: Option<u64>,
    ) -> Result<AppCgroup, CgroupError> {
        let root = PathBuf::from(
            crate::env::appenv::var(ENV_ROOT).unwrap_or_else(|| "/sys/fs/cgroup".into()),
        );
        let leaf = format!("smartpipe-{}-{app}", std::process::id());
        let v2 = root.join("cgroup.controllers").is_file();
        let dirs: Vec<(PathBuf, &str)> = if v2 {
            vec![(root.join(own_path(None)).join(&leaf), "both")]
        } else if root.join("memory").is_dir() && root.join("cpu").is_dir() {
            vec![
                (
                    root.join("cpu").join(own_path(Some("cpu"))).join(&leaf),
                    "cpu",
                ),
                (
                    root.join("memory")
                        .join(own_path(Some("memory")))
                        .join(&leaf),
                    "memory",
                ),
            ]
        } else {
            return Err(CgroupError::NoHierarchy(root.display().to_string()));
        };
        let mut group = AppCgroup {
            dirs: Vec::new(),
            memory_dir: dirs[dirs.len() - 1].0.clone(),
            memory_mb,
            cpu_cores,
            v2,
            oom_seen: 0,
        };
        for (dir, _) in &dirs {
            if let Some(parent) = dir.parent() {
                remove_orphans(parent);
            }
            std::fs::create_dir(dir).map_err(|e| CgroupError::Write {
                path: dir.display().to_string(),
                detail: e.to_string(),
            })?;
            group.dirs.push(dir.clone());
        }
        // From here on a failure drops `group`, which removes what was made.
        for (dir, which) in &dirs {
            if let (Some(cores), true) = (cpu_cores, *which != "memory") {
                let quota = ((cores * CFS_PERIOD_US as f64).ceil() as u64).max(1000);
                if v2 {
                    write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
                } else {
                    write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            if let (Some(mb), true) = (memory_mb, *which != "cpu") {
                let bytes = mb.saturating_mul(1 << 20).to_string();
                if v2 {
                    write(&dir.join("memory.max"), &bytes)?;
                    write(&dir.join("memory.swap.max"), "0").ok();
                } else {
                    write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                }
            }
        }
        group.oom_seen = group.oom_kills();
        Ok(group)
    }

    /// The files that hold the group's CPU quota (v1 `cpu.cfs_quota_us`, v2 `cpu.max`),
    /// for [`set_cpu_quota`] while the app runs.
    pub fn cpu_files(&self) -> Vec<PathBuf> {
        if self.v2 {
            self.dirs.iter().map(|d| d.join("cpu.max")).collect()
        } else {
            self.dirs
                .iter()
                .map(|d| d.join("cpu.cfs_quota_us"))
                .filter(|f| f.exists())
                .collect()
        }
    }

    /// The cores the group may use now (its CPU quota as the ledger last set it), or
    /// none when unlimited or unreadable.
    pub fn cpu_quota_cores(&self) -> Option<f64> {
        let file = self.cpu_files().into_iter().next()?;
        let text = std::fs::read_to_string(&file).ok()?;
        let mut words = text.split_whitespace();
        let quota: f64 = words.next()?.parse().ok()?; // "max" (v2) does not parse: unlimited
        let period: f64 = match words.next() {
            Some(p) => p.parse().ok()?,
            None => std::fs::read_to_string(file.with_file_name("cpu.cfs_period_us"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(CFS_PERIOD_US as f64),
        };
        (quota > 0.0 && period > 0.0).then(|| quota / period)
    }

    /// The `cgroup.procs` files a child writes itself into before it execs.
    pub fn procs_files(&self) -> Vec<CString> {
        self.dirs
            .iter()
            .filter_map(|d| CString::new(d.join("cgroup.procs").display().to_string()).ok())
            .collect()
    }

    /// OOM kills in the cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.memory_dir.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether an OOM kill happened since the last call: the note to give the process
    /// that died of it ("out of memory: cgroup limit 512 MiB").
    pub fn new_oom_kill(&mut self) -> Option<String> {
        let now = self.oom_kills();
        if now <= self.oom_seen {
            return None;
        }
        self.oom_seen = now;
        Some(match self.memory_mb {
            Some(mb) => format!("out of memory: cgroup limit {mb} MiB"),
            None => "out of memory (cgroup)".into(),
        })
    }

    /// What is enforced, for status and the summary.
    pub fn describe(&self) -> String {
        // The quota now in force: the node's ledger sets a best-effort app's to what the
        // guaranteed apps leave, which is not the app's own constraint.
        let cpu = match (self.cpu_quota_cores(), self.cpu_cores) {
            (Some(now), Some(asked)) if (now - asked).abs() > 0.005 => {
                format!("CPU {now:.2} cores (of the {asked} asked)")
            }
            (Some(now), None) => format!("CPU {now:.2} cores (what the node leaves it)"),
            (_, Some(asked)) => format!("CPU {asked} cores"),
            (None, None) => "CPU unlimited".into(),
        };
        let mem = self
            .memory_mb
            .map_or("memory unlimited".into(), |m| format!("memory {m} MiB"));
        format!(
            "constraints enforced: cgroup {} {} ({cpu}, {mem})",
            if self.v2 { "v2" } else { "v1" },
            self.memory_dir.display()
        )
    }
}

/// The pids a cgroup folder lists (`cgroup.procs`).
fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl AppCgroup {
    /// Stop what is still in the group when the app has ended: processes a stage started
    /// and left behind (a user stage's children, in a session of their own or not, or a
    /// video tail's encoder still ending its segment after a stop at once), which would
    /// otherwise run on and keep the group from being removed. SIGTERM first (an encoder
    /// then ends its file properly), SIGKILL after [`LEFTOVER_GRACE`]; waits (at most 2 s
    /// more) until the kernel has taken them out.
    fn kill_leftovers(&self) {
        let signal_all = |signal: nix::sys::signal::Signal| {
            let mut signalled = 0;
            for dir in &self.dirs {
                for pid in pids_in(dir) {
                    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok() {
                        signalled += 1;
                    }
                }
            }
            signalled
        };
        let gone_within = |wait: std::time::Duration| {
            let until = std::time::Instant::now() + wait;
            loop {
                if self.dirs.iter().all(|d| pids_in(d).is_empty()) {
                    return true;
                }
                if std::time::Instant::now() >= until {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let terminated = signal_all(nix::sys::signal::Signal::SIGTERM);
        if terminated == 0 {
            return;
        }
        if gone_within(LEFTOVER_GRACE) {
            tracing::warn!(
                "{terminated} process(es) the app's stages started were still running when it ended: stopped (SIGTERM)"
            );
            return;
        }
        let killed = signal_all(nix::sys::signal::Signal::SIGKILL);
        tracing::warn!(
            "{terminated} process(es) the app's stages started were still running when it ended: stopped (SIGTERM), {killed} of them killed (SIGKILL) {} ms later",
            LEFTOVER_GRACE.as_millis()
        );
        gone_within(std::time::Duration::from_secs(2));
    }
}

/// How long what the stages left running gets to end after SIGTERM before SIGKILL.
const LEFTOVER_GRACE: std::time::Duration = std::time::Duration::from_millis(1000);

impl Drop for AppCgroup {
    /// Remove the cgroup (its stages have all been reaped by then; what they left
    /// running is killed first).
    fn drop(&mut self) {
        self.kill_leftovers();
        for dir in self.dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("cannot remove the app's cgroup {}: {e}", dir.display());
                }
            }
        }
    }
}

/// The app's cgroup, or why it has none ("constraints not enforced: …").
pub fn for_app(app: &protocol::spec::AppSpec) -> Result<AppCgroup, String> {
    let c = &app.constraints;
    AppCgroup::create(&app.name, c.cpu_cores, c.memory_mb)
        .map_err(|e| format!("constraints not enforced: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_of_supervisors_that_are_gone_are_removed_and_live_ones_kept() {
        let parent =
            std::env::temp_dir().join(format!("smartpipe-cgroup-orphans-{}", std::process::id()));
        let gone = parent.join("smartpipe-999999999-old"); // above any pid_max
        let alive = parent.join(format!("smartpipe-{}-running", std::process::id()));
        let other = parent.join("user-group");
        for d in [&gone, &alive, &other] {
            std::fs::create_dir_all(d).expect("dir");
        }
        super::remove_orphans(&parent);
        assert!(!gone.exists(), "the orphan is removed");
        assert!(alive.exists(), "a running supervisor's group stays");
        assert!(other.exists(), "other groups are not touched");
        std::fs::remove_dir_all(&parent).expect("clean up");
    }
}
