//! The node's ledger of reservations: what every running app of this node was promised
//! (cores as busy fractions, host memory, model memory), so that a request-guarantee
//! app is admitted only into what the apps already admitted leave.
//!
//! Every supervisor of the node (foreground ones and the daemon) admits through the one
//! ledger file in the per-user runtime folder (`ledger.json`), read and written under an
//! exclusive `flock` on `ledger.lock`, so two starts cannot both take the last core.
//! An entry names its supervisor's pid: a supervisor that died (kill -9) leaves an
//! entry that the next reader drops. A [`Held`] reservation is given back when dropped.

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// One admitted app's reservation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Unique per admission (a name taken twice is refused later, by the registry).
    pub id: String,
    pub app: String,
    /// The supervisor that runs it (the daemon runs several apps under one pid).
    pub supervisor_pid: u32,
    /// `request-guarantee` or `best-effort`.
    pub service_type: String,
    /// Busy cores its plan needs (0 for best effort: it takes what is left).
    pub cores: f64,
    /// Host memory granted by its constraints (`memory_mb`), when it names one.
    pub memory_mb: Option<u64>,
    /// Memory of its resident models (the sum of `models`).
    pub model_mb: f64,
    /// The models it keeps in the node's agent, each at its file's size
    /// ([`super::device_memory`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<super::device_memory::HeldModel>,
    /// What the reservation rests on: "plan" (a profiled plan) or why there is none.
    pub basis: String,
    /// Best effort: the CPU quota files of its cgroup, set to what the guaranteed apps
    /// leave each time one comes or goes (see [`rebalance`]).
    #[serde(default)]
    pub cpu_files: Vec<String>,
    /// Best effort: the cores its own constraints grant (never raised past them).
    #[serde(default)]
    pub own_cores: Option<f64>,
    /// Request guarantee: its latency quota, which bounds how long a best-effort app's
    /// model call may hold the node's agent (see [`guaranteed_latency_floor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
}

/// The tightest latency quota among the request-guarantee apps of the node, with the
/// app that has it: best-effort apps keep their model calls well inside it.
pub fn guaranteed_latency_floor(reservations: &[Reservation]) -> Option<(f64, String)> {
    reservations
        .iter()
        .filter(|r| r.service_type == "request-guarantee")
        .filter_map(|r| Some((r.max_latency_ms.filter(|l| *l > 0.0)?, r.app.clone())))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the node ledger {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot lock the node ledger {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the node ledger {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The whole node: what admission divides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    pub cores: f64,
    pub memory_mb: u64,
    /// The device memory its agent's models may fill, MiB (None: not limited).
    pub device_mb: Option<u64>,
}

impl Node {
    /// This machine: its usable cores and its physical memory.
    pub fn this_machine() -> Node {
        Node {
            cores: f64::from(crate::plan::available_cores()),
            memory_mb: physical_memory_mb().unwrap_or(0),
            device_mb: crate::plan::node_device_memory_mb(),
        }
    }
}

/// The machine's memory from `/proc/meminfo` (MiB).
fn physical_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// What is left of the node once every guaranteed app's reservation is taken out, and
/// who took it (for a refusal's message).
#[derive(Debug, Clone, PartialEq)]
pub struct Left {
    pub cores: f64,
    pub memory_mb: Option<u64>,
    /// The guaranteed apps holding reservations, as `'name' (1.40 cores)`.
    pub holders: Vec<String>,
    /// The guaranteed apps holding host memory, as `'name' (512 MiB reserved)`.
    pub memory_holders: Vec<String>,
    pub reserved_cores: f64,
    /// What they leave of the device's memory for models (None: the device is not limited).
    pub device: Option<super::device_memory::DeviceLeft>,
}

impl Left {
    /// `after 'a' (1.40 reserved), 'b' (0.30 reserved)` or an empty string.
    pub fn after(&self) -> String {
        if self.holders.is_empty() {
            String::new()
        } else {
            format!(" after {}", self.holders.join(", "))
        }
    }

    /// `after 'a' (512 MiB reserved)` or an empty string: who holds the node's memory.
    pub fn after_memory(&self) -> String {
        if self.memory_holders.is_empty() {
            String::new()
        } else {
            format!(" after {}", self.memory_holders.join(", "))
        }
    }
}

/// Reservations of the live supervisors, under the lock while this value lives.
pub struct Ledger {
    path: PathBuf,
    _lock: Flock<File>,
    pub reservations: Vec<Reservation>,
}

impl Ledger {
    fn paths() -> (PathBuf, PathBuf) {
        let dir = crate::env::runtime::user_dir();
        (dir.join("ledger.json"), dir.join("ledger.lock"))
    }

    /// Lock the node's ledger and read it (entries of dead supervisors dropped).
    pub fn lock() -> Result<Ledger, LedgerError> {
        let dir = crate::env::runtime::ensure_user_dir().map_err(|e| LedgerError::Open {
            path: crate::env::runtime::user_dir(),
            source: std::io::Error::other(format!("{e:#}")),
        })?;
        let (path, lock_path) = Self::paths();
        debug_assert!(path.starts_with(&dir));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| LedgerError::Open {
                path: lock_path.clone(),
                source,
            })?;
        // Blocks until granted; released when the ledger (which holds it) is dropped.
        let lock =
            Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, errno)| LedgerError::Lock {
                path: lock_path,
                source: errno.into(),
            })?;
        let reservations = read(&path);
        Ok(Ledger {
            path,
            _lock: lock,
            reservations,
        })
    }

    /// The reservations as they are now, without taking the lock (for `status`, `plan`).
    pub fn snapshot() -> Vec<Reservation> {
        read(&Self::paths().0)
    }

    /// What the node has left for a new app.
    pub fn left(&self, node: Node) -> Left {
        left_of(&self.reservations, node)
    }

    /// Record `r` and write the ledger; the returned value gives it back when dropped.
    pub fn reserve(mut self, mut r: Reservation) -> Result<Held, LedgerError> {
        // A plan of no measured work sums to -0.0 cores: stored as 0, never "-0.00".
        r.cores = at_least_zero(r.cores);
        self.reservations.push(r.clone());
        self.write()?;
        rebalance(&self.reservations, Node::this_machine());
        Ok(Held {
            id: r.id,
            app: r.app,
        })
    }

    /// Change the cores reserved by the reservation `id` (an app re-admitted at another
    /// rate) and write the ledger; false when no such reservation is held any more.
    pub fn set_cores(mut self, id: &str, cores: f64) -> Result<bool, LedgerError> {
        let Some(r) = self.reservations.iter_mut().find(|r| r.id == id) else {
            return Ok(false);
        };
        r.cores = at_least_zero(cores);
        self.write()?;
        rebalance(&self.reservations, Node::this_machine());
        Ok(true)
    }

    fn write(&self) -> Result<(), LedgerError> {
        let err = |source| LedgerError::Write {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.reservations)
            .map_err(|e| err(std::io::Error::other(e)))?;
        let mut f = File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

/// The ledger's entries whose supervisor is alive (a missing or unreadable file is an
/// empty ledger: the next write replaces it).
fn read(path: &std::path::Path) -> Vec<Reservation> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let all: Vec<Reservation> = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(
            "the node ledger {} is unreadable ({e}); starting it anew",
            path.display()
        );
        Vec::new()
    });
    all.into_iter()
        .filter(|r| crate::env::runtime::pid_alive(r.supervisor_pid as i32))
        .collect()
}

/// A fresh reservation id: the supervisor's pid and the time.
pub fn new_id() -> String {
    format!("{}-{}", std::process::id(), protocol::clock::now_ns())
}

/// What `reservations` leave of `node`.
pub fn left_of(reservations: &[Reservation], node: Node) -> Left {
    let guaranteed: Vec<&Reservation> = reservations
        .iter()
        .filter(|r| r.service_type == "request-guarantee")
        .collect();
    // An empty sum is -0.0: never shown as "-0.00".
    let reserved_cores = at_least_zero(guaranteed.iter().map(|r| r.cores).sum());
    let reserved_memory: u64 = guaranteed.iter().filter_map(|r| r.memory_mb).sum();
    Left {
        cores: at_least_zero(node.cores - reserved_cores),
        memory_mb: (node.memory_mb > 0).then(|| node.memory_mb.saturating_sub(reserved_memory)),
        holders: guaranteed
            .iter()
            .map(|r| format!("'{}' ({:.2} reserved)", r.app, at_least_zero(r.cores)))
            .collect(),
        memory_holders: guaranteed
            .iter()
            .filter_map(|r| Some(format!("'{}' ({} MiB reserved)", r.app, r.memory_mb?)))
            .collect(),
        reserved_cores,
        device: super::device_memory::left_of(reservations, node.device_mb),
    }
}

/// `x`, or +0.0 for anything not above zero (NaN included). Not `x.max(0.0)`: for -0.0
/// that may return -0.0 (unoptimised builds do), which prints as "-0.00".
fn at_least_zero(x: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// A reservation in the ledger, given back when dropped (the app ended).
pub struct Held {
    id: String,
    app: String,
}

impl Held {
    /// The reservation's id in the ledger.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        match Ledger::lock() {
            Ok(mut ledger) => {
                ledger.reservations.retain(|r| r.id != self.id);
                if let Err(e) = ledger.write() {
                    tracing::warn!("cannot give back the reservation of '{}': {e}", self.app);
                }
                rebalance(&ledger.reservations, Node::this_machine());
            }
            Err(e) => tracing::warn!("cannot give back the reservation of '{}': {e}", self.app),
        }
    }
}

/// The cores a best-effort app may use now: what the guaranteed apps leave (at least
/// [`MIN_BEST_EFFORT_CORES`]), never more than its own constraints grant.
pub fn best_effort_cores(left: &Left, own_cores: Option<f64>) -> f64 {
    let cores = left.cores.max(MIN_BEST_EFFORT_CORES);
    own_cores.map_or(cores, |own| cores.min(own))
}

/// The fewest cores a best-effort app is given when guaranteed apps hold the rest.
pub const MIN_BEST_EFFORT_CORES: f64 = 0.1;

/// Set every best-effort app's CPU quota to what the guaranteed apps leave now: run when
/// a guaranteed app is admitted or ends, so a best-effort app that came first gives way
/// and takes the cores back afterwards. Failures are logged (the app runs on).
pub fn rebalance(reservations: &[Reservation], node: Node) {
    let left = left_of(reservations, node);
    for r in reservations.iter().filter(|r| !r.cpu_files.is_empty()) {
        let cores = best_effort_cores(&left, r.own_cores);
        for file in &r.cpu_files {
            match crate::env::cgroup::set_cpu_quota(std::path::Path::new(file), cores) {
                Ok(()) => tracing::info!(app = %r.app, cores, "best-effort CPU quota set"),
                Err(e) => tracing::warn!(app = %r.app, "cannot set the CPU quota: {e}"),
            }
        }
    }
}

/// A best-effort app of this supervisor now runs in a cgroup: record its CPU quota files
/// and give it what the guaranteed apps leave.
pub fn attach_cgroup(app: &str, cpu_files: Vec<std::path::PathBuf>) -> Result<(), LedgerError> {
    let mut ledger = Ledger::lock()?;
    let pid = std::process::id();
    let Some(r) = ledger
        .reservations
        .iter_mut()
        .find(|r| r.app == app && r.supervisor_pid == pid && r.service_type == "best-effort")
    else {
        return Ok(());
    };
    r.cpu_files = cpu_files.iter().map(|f| f.display().to_string()).collect();
    ledger.write()?;
    rebalance(&ledger.reservations, Node::this_machine());
    Ok(())
}

/// The ledger as people read it (`supervisor status`).
pub fn render(reservations: &[Reservation], node: Node) -> String {
    let left = left_of(reservations, node);
    let mut out = format!(
        "node: {:.2} cores, {} MiB; reserved by request-guarantee apps {:.2} cores; left {:.2} cores\n",
        node.cores,
        node.memory_mb,
        left.reserved_cores,
        left.cores
    );
    if let Some(d) = &left.device {
        out += &format!(
            "device: {} MiB for models; {:.1} MiB left after the request-guarantee apps' models\n",
            d.total_mb, d.left_mb
        );
    }
    for r in reservations {
        let memory = r
            .memory_mb
            .map_or(String::new(), |m| format!(", {m} MiB memory"));
        let cores = if r.service_type == "request-guarantee" {
            format!("{:.2} cores", at_least_zero(r.cores))
        } else {
            "the leftovers".to_string()
        };
        out += &format!(
            "  {} ({}, supervisor pid {}): {cores}{memory}, models {:.1} MiB [{}]\n",
            r.app, r.service_type, r.supervisor_pid, r.model_mb, r.basis
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_floor_is_the_tightest_guaranteed_quota_and_ignores_best_effort() {
        let mut a = r("a", "request-guarantee", 1.0);
        a.max_latency_ms = Some(500.0);
        let mut b = r("b", "request-guarantee", 0.5);
        b.max_latency_ms = Some(200.0);
        let mut c = r("c", "best-effort", 0.0);
        c.max_latency_ms = Some(10.0);
        let none = r("d", "request-guarantee", 0.5);
        assert_eq!(guaranteed_latency_floor(&[c.clone(), none.clone()]), None);
        assert_eq!(
            guaranteed_latency_floor(&[a, c, b, none]),
            Some((200.0, "b".to_string()))
        );
    }

    fn r(app: &str, service: &str, cores: f64) -> Reservation {
        Reservation {
            id: app.into(),
            app: app.into(),
            supervisor_pid: std::process::id(),
            service_type: service.into(),
            cores,
            memory_mb: Some(512),
            model_mb: 0.0,
            models: Vec::new(),
            basis: "plan".into(),
            cpu_files: Vec::new(),
            own_cores: None,
            max_latency_ms: None,
        }
    }

    #[test]
    fn a_reservation_of_no_cores_is_never_shown_negative() {
        // An empty sum of f64 is -0.0: a plan with no measured work reserves that.
        let none: f64 = std::iter::empty::<f64>().sum();
        let node = Node {
            cores: 2.0,
            memory_mb: 0,
            device_mb: None,
        };
        let book = [r("idle", "request-guarantee", none)];
        let text = render(&book, node);
        assert!(
            !text.contains("-0.00") && text.contains("idle (request-guarantee"),
            "{text}"
        );
        assert!(!left_of(&book, node).after().contains("-0.00"));
    }

    #[test]
    fn only_guaranteed_apps_take_cores_and_memory_from_the_node() {
        let node = Node {
            cores: 2.0,
            memory_mb: 4096,
            device_mb: None,
        };
        let left = left_of(
            &[
                r("faces-a", "request-guarantee", 1.4),
                r("bulk", "best-effort", 0.0),
            ],
            node,
        );
        assert!((left.cores - 0.6).abs() < 1e-9, "{left:?}");
        assert_eq!(left.memory_mb, Some(3584));
        assert_eq!(left.after(), " after 'faces-a' (1.40 reserved)");
        assert_eq!(left.after_memory(), " after 'faces-a' (512 MiB reserved)");
        let over = left_of(&[r("a", "request-guarantee", 3.0)], node);
        assert_eq!(over.cores, 0.0, "never negative");
    }

    #[test]
    fn entries_of_dead_supervisors_are_dropped_when_read() {
        let dir = std::env::temp_dir().join(format!("ledger-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ledger.json");
        let mut dead = r("gone", "request-guarantee", 1.0);
        dead.supervisor_pid = i32::MAX as u32; // no such process
        let live = r("here", "request-guarantee", 0.5);
        std::fs::write(
            &path,
            serde_json::to_vec(&[dead, live.clone()]).expect("json"),
        )
        .expect("write");
        assert_eq!(read(&path), vec![live]);
        std::fs::write(&path, b"{not json").expect("write");
        assert!(read(&path).is_empty(), "a corrupt ledger reads as empty");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
