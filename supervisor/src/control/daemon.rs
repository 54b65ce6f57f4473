//! The daemon of `supervisor start --detach` (hidden command `supervisor daemon`): one
//! background supervisor per user and binary that hosts every app sent to it through
//! `POST /apps`. Each app is validated, admitted and run on its own thread by
//! [`run::run_app`] with its own run dir, logs, summary, report and stop flag (its own
//! stages and GPU agent too). The daemon exits once its last app has ended, on
//! `POST /shutdown` (`supervisor shutdown`) or SIGTERM/SIGINT after draining its apps,
//! and when no app came within [`FIRST_APP_WAIT`] of its start.

use crate::control::{self, ApiError, HostError, Hosted, LiveApp, Registry, StartRequest};
use crate::env::runtime;
use crate::plan::app::{self, LoadedApp};
use crate::plan::ledger;
use crate::plan::profiled_plan;
use crate::run;
use anyhow::Context;
use protocol::spec::ServiceType;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A daemon that no app reached this long after its start exits.
pub const FIRST_APP_WAIT: Duration = Duration::from_secs(30);
/// How often the poll for "started" looks at a starting app's state.
const START_POLL: Duration = Duration::from_millis(20);

/// The run options of an app started by `start` (in the foreground or the daemon).
pub fn run_options(
    run_dir: PathBuf,
    startup_timeout_s: u64,
    hang_after_ms: u64,
    show_progress: bool,
) -> run::RunOptions {
    run::RunOptions {
        run_dir,
        startup_timeout: Duration::from_secs(startup_timeout_s),
        heartbeat_ms: 100,
        stop_grace: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        hang_after: Duration::from_millis(hang_after_ms),
        show_progress,
        agents: None,
        promise: None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("cannot read the profiles of app '{app}': {detail}")]
    Profiles { app: String, detail: String },
    #[error("app '{app}' refused ({service:?}): {refusal}")]
    Refused {
        app: String,
        service: ServiceType,
        refusal: String,
    },
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
}

/// An admitted app: what to tell people, and its reservation in the node's ledger
/// (given back when this value is dropped, i.e. when the app has ended).
pub struct Admitted {
    pub note: Option<String>,
    pub held: ledger::Held,
    /// A request-guarantee app admitted on a profile: what it was promised, so that a
    /// change of its rate is admitted again (see [`crate::plan::readmit`]).
    pub promise: Option<crate::plan::readmit::Promise>,
}

/// Admission against the node as it is now: the planner sizes the app (applied to
/// `loaded`) within what the request-guarantee apps already admitted on this node leave
/// (the node's ledger), or refuses a guaranteed app it cannot serve there, before
/// anything starts, naming the binding resource and who holds the rest. A best-effort
/// app is always admitted, planned on the leftovers. An app without a profile (one with
/// no quota: [`crate::control::autoprofile`] refuses the others) has no plan and reserves nothing.
pub fn admit(loaded: &mut LoadedApp) -> Result<Admitted, AdmitError> {
    let app = loaded.spec.name.clone();
    let service = loaded.spec.service_type;
    let guaranteed = service == ServiceType::RequestGuarantee;
    let ledger = ledger::Ledger::lock()?;
    let node = ledger::Node::this_machine();
    let left = ledger.left(node);
    let refused = |refusal: String| AdmitError::Refused {
        app: app.clone(),
        service,
        refusal,
    };
    let own_cores = loaded.spec.constraints.cpu_cores.unwrap_or(node.cores);
    if guaranteed {
        if let (Some(want), Some(have)) = (loaded.spec.constraints.memory_mb, left.memory_mb) {
            if want > have {
                return Err(refused(format!(
                    "needs {want} MiB of memory, {have} MiB left{}",
                    left.after_memory()
                )));
            }
        }
    }
    let models =
        crate::plan::device_memory::admit(loaded, left.device.as_ref()).map_err(refused)?;
    // A quota impossible on its face, or a guaranteed app with a quota and no current
    // profile, is refused here ([`crate::control::autoprofile`]).
    let profiles = crate::control::autoprofile::admission_checks(loaded)?;
    let mut reservation = ledger::Reservation {
        id: ledger::new_id(),
        app: app.clone(),
        supervisor_pid: std::process::id(),
        service_type: if guaranteed {
            "request-guarantee"
        } else {
            "best-effort"
        }
        .into(),
        cores: 0.0,
        memory_mb: loaded.spec.constraints.memory_mb.filter(|_| guaranteed),
        model_mb: models.iter().map(|m| m.mb).sum(),
        models,
        basis: "plan".into(),
        cpu_files: Vec::new(),
        own_cores: loaded.spec.constraints.cpu_cores,
        max_latency_ms: loaded.spec.quota.max_latency_ms.filter(|_| guaranteed),
    };
    // Best effort plans on the leftovers, but never on nothing.
    let cap = if guaranteed {
        left.cores
    } else {
        ledger::best_effort_cores(&left, None)
    };
    let mut note = None;
    let mut promised = None;
    match profiles {
        // Without a profile there is no plan to reserve for (and, with a timing quota,
        // nothing is promised: see `supervisor profile`).
        None => {
            reservation.basis = if guaranteed {
                match reservation.memory_mb {
                    Some(_) => "no profile: its memory reserved, no cores".into(),
                    None => "no profile: nothing reserved".into(),
                }
            } else {
                "best effort: the leftovers".into()
            };
        }
        Some(profiles) => match profiled_plan::admit_within(&loaded.spec, &profiles, cap) {
            Ok(plan) => {
                if guaranteed {
                    reservation.cores = plan.cores / crate::plan::smart::CPU_HEADROOM;
                    // The rate it was planned at; 0 (unpaced) when it gives none, so that
                    // `supervisor rate` admits it again at any rate set later.
                    let spec = &loaded.spec;
                    let offered = crate::plan::offered_rate(spec);
                    let rate = crate::plan::smart::qos::required_rate(&spec.quota, offered);
                    promised = Some((profiles.clone(), rate.unwrap_or(0.0)));
                }
                let mut text = format!("plan ({:?}):\n{plan}", loaded.spec.strategy);
                if let Some(faster) = faster_than_declared(&loaded.spec) {
                    text = format!("{faster}\n{text}");
                }
                note = Some(text);
                profiled_plan::apply(&mut loaded.spec, &plan);
            }
            // Best effort runs with the static plan and its predicted shortfall.
            Err(refusal) if !guaranteed => {
                note = Some(format!(
                    "admitted best-effort with a predicted shortfall: {refusal}"
                ));
            }
            Err(crate::plan::smart::Refusal::Cores { needed, .. }) if cap < own_cores => {
                return Err(refused(format!(
                    "needs {needed:.2} cores, {cap:.2} left{}",
                    left.after()
                )));
            }
            Err(refusal) => return Err(refused(refusal.to_string())),
        },
    }
    let cores = reservation.cores;
    let held = ledger.reserve(reservation)?;
    let promise = promised.map(|(profiles, rate)| crate::plan::readmit::Promise {
        reservation_id: held.id().to_string(),
        profiles,
        rate,
        cores,
    });
    Ok(Admitted {
        note,
        held,
        promise,
    })
}

/// A note for an app whose heads are paced faster than its `request_frequency`: it is
/// planned (and a guaranteed app admitted) at the heads' pace, not the declared rate.
fn faster_than_declared(spec: &protocol::spec::AppSpec) -> Option<String> {
    let declared = spec.request_frequency.filter(|r| *r > 0.0)?;
    let offered = crate::plan::offered_rate(spec)?;
    (offered > declared).then(|| {
        format!(
            "note: a source of app '{}' is paced at {offered} items/s, above its request_frequency {declared}: planned at {offered}",
            spec.name
        )
    })
}

/// Run the daemon until its apps have ended (see the module doc).
/// The lock a daemon of the binary `exe` holds for its whole life (`daemon-<hash>.alive`
/// in the user's runtime folder, naming its pid): a start that finds no daemon answering
/// tells a stopped or overloaded one from none, and does not start a second one.
pub fn alive_lock_path(exe: &str) -> std::path::PathBuf {
    runtime::user_dir().join(format!(
        "daemon-{:016x}.alive",
        crate::control::profile_store::fnv1a(exe)
    ))
}

/// Take the daemon's life lock, or name the daemon that holds it.
fn hold_alive_lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::Write;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = alive_lock_path(&exe);
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut held = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(held) => held,
        Err((file, _)) => anyhow::bail!(
            "another daemon of this binary runs (pid {}): one daemon per node",
            holder_pid(file)
        ),
    };
    held.set_len(0)?;
    writeln!(held, "{}", std::process::id())?;
    Ok(held)
}

/// The pid a daemon wrote in its life lock ("?" when it cannot be read).
pub fn holder_pid(mut file: std::fs::File) -> String {
    use std::io::Read;
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "?".into(),
        pid => pid.to_string(),
    }
}

pub fn run_daemon(metrics_addr: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let _alive = hold_alive_lock()?;
    let runtime_dir = runtime::prepare()?;
    let signalled = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, signalled.clone())
            .context("cannot install signal handlers")?;
    }
    let registry = Arc::new(Registry::new(true));
    let launcher = Arc::new(DaemonLauncher {
        registry: registry.clone(),
        // Beside the per-daemon folders, so the log outlives the daemon.
        agents: crate::run::agent_host::AgentHosts::new(
            runtime_dir
                .parent()
                .map_or_else(|| runtime_dir.join("agents"), |root| root.join("agents")),
        ),
    });
    let served = control::serve(
        &runtime_dir,
        registry.clone(),
        Some(launcher.clone()),
        metrics_addr,
    )
    .and_then(|sock| {
        crate::control::follow::serve(&runtime_dir, registry.clone(), launcher)
            .context("cannot open the socket of foreground starts")?;
        Ok(sock)
    });
    let sock = match served {
        Ok(sock) => sock,
        Err(e) => {
            runtime::cleanup(&runtime_dir);
            return Err(e.context("cannot start the control API"));
        }
    };
    let pid = std::process::id();
    eprintln!("[daemon {pid}] started, control socket {}", sock.display());
    let started = Instant::now();
    loop {
        registry.wait_changed(Duration::from_millis(200));
        if signalled.swap(false, Ordering::SeqCst) {
            let apps = registry.close();
            eprintln!("[daemon {pid}] signal: draining {apps:?} (signal again to stop at once)");
        }
        if registry.close_if_idle(started.elapsed() > FIRST_APP_WAIT) {
            break;
        }
    }
    runtime::cleanup(&runtime_dir);
    eprintln!("[daemon {pid}] no app left: exiting");
    Ok(ExitCode::SUCCESS)
}

struct DaemonLauncher {
    registry: Arc<Registry>,
    /// One GPU agent per device for every app of the daemon.
    agents: Arc<crate::run::agent_host::AgentHosts>,
}

/// An app the daemon started: its name, state, drain flag and end.
struct Begun {
    name: String,
    run_dir: PathBuf,
    live: Arc<Mutex<LiveApp>>,
    stop: Arc<AtomicBool>,
    done: mpsc::Receiver<Result<String, String>>,
}

/// How a start looked once the app ran, ended, or took too long to start.
enum StartWait {
    Running(String),
    Ended(Result<String, String>),
}

impl DaemonLauncher {
    /// Check, admit and start the app of `request` on its own thread, under the
    /// environment it came with (and `console`, the terminal of a following command).
    fn begin(
        &self,
        request: StartRequest,
        console: Option<Arc<crate::env::console::Console>>,
    ) -> Result<Begun, ApiError> {
        if let Some(problem) = request.problem() {
            return Err(ApiError::new(400, problem));
        }
        let env = match (&request.env, &console) {
            (None, None) => None,
            (vars, _) => Some(Arc::new(crate::env::appenv::AppEnv {
                vars: vars.clone().unwrap_or_else(|| std::env::vars().collect()),
                cwd: request
                    .cwd
                    .clone()
                    .or_else(|| std::env::current_dir().ok())
                    .unwrap_or_else(|| PathBuf::from("/")),
                console,
            })),
        };
        match env {
            Some(env) => {
                crate::env::appenv::scope(env.clone(), || self.begin_here(request, Some(env)))
            }
            None => self.begin_here(request, None),
        }
    }

    fn begin_here(
        &self,
        request: StartRequest,
        env: Option<Arc<crate::env::appenv::AppEnv>>,
    ) -> Result<Begun, ApiError> {
        let (
            loaded,
            Admitted {
                note,
                held,
                promise,
            },
        ) = load_and_admit(&request)?;
        let name = loaded.spec.name.clone();
        let run_dir = request.run_dir.clone();
        let live = Arc::new(Mutex::new(LiveApp {
            name: name.clone(),
            state: "starting".into(),
            run_dir: run_dir.display().to_string(),
            supervisor_pid: std::process::id(),
            ..LiveApp::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        self.registry
            .host(
                &name,
                Hosted {
                    live: live.clone(),
                    stop: stop.clone(),
                    tasks: loaded.spec.tasks.iter().map(|t| t.name.clone()).collect(),
                    outputs: crate::control::outputs_of(&loaded.spec),
                },
            )
            .map_err(|e| match e {
                HostError::NameTaken(_) | HostError::OutputTaken { .. } => {
                    ApiError::new(409, e.to_string())
                }
                HostError::Closing => ApiError::new(503, e.to_string()),
            })?;
        // From here the name is taken: every failure must give it back.
        let claims = match crate::control::output_claims::claim(
            &name,
            &crate::control::claimed_paths(&loaded.spec, &run_dir),
        ) {
            Ok(claims) => claims,
            Err(e) => {
                self.registry.remove(&name);
                let status = match e {
                    crate::control::output_claims::ClaimError::Taken { .. } => 409,
                    crate::control::output_claims::ClaimError::Io { .. } => 500,
                };
                return Err(ApiError::new(status, e.to_string()));
            }
        };
        let spec = &loaded.spec;
        if let Err(why) =
            crate::run::apprun::outputs::refuse_unfinished(&spec.tasks, &spec.name, &loaded.file)
        {
            self.registry.remove(&name);
            return Err(ApiError::new(409, why));
        }
        let log = std::fs::create_dir_all(&run_dir)
            .and_then(|()| std::fs::File::create(run_dir.join("supervisor.log")));
        let mut log = match log {
            Ok(log) => log,
            Err(e) => {
                self.registry.remove(&name);
                return Err(ApiError::new(
                    500,
                    format!("cannot create {}/supervisor.log: {e}", run_dir.display()),
                ));
            }
        };
        let console = crate::env::appenv::console();
        let tell_name = name.clone();
        // What a foreground `start` prints goes to the following command's stderr.
        let tell = move |text: &str| match console.as_ref().and_then(|c| c.stderr().ok()) {
            Some(mut err) => {
                let _ = err.write_all(text.as_bytes());
            }
            None => {
                for line in text.lines() {
                    eprintln!("[app {tell_name}] {line}");
                }
            }
        };
        if let Some(note) = &note {
            let _ = writeln!(log, "{note}");
            if crate::env::appenv::console().is_some() {
                tell(&format!("{note}\n"));
            }
        }
        let opts = run::RunOptions {
            agents: Some(self.agents.clone()),
            promise,
            ..run_options(
                run_dir.clone(),
                request.startup_timeout_s,
                request.hang_after_ms,
                crate::env::appenv::console().is_some(),
            )
        };
        let (done_tx, done) = mpsc::channel::<Result<String, String>>();
        let registry = self.registry.clone();
        let thread_live = live.clone();
        let thread_name = name.clone();
        let thread_stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("app-{name}"))
            .spawn(move || {
                let run = || run::run_app(&loaded, &opts, thread_stop, Some(thread_live));
                let outcome = match env {
                    Some(env) => crate::env::appenv::scope(env, run),
                    None => run(),
                };
                drop(held);
                drop(claims);
                let result = match outcome {
                    Ok(o) => {
                        let mut text = o.summary.render();
                        match o.error {
                            None => Ok(text),
                            Some(e) => {
                                text += &format!("error: {e}\n");
                                Err(text)
                            }
                        }
                    }
                    Err(e) => Err(format!("error: {e:#}\n")),
                };
                let text = match &result {
                    Ok(t) | Err(t) => t,
                };
                let _ = log.write_all(text.as_bytes());
                tell(text);
                registry.remove(&thread_name);
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawned {
            self.registry.remove(&name);
            return Err(ApiError::new(500, format!("cannot start a thread: {e}")));
        }
        Ok(Begun {
            name,
            run_dir,
            live,
            stop,
            done,
        })
    }
}
impl DaemonLauncher {
    /// Wait until `begun` runs (every stage connected and set up), ends, or takes
    /// longer than its start-up allows.
    fn wait_started(begun: &Begun, startup_timeout_s: u64) -> StartWait {
        let deadline = Instant::now() + Duration::from_secs(startup_timeout_s.saturating_add(10));
        let pid = std::process::id();
        let (name, run_dir) = (&begun.name, begun.run_dir.display());
        loop {
            match begun.done.recv_timeout(START_POLL) {
                Ok(result) => return StartWait::Ended(result),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return StartWait::Ended(Err(format!(
                        "app '{name}' ended without a summary (see the daemon's log)"
                    )))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let state = begun
                .live
                .lock()
                .map(|l| l.state.clone())
                .unwrap_or_default();
            if state != "starting" {
                return StartWait::Running(format!(
                    "app '{name}' runs in the daemon (pid {pid}), run dir {run_dir}"
                ));
            }
            if Instant::now() > deadline {
                return StartWait::Running(format!(
                    "app '{name}' is still starting in the daemon (pid {pid}), run dir {run_dir}"
                ));
            }
        }
    }
}

impl control::Launcher for DaemonLauncher {
    fn launch(&self, request: StartRequest) -> Result<String, ApiError> {
        let timeout = request.startup_timeout_s;
        let begun = self.begin(request, None)?;
        match Self::wait_started(&begun, timeout) {
            StartWait::Running(message) | StartWait::Ended(Ok(message)) => Ok(message),
            StartWait::Ended(Err(failure)) => Err(ApiError::new(
                500,
                format!("app '{}' failed:\n{failure}", begun.name),
            )),
        }
    }
}

impl crate::control::follow::FollowLauncher for DaemonLauncher {
    fn start_followed(
        &self,
        request: StartRequest,
        console: Arc<crate::env::console::Console>,
    ) -> Result<crate::control::follow::Followed, ApiError> {
        let begun = self.begin(request, Some(console))?;
        Ok(crate::control::follow::Followed {
            message: format!(
                "app '{}' runs in the daemon (pid {}), run dir {}",
                begun.name,
                std::process::id(),
                begun.run_dir.display()
            ),
            stop: begun.stop,
            done: begun.done,
        })
    }
}

/// Load an app sent to the daemon, make the checks `validate` and `start` make (an app sent
/// straight to the socket is refused for the same problems, before anything is admitted or
/// created) and admit it; errors carry the HTTP status of the refusal.
fn load_and_admit(request: &StartRequest) -> Result<(app::LoadedApp, Admitted), ApiError> {
    let mut loaded = app::load(&request.file).map_err(|e| ApiError::new(400, format!("{e:#}")))?;
    // The checks `validate` and `start` make: an app sent straight to the socket
    // is refused for the same problems, before anything is admitted or created.
    crate::plan::preflight::check(&loaded).map_err(|e| ApiError::new(400, format!("{e:#}")))?;
    let admitted = admit(&mut loaded).map_err(|e| match e {
        AdmitError::Profiles { .. } => ApiError::new(400, e.to_string()),
        AdmitError::Refused { .. } => ApiError::new(422, e.to_string()),
        AdmitError::Ledger(_) => ApiError::new(500, e.to_string()),
    })?;
    Ok((loaded, admitted))
}
