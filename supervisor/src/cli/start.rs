//! `supervisor start`: a foreground start followed through the node's daemon, and
//! `start --detach`; both find (or start) the daemon and send it the app.

use super::ops::{supervisors, Found};
use crate::control::client::request;
use crate::control::StartRequest;
use crate::env::runtime;
use crate::plan::app::LoadedApp;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn own_exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The running daemon of this binary that takes apps, if any.
fn find_daemon() -> Option<Found> {
    let exe = own_exe();
    supervisors()
        .into_iter()
        .find(|f| f.status.daemon && !f.status.closing && f.status.exe == exe)
}

/// None takes apps: wait while one is closing (it holds its life lock until it has
/// exited), and refuse when one runs but does not answer (stopped, or overloaded): a
/// second daemon beside it would share the node's runtime folder and ledger.
fn wait_for_no_daemon() -> anyhow::Result<()> {
    let exe = own_exe();
    let alive = crate::control::daemon::alive_lock_path(&exe);
    let since = Instant::now();
    loop {
        let Ok(file) = std::fs::File::options().read(true).open(&alive) else {
            return Ok(());
        };
        let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
            Ok(_) => return Ok(()),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
            Err((_, errno)) => {
                return Err(std::io::Error::from(errno))
                    .with_context(|| format!("cannot lock {}", alive.display()))
            }
        };
        let closing = supervisors()
            .iter()
            .any(|f| f.status.daemon && f.status.closing && f.status.exe == exe);
        if !closing {
            anyhow::bail!(
                "the daemon (pid {}) runs but did not answer within {} s (stopped, or overloaded): not starting a second one; see `supervisor status` again, or end it (`kill PID`)",
                crate::control::daemon::holder_pid(file),
                crate::cli::ops::STATUS_WAIT.as_secs()
            );
        }
        if since.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "the daemon (pid {}) has been closing for 60 s and still runs: see its log",
                crate::control::daemon::holder_pid(file)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon to start an app into: the running one, or a new one (true) started under
/// a lock so that concurrent starts agree on one daemon.
fn daemon_for_start(metrics_addr: Option<std::net::SocketAddr>) -> anyhow::Result<(Found, bool)> {
    if let Some(d) = find_daemon() {
        return Ok((d, false));
    }
    let base = runtime::ensure_user_dir()?;
    let lock_path = base.join("daemon.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    // The lock is released when `_lock` is dropped.
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if let Some(d) = find_daemon() {
        return Ok((d, false));
    }
    wait_for_no_daemon()?;
    let log_path = base.join("daemon.log");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("daemon");
    if let Some(addr) = metrics_addr {
        cmd.arg("--metrics-addr").arg(addr.to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure only calls setsid (async-signal-safe, no allocation) between
    // fork and exec; the daemon leaves our session and terminal.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let _ = nix::unistd::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let pid = child.id();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            // Its last words (an error) are the reason: said here, not only in its log.
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = said
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            anyhow::bail!(
                "the daemon exited as it started ({status}): {}; see {}",
                protocol::text::shown_up_to(last.trim(), 500),
                log_path.display()
            );
        }
        if let Some(d) = supervisors().into_iter().find(|f| f.status.pid == pid) {
            return Ok((d, true));
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "the daemon (pid {pid}) did not open its control socket within 20 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The largest `POST /apps` body `start --detach` sends (the API takes 64 KiB).
const DETACH_BODY_MAX: usize = 60 * 1024;

/// The request that starts `loaded` in the daemon, with absolute paths and this
/// command's environment and working folder.
fn start_request(
    loaded: &LoadedApp,
    run_dir: &Path,
    startup_timeout_s: u64,
    hang_after_ms: u64,
) -> anyhow::Result<StartRequest> {
    let env =
        crate::env::appenv::AppEnv::of_this_process().context("cannot read the current folder")?;
    Ok(StartRequest {
        file: std::path::absolute(&loaded.file)
            .with_context(|| format!("cannot resolve {}", loaded.file.display()))?,
        run_dir: std::path::absolute(run_dir)
            .with_context(|| format!("cannot resolve {}", run_dir.display()))?,
        startup_timeout_s,
        hang_after_ms,
        env: Some(env.vars),
        cwd: Some(env.cwd),
    })
}

/// [`daemon_for_start`], saying when `--metrics-addr` comes too late to apply.
fn daemon_noting_metrics(metrics_addr: Option<std::net::SocketAddr>) -> anyhow::Result<Found> {
    let (daemon, fresh) = daemon_for_start(metrics_addr)?;
    if !fresh && metrics_addr.is_some() {
        eprintln!(
            "note: the daemon (pid {}) runs already; --metrics-addr applies only when it starts",
            daemon.status.pid
        );
    }
    Ok(daemon)
}

/// `start` in the foreground: the app runs in the node's daemon (started when none
/// runs) and this command follows it to its end ([`crate::control::follow`]).
pub fn start_followed(
    loaded: &LoadedApp,
    run_dir: &Path,
    startup_timeout_s: u64,
    hang_after_ms: u64,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let name = &loaded.spec.name;
    refuse_if_running(name)?;
    let start = start_request(loaded, run_dir, startup_timeout_s, hang_after_ms)?;
    // A daemon may be exiting (its last app just ended) as we ask: then ask a new one.
    for attempt in 0..2 {
        let daemon = daemon_noting_metrics(metrics_addr)?;
        let sock = daemon
            .sock
            .parent()
            .map(|dir| dir.join(crate::control::follow::SOCKET))
            .unwrap_or_default();
        match crate::control::follow::follow(&sock, &start) {
            Ok(code) => return Ok(code),
            Err(
                crate::control::follow::FollowError::Unreachable { .. }
                | crate::control::follow::FollowError::Closing,
            ) if attempt == 0 => {}
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        }
    }
    anyhow::bail!("no daemon took app '{name}'")
}

/// An app of that name running in any supervisor of this user is an error.
fn refuse_if_running(name: &str) -> anyhow::Result<()> {
    if let Some(f) = supervisors()
        .into_iter()
        .find(|f| f.status.apps.iter().any(|a| a.name == name))
    {
        anyhow::bail!(
            "app '{name}' already runs (supervisor pid {}); stop it first with `supervisor stop {name}`",
            f.status.pid
        );
    }
    Ok(())
}

/// `start --detach`: send the app to the daemon (starting one when none runs) and
/// report what it answered.
pub fn start_detached(
    loaded: &LoadedApp,
    run_dir: &Path,
    startup_timeout_s: u64,
    hang_after_ms: u64,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let name = &loaded.spec.name;
    refuse_if_running(name)?;
    let start = start_request(loaded, run_dir, startup_timeout_s, hang_after_ms)?;
    let mut body = serde_json::to_string(&start)?;
    if body.len() > DETACH_BODY_MAX {
        // The control API takes 64 KiB of body: an environment that large goes with the
        // settings SmartPipe and its stages read, not whole.
        let mut start = start;
        if let Some(vars) = start.env.as_mut() {
            vars.retain(|k, _| {
                [
                    "SMARTPIPE_",
                    "ORT_",
                    "CUDA_",
                    "LD_",
                    "PYTHON",
                    "OMP_",
                    "RUST_",
                ]
                .iter()
                .any(|p| k.starts_with(p))
                    || ["PATH", "HOME", "USER", "LANG", "TMPDIR"].contains(&k.as_str())
            });
        }
        body = serde_json::to_string(&start)?;
        eprintln!(
            "note: this environment is too large to send whole; the app gets its SMARTPIPE_*, ORT_*, CUDA_*, LD_*, PYTHON*, OMP_*, RUST_*, PATH, HOME, USER, LANG and TMPDIR (a foreground start sends it whole)"
        );
    }
    let wait = Duration::from_secs(startup_timeout_s.saturating_add(30));
    // A daemon may be exiting (its last app just ended) as we ask: then ask a new one.
    for attempt in 0..2 {
        let daemon = daemon_noting_metrics(metrics_addr)?;
        let answer = request(&daemon.sock, "POST", "/apps", Some(&body), wait);
        match answer {
            Ok((200, message)) => {
                println!(
                    "{}\nsee `supervisor status`, `supervisor logs {name}/TASK`; stop it with `supervisor stop {name}`",
                    message.trim_end()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok((503, _)) | Ok((0, _)) | Err(_) if attempt == 0 => continue,
            Ok((_, message)) => anyhow::bail!("{}", message.trim_end()),
            Err(e) => return Err(e.context("the daemon did not answer")),
        }
    }
    anyhow::bail!("no daemon took app '{name}'")
}

/// `start --no-daemon`: admit and run the app in this process, with a control API of its
/// own, until it ends or a signal drains it.
pub fn run_here(
    mut loaded: LoadedApp,
    run_dir: PathBuf,
    startup_timeout: u64,
    hang_after_ms: u64,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let admitted = crate::control::daemon::admit(&mut loaded)?;
    if let Some(note) = &admitted.note {
        eprintln!("{note}");
    }
    let runtime_dir = crate::env::runtime::prepare()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, interrupted.clone())
            .context("cannot install signal handlers")?;
    }
    let opts = crate::run::RunOptions {
        promise: admitted.promise.clone(),
        ..crate::control::daemon::run_options(run_dir, startup_timeout, hang_after_ms, true)
    };
    let live = Arc::new(std::sync::Mutex::new(crate::control::LiveApp {
        name: loaded.spec.name.clone(),
        state: "starting".into(),
        run_dir: opts.run_dir.display().to_string(),
        supervisor_pid: std::process::id(),
        ..crate::control::LiveApp::default()
    }));
    // A foreground supervisor hosts this one app; its stop flag is the signals'.
    let registry = Arc::new(crate::control::Registry::new(false));
    registry.host(
        &loaded.spec.name,
        crate::control::Hosted {
            live: live.clone(),
            stop: interrupted.clone(),
            tasks: loaded.spec.tasks.iter().map(|t| t.name.clone()).collect(),
            outputs: crate::control::outputs_of(&loaded.spec),
        },
    )?;
    let claims = crate::control::output_claims::claim(
        &loaded.spec.name,
        &crate::control::claimed_paths(&loaded.spec, &opts.run_dir),
    );
    let claims = match claims {
        Ok(claims) => claims,
        Err(e) => {
            crate::env::runtime::cleanup(&runtime_dir);
            return Err(e.into());
        }
    };
    let spec = &loaded.spec;
    if let Err(why) =
        crate::run::apprun::outputs::refuse_unfinished(&spec.tasks, &spec.name, &loaded.file)
    {
        crate::env::runtime::cleanup(&runtime_dir);
        anyhow::bail!(why);
    }
    if let Err(e) = crate::control::serve(&runtime_dir, registry, None, metrics_addr) {
        crate::env::runtime::cleanup(&runtime_dir);
        return Err(e.context("cannot start the control API"));
    }
    let outcome = crate::run::run_app(&loaded, &opts, interrupted, Some(live));
    drop(admitted.held);
    drop(claims);
    crate::env::runtime::cleanup(&runtime_dir);
    let outcome = outcome?;
    eprint!("{}", outcome.summary.render());
    match outcome.error {
        None => Ok(ExitCode::SUCCESS),
        Some(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
