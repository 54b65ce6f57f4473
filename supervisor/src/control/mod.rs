//! The control API of a running supervisor: HTTP/1.1 + JSON (actix-web, [`server`]) on a
//! Unix socket in its runtime dir (dir 0700, socket 0600, peer uid checked with
//! SO_PEERCRED), and the Prometheus metrics also on a loopback TCP port when asked.
//!
//! A supervisor hosts apps in a [`Registry`]: a foreground `start` hosts one, the daemon
//! (`start --detach`) hosts every app sent to it. Routes:
//! `GET /status` ([`SupervisorStatus`]), `GET /metrics`, `POST /stop` (drain every app),
//! `POST /shutdown` (drain every app and take no new one; the supervisor then exits),
//! `POST /apps` (daemon only: start an app, body [`StartRequest`]),
//! `POST /apps/NAME/stop`, `POST /apps/NAME/restart` (body `{"task": T, "replica": N}`).

// The room's modules (docs/architecture.md: the rooms and their order).
pub mod autoprofile;
pub mod daemon;
pub mod follow;
pub mod profiling;

use crate::observe::prometheus::render_metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

pub use crate::observe::live::{ChangeRequest, LiveApp, LiveChange, RestartRequest};
pub mod client;
mod live_changes;
pub mod output_claims;
pub mod profile_store;
mod server;
pub use live_changes::MAX_THREADS;
use live_changes::{restart, set_rate, set_threads};
pub use server::Request;

/// How long the API waits for an app's run loop to answer a restart.
pub const RESTART_WAIT: Duration = Duration::from_secs(30);

/// What `GET /status` answers: the supervisor and every app it hosts.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SupervisorStatus {
    pub pid: u32,
    /// The daemon of `start --detach` (takes apps through `POST /apps`).
    pub daemon: bool,
    /// Shutting down: it takes no new app and exits once its apps have ended.
    pub closing: bool,
    /// The executable it runs (a daemon only takes apps from the same binary).
    pub exe: String,
    pub apps: Vec<LiveApp>,
}

/// The body of `POST /apps`: an app file for the daemon to validate, admit and run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartRequest {
    /// Absolute path of the app file.
    pub file: PathBuf,
    /// Absolute run dir (logs, outputs, plan, summary, report, supervisor.log).
    pub run_dir: PathBuf,
    pub startup_timeout_s: u64,
    pub hang_after_ms: u64,
    /// The environment of the `start` that sent the app: its settings (`SMARTPIPE_*`,
    /// `ORT_*`, `PATH`, …) and its stages' environment. Absent: the daemon's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// The working folder of that `start` (its stages run there). Absent: the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
}

/// The longest start-up a stage may be given, in seconds (one day).
pub const MAX_STARTUP_TIMEOUT_S: u64 = 86_400;
/// The longest silence before a stage counts as hung, in ms (one day).
pub const MAX_HANG_AFTER_MS: u64 = 86_400_000;

impl StartRequest {
    /// What makes this request unusable, if anything (the CLI checks the same bounds).
    pub fn problem(&self) -> Option<String> {
        if !self.file.is_absolute() || !self.run_dir.is_absolute() {
            return Some("the app file and the run dir must be absolute paths".into());
        }
        if self.run_dir.exists() && !self.run_dir.is_dir() {
            return Some(format!(
                "the run dir {} is a file, not a folder",
                self.run_dir.display()
            ));
        }
        if !(1..=MAX_STARTUP_TIMEOUT_S).contains(&self.startup_timeout_s) {
            return Some(format!(
                "startup_timeout_s must be 1 to {MAX_STARTUP_TIMEOUT_S} (one day), got {}",
                self.startup_timeout_s
            ));
        }
        if !(1..=MAX_HANG_AFTER_MS).contains(&self.hang_after_ms) {
            return Some(format!(
                "hang_after_ms must be 1 to {MAX_HANG_AFTER_MS} (one day), got {}",
                self.hang_after_ms
            ));
        }
        match &self.cwd {
            Some(cwd) if !cwd.is_absolute() => Some(format!(
                "cwd must be an absolute path, got {}",
                cwd.display()
            )),
            Some(cwd) if !cwd.is_dir() => Some(format!("cwd {} is not a folder", cwd.display())),
            _ => None,
        }
    }
}

/// An API error: the HTTP status and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// Starts apps sent through `POST /apps` (the daemon's); answers a message for people.
pub trait Launcher: Send + Sync {
    fn launch(&self, request: StartRequest) -> Result<String, ApiError>;
}

/// One app a supervisor hosts: what the API shows, the flag that drains it (a second
/// set stops it at once, like a second signal) and its task names.
pub struct Hosted {
    pub live: Arc<Mutex<LiveApp>>,
    pub stop: Arc<AtomicBool>,
    pub tasks: Vec<String>,
    /// The files and folders its tails write (absolute, normalised: [`outputs_of`]).
    pub outputs: Vec<String>,
}

/// The outputs of a loaded app (its paths are absolute by then), as [`Hosted::outputs`]:
/// each resolved ([`resolved_output`]) so that two spellings of one file are one output.
pub fn outputs_of(spec: &protocol::spec::AppSpec) -> Vec<String> {
    protocol::validate_flow::output_paths(spec)
        .into_iter()
        .map(|(_, _, path)| resolved_output(&path))
        .collect()
}

/// What an app claims node-wide while it runs ([`output_claims`]): its outputs and its
/// run folder (two apps in one run folder overwrite each other's summary and logs).
pub fn claimed_paths(spec: &protocol::spec::AppSpec, run_dir: &std::path::Path) -> Vec<String> {
    let mut paths = outputs_of(spec);
    let run_dir = std::path::absolute(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    paths.push(resolved_output(&run_dir.display().to_string()));
    paths
}

/// An output path as the file system sees it: symbolic links and `..` resolved, in the
/// whole path when it exists, else in its folder when that exists (the output itself is
/// not made yet); `.` and repeated separators removed in any case.
pub fn resolved_output(path: &str) -> String {
    let plain = protocol::validate_flow::normalised(path);
    let as_path = std::path::Path::new(&plain);
    // An output that exists may itself be a symbolic link to another app's file.
    if let Ok(real) = as_path.canonicalize() {
        return real.display().to_string();
    }
    let (Some(parent), Some(name)) = (as_path.parent(), as_path.file_name()) else {
        return plain;
    };
    match parent.canonicalize() {
        Ok(folder) => folder.join(name).display().to_string(),
        Err(_) => plain,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("an app named '{0}' already runs in this supervisor (stop it first)")]
    NameTaken(String),
    #[error("the supervisor is shutting down and takes no new app")]
    Closing,
    #[error("{path} is written by the running app '{app}': two apps writing one output would overwrite each other's items (give this app another path, or stop '{app}' first)")]
    OutputTaken { path: String, app: String },
}

#[derive(Default)]
struct Hosting {
    apps: BTreeMap<String, Hosted>,
    closing: bool,
    ever_hosted: bool,
    /// `POST /apps` requests being answered: the supervisor does not exit under them.
    busy: usize,
}

/// A request in progress (see [`Registry::busy`]).
pub struct Busy<'a>(&'a Registry);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.lock().busy -= 1;
        self.0.changed.notify_all();
    }
}

/// The apps a supervisor hosts; waiters are woken whenever an app comes or goes.
pub struct Registry {
    daemon: bool,
    state: Mutex<Hosting>,
    changed: Condvar,
}

impl Registry {
    pub fn new(daemon: bool) -> Self {
        Registry {
            daemon,
            state: Mutex::new(Hosting::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Hosting> {
        // A panic while holding the lock leaves consistent data (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take an app in, unless one of that name runs or the supervisor is closing.
    pub fn host(&self, name: &str, app: Hosted) -> Result<(), HostError> {
        let mut s = self.lock();
        if s.closing {
            return Err(HostError::Closing);
        }
        if s.apps.contains_key(name) {
            return Err(HostError::NameTaken(name.to_string()));
        }
        for (other, hosted) in &s.apps {
            if let Some(path) = app.outputs.iter().find(|p| hosted.outputs.contains(p)) {
                return Err(HostError::OutputTaken {
                    path: path.clone(),
                    app: other.clone(),
                });
            }
        }
        s.apps.insert(name.to_string(), app);
        s.ever_hosted = true;
        self.changed.notify_all();
        Ok(())
    }

    /// The app ended: forget it.
    pub fn remove(&self, name: &str) {
        self.lock().apps.remove(name);
        self.changed.notify_all();
    }

    /// Drain one app; false when none has that name.
    pub fn stop_app(&self, name: &str) -> bool {
        let s = self.lock();
        match s.apps.get(name) {
            Some(app) => {
                app.stop.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The apps already on their way out (a drain or stop asked): another stop stops
    /// them at once.
    pub fn winding_down(&self) -> Vec<String> {
        let s = self.lock();
        s.apps
            .iter()
            .filter(|(_, app)| app.live.lock().is_ok_and(|l| l.state == "stopping"))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Drain every app; returns their names.
    pub fn stop_all(&self) -> Vec<String> {
        let s = self.lock();
        for app in s.apps.values() {
            app.stop.store(true, Ordering::SeqCst);
        }
        s.apps.keys().cloned().collect()
    }

    /// Take no new app and drain every app.
    pub fn close(&self) -> Vec<String> {
        self.lock().closing = true;
        self.changed.notify_all();
        self.stop_all()
    }

    /// Mark a request in progress until the guard drops: [`Registry::close_if_idle`]
    /// waits for it (a start request must get its answer).
    pub fn busy(&self) -> Busy<'_> {
        self.lock().busy += 1;
        Busy(self)
    }

    /// Close when no app runs, no request is in progress, and either an app has run,
    /// the supervisor is closing, or `idle_too_long`; true when closed (atomic with
    /// [`Registry::host`]).
    pub fn close_if_idle(&self, idle_too_long: bool) -> bool {
        let mut s = self.lock();
        if s.apps.is_empty() && s.busy == 0 && (s.ever_hosted || s.closing || idle_too_long) {
            s.closing = true;
            return true;
        }
        false
    }

    /// Wait until an app comes or goes, or `timeout`.
    pub fn wait_changed(&self, timeout: Duration) {
        let s = self.lock();
        let _ = self.changed.wait_timeout(s, timeout);
    }

    pub fn status(&self) -> SupervisorStatus {
        let s = self.lock();
        SupervisorStatus {
            pid: std::process::id(),
            daemon: self.daemon,
            closing: s.closing,
            exe: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            apps: s.apps.values().map(|a| snapshot(&a.live)).collect(),
        }
    }

    fn lookup(&self, name: &str) -> Option<(Arc<Mutex<LiveApp>>, Vec<String>)> {
        self.lock()
            .apps
            .get(name)
            .map(|a| (a.live.clone(), a.tasks.clone()))
    }

    fn metrics(&self) -> String {
        render_metrics(&self.status().apps)
    }
}

/// The socket of a supervisor's runtime dir.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("control.sock")
}

/// Serve the API until the process ends. `launcher` takes `POST /apps` (the daemon's).
/// Both listeners run under the limits of [`server`] (sizes, deadlines, connection caps).
pub fn serve(
    runtime_dir: &Path,
    registry: Arc<Registry>,
    launcher: Option<Arc<dyn Launcher>>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<PathBuf> {
    let path = socket_path(runtime_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let uid = nix::unistd::getuid().as_raw();
    let tcp = match metrics_addr {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                anyhow::bail!("--metrics-addr must be a loopback address, got {addr}");
            }
            let tcp = std::net::TcpListener::bind(addr).map_err(|e| {
                anyhow::anyhow!("cannot listen on --metrics-addr {addr} for the metrics: {e}")
            })?;
            eprintln!("metrics on http://{}/metrics", tcp.local_addr()?);
            Some(tcp)
        }
        None => None,
    };
    // The peer's uid is checked as a connection is accepted, before it is read.
    server::start(listener, uid, tcp, registry, launcher)?;
    Ok(path)
}

fn snapshot(state: &Mutex<LiveApp>) -> LiveApp {
    state.lock().map(|s| s.clone()).unwrap_or_default()
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(conn: &UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|cred| cred.uid())
}

const ROUTES: &str = "routes: GET /status, GET /metrics, POST /stop, POST /shutdown, POST /apps, \
POST /apps/NAME/stop, POST /apps/NAME/restart, POST /apps/NAME/rate, POST /apps/NAME/threads\n";

fn text(code: u16, message: impl Into<String>) -> (u16, &'static str, String) {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    (code, "text/plain", message)
}

fn route(
    req: &Request,
    registry: &Registry,
    launcher: Option<&dyn Launcher>,
) -> (u16, &'static str, String) {
    let app_route = req
        .target
        .strip_prefix("/apps/")
        .and_then(|rest| rest.split_once('/'));
    match (req.method.as_str(), req.target.as_str(), app_route) {
        ("GET", "/status", _) => (
            200,
            "application/json",
            serde_json::to_string(&registry.status()).unwrap_or_default(),
        ),
        ("GET", "/metrics", _) => (200, "text/plain; version=0.0.4", registry.metrics()),
        ("POST", "/stop", _) => {
            let at_once = registry.winding_down();
            let draining = registry.stop_all();
            (
                202,
                "application/json",
                serde_json::json!({ "draining": draining, "at_once": at_once }).to_string(),
            )
        }
        ("POST", "/shutdown", _) => {
            let at_once = registry.winding_down();
            let draining = registry.close();
            (
                202,
                "application/json",
                serde_json::json!({ "draining": draining, "at_once": at_once, "closing": true })
                    .to_string(),
            )
        }
        ("POST", "/apps", _) => match launcher {
            None => text(
                405,
                "this supervisor runs one app in the foreground; `supervisor start APP.json --detach` starts apps into the daemon",
            ),
            Some(launcher) => match serde_json::from_slice::<StartRequest>(&req.body) {
                Err(e) => text(400, format!("bad start request: {e}")),
                Ok(start) => match launcher.launch(start) {
                    Ok(message) => text(200, message),
                    Err(e) => text(e.code, e.message),
                },
            },
        },
        ("POST", _, Some((name, "stop"))) => {
            let at_once = registry.winding_down().iter().any(|n| n == name);
            if registry.stop_app(name) {
                text(
                    202,
                    if at_once {
                        format!("app '{name}' was draining already: stopping it at once (SIGTERM, then SIGKILL)")
                    } else {
                        format!("draining app '{name}'")
                    },
                )
            } else {
                text(404, format!("no app '{name}' runs in this supervisor"))
            }
        }
        ("POST", _, Some((name, "rate"))) => match set_rate(registry, name, &req.body) {
            Ok(message) => text(200, message),
            Err(e) => text(e.code, e.message),
        },
        ("POST", _, Some((name, "threads"))) => match set_threads(registry, name, &req.body) {
            Ok(message) => text(200, message),
            Err(e) => text(e.code, e.message),
        },
        ("POST", _, Some((name, "restart"))) => match restart(registry, name, &req.body) {
            Ok(message) => text(200, message),
            Err(e) => text(e.code, e.message),
        },
        _ => text(404, ROUTES),
    }
}

#[cfg(test)]
mod tests;
