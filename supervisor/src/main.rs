//! `supervisor`: the SmartPipe command line. It validates app files, plans them, and
//! runs them as one OS process per stage replica (plus one GPU agent per device),
//! wired with ipc-channel and shared memory, supervised until they finish.

mod app;
mod bench;
mod control;
mod launch;
mod models;
mod plan;
mod profiling;
mod progress;
mod replica;
mod report;
mod run;
mod runtime;
#[allow(dead_code, unused_imports)] // wired into `plan`, `profile` and `start` as it lands
mod smart;
mod summary;
mod timeline;

use anyhow::Context;
use clap::{Parser, Subcommand};
use protocol::spec::ServiceType;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "supervisor",
    version,
    about = "Run vision-inference apps as supervised multi-process pipelines",
    long_about = "SmartPipe runs an app — a JSON file describing a DAG of tasks (sources, image ops, \
model steps, table ops, sinks) and the quality of service it needs — as one OS process per \
stage replica, passing frames and tensors through shared memory.\n\n\
Start with `supervisor validate APP.json`, then `supervisor start APP.json`. \
`supervisor schema` prints the JSON Schema of the app format for editors."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an app in the foreground until its sources end (Ctrl-C drains it).
    Start {
        /// The app file.
        app: PathBuf,
        /// Where logs, outputs, plan.json and summary.json go [default: runs/<app>-<time>/].
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Seconds a stage may take to start and connect back.
        #[arg(long, default_value_t = 20)]
        startup_timeout: u64,
        /// A stage silent this long (3 missed heartbeats of 100 ms by default) is taken
        /// for hung and killed; raise it on an overloaded machine.
        #[arg(long, env = "SMARTPIPE_HANG_AFTER_MS", default_value_t = 300)]
        hang_after_ms: u64,
        /// Also serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Run in the background (its own session; output in RUN_DIR/supervisor.log) and
        /// return at once; `status`, `logs` and `stop` reach it.
        #[arg(long)]
        detach: bool,
    },
    /// Show the running apps: a table per app and stage (pid, state, items, rates).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Drain and stop running apps (all, or the one named).
    Stop {
        /// Only the app with this name.
        app: Option<String>,
    },
    /// Print a stage's log (`APP/TASK#N` or `TASK#N`; `#0` when omitted).
    Logs {
        stage: String,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
    },
    /// Check an app file and list every problem with where it is.
    Validate {
        /// The app file.
        app: PathBuf,
    },
    /// Print the JSON Schema of the app format.
    Schema,
    /// Show the plan (replicas, batching, shared-memory pools) for an app.
    Plan {
        /// The app file.
        app: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also find the cheapest static configuration meeting the quota by brute force
        /// (batch 1-16 × replicas 1-2 per task), the planner's yardstick.
        #[arg(long)]
        brute_force: bool,
    },
    /// Measure every task's service time for each batch size on this machine and store
    /// the profiles (profiles/<machine>-<app>.json beside the app); prints t = α + β·b.
    Profile {
        /// The app file.
        app: PathBuf,
        /// Batch sizes to measure the GPU tasks at.
        #[arg(long, value_delimiter = ',', default_values_t = [1u32, 2, 4, 8])]
        batches: Vec<u32>,
        /// Items per measuring run (sources are capped to it).
        #[arg(long, default_value_t = 40)]
        items: u64,
    },
    /// Benchmarks of SmartPipe itself.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCmd,
    },
}

fn main() -> ExitCode {
    // Nothing this process creates is for other users.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o077) };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn default_run_dir(app: &str) -> PathBuf {
    PathBuf::from("runs").join(format!("{app}-{}", utc_stamp()))
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Validate { app } => {
            let loaded = app::load(&app)?;
            println!(
                "{}: app '{}' is valid ({} tasks)",
                app.display(),
                loaded.spec.name,
                loaded.spec.tasks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&protocol::schema::app_schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Plan {
            app,
            json,
            brute_force,
        } => {
            let loaded = app::load(&app)?;
            let the_plan = plan::plan(&loaded.spec)?;
            let profiles = profiling::load_profiles(&loaded)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&the_plan)?);
            } else {
                println!(
                    "{:<16} {:<5} {:<18} {:>8} {:>6} {:>7} {:>14}",
                    "task", "kind", "function", "replicas", "batch", "slots", "slot bytes"
                );
                for s in &the_plan.stages {
                    let (slots, size) = s
                        .pool
                        .as_ref()
                        .map(|p| (p.slots.to_string(), p.slot_size.to_string()))
                        .unwrap_or(("-".into(), "-".into()));
                    println!(
                        "{:<16} {:<5} {:<18} {:>8} {:>6} {:>7} {:>14}",
                        s.task,
                        s.kind.to_string(),
                        s.function,
                        s.replicas,
                        s.batch_size,
                        slots,
                        size
                    );
                }
            }
            match &profiles {
                None => println!(
                    "\nno profile of '{}' on this machine ({}): run `supervisor profile {}` to let the planner choose batch sizes and replicas",
                    loaded.spec.name,
                    profiling::machine(),
                    app.display()
                ),
                Some(p) => {
                    let all = profiling::all_plans(&loaded.spec, p)?;
                    for (name, plan) in [("lazy", &all.lazy), ("balance", &all.balance), ("strong", &all.strong)] {
                        match plan {
                            Some(plan) => println!("\nstrategy {name}:\n{plan}"),
                            None => println!("\nstrategy {name}: no configuration meets the quota"),
                        }
                    }
                    match profiling::admit(&loaded.spec, p) {
                        Ok(plan) => println!(
                            "\nadmitted ({:?}, {:?}){}",
                            loaded.spec.service_type,
                            loaded.spec.strategy,
                            if plan.shortfall.is_empty() {
                                String::new()
                            } else {
                                format!(" with a predicted shortfall: {:?}", plan.shortfall)
                            }
                        ),
                        Err(refusal) => println!("\nrefused: {refusal}"),
                    }
                    if brute_force {
                        profiling::print_brute_force(&loaded.spec, p)?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start {
            app,
            run_dir,
            startup_timeout,
            hang_after_ms,
            metrics_addr,
            detach,
        } => {
            let mut loaded = app::load(&app)?;
            if detach {
                let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&loaded.spec.name));
                return detach_start(&app, &run_dir, &loaded.spec.name);
            }
            // Admission: with a profile of this machine, the planner sizes the app or
            // refuses a guaranteed app it cannot serve, before anything starts.
            if let Some(profiles) = profiling::load_profiles(&loaded)? {
                match profiling::admit(&loaded.spec, &profiles) {
                    Ok(plan) => {
                        eprintln!("plan ({:?}):\n{plan}", loaded.spec.strategy);
                        profiling::apply(&mut loaded.spec, &plan);
                    }
                    // Best effort is always admitted: it runs with the static plan
                    // and its predicted shortfall.
                    Err(refusal) if loaded.spec.service_type == ServiceType::BestEffort => {
                        eprintln!("admitted best-effort with a predicted shortfall: {refusal}")
                    }
                    Err(refusal) => anyhow::bail!(
                        "app '{}' refused ({:?}): {refusal}",
                        loaded.spec.name,
                        loaded.spec.service_type
                    ),
                }
            }
            let runtime_dir = runtime::prepare()?;
            let interrupted = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, interrupted.clone())
                    .context("cannot install signal handlers")?;
            }
            let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&loaded.spec.name));
            let opts = run::RunOptions {
                run_dir,
                startup_timeout: Duration::from_secs(startup_timeout),
                heartbeat_ms: 100,
                stop_grace: Duration::from_secs(5),
                drain_timeout: Duration::from_secs(10),
                hang_after: Duration::from_millis(hang_after_ms),
                show_progress: true,
            };
            let live = Arc::new(std::sync::Mutex::new(control::LiveApp {
                name: loaded.spec.name.clone(),
                state: "starting".into(),
                run_dir: opts.run_dir.display().to_string(),
                supervisor_pid: std::process::id(),
                ..control::LiveApp::default()
            }));
            control::serve(
                &runtime_dir,
                live.clone(),
                interrupted.clone(),
                metrics_addr,
            )
            .context("cannot start the control API")?;
            let outcome = run::run_app(&loaded, &opts, interrupted, Some(live));
            runtime::cleanup(&runtime_dir);
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
        Cmd::Bench { which } => bench::run(which),
        Cmd::Profile {
            app,
            batches,
            items,
        } => {
            let loaded = app::load(&app)?;
            let runtime_dir = runtime::prepare()?;
            let result = profiling::profile(&loaded, &batches, items);
            runtime::cleanup(&runtime_dir);
            profiling::print_fits(&loaded.spec, &result?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => status(json),
        Cmd::Stop { app } => stop(app.as_deref()),
        Cmd::Logs { stage, follow } => logs(&stage, follow),
    }
}

/// Every live supervisor's app (its control API's `/status`).
fn live_apps() -> anyhow::Result<Vec<(std::path::PathBuf, control::LiveApp)>> {
    let mut apps = Vec::new();
    for (_, sock) in control::find_supervisors() {
        if let Ok((200, body)) = control::request(&sock, "GET", "/status") {
            if let Ok(app) = serde_json::from_str::<control::LiveApp>(&body) {
                apps.push((sock, app));
            }
        }
    }
    Ok(apps)
}

fn status(json: bool) -> anyhow::Result<ExitCode> {
    let apps = live_apps()?;
    if json {
        let list: Vec<&control::LiveApp> = apps.iter().map(|(_, a)| a).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if apps.is_empty() {
        println!("no SmartPipe supervisor is running (start one with `supervisor start APP.json`)");
        return Ok(ExitCode::SUCCESS);
    }
    for (_, app) in &apps {
        println!(
            "app {} ({}, {:.0} s, supervisor pid {}, run dir {})",
            app.name, app.state, app.uptime_s, app.supervisor_pid, app.run_dir
        );
        println!(
            "  {:<22} {:>7} {:<10} {:>8} {:>8} {:>6} {:>5} {:>5} {:>8} {:>8}",
            "stage", "pid", "state", "in", "out", "lost", "queue", "batch", "items/s", "restarts"
        );
        for s in &app.stages {
            let lost: u64 = s.metrics.lost.iter().sum();
            let queue = s
                .metrics
                .items_in
                .saturating_sub(s.metrics.items_out + lost);
            println!(
                "  {:<22} {:>7} {:<10} {:>8} {:>8} {:>6} {:>5} {:>5} {:>8.1} {:>8}",
                s.label,
                s.pid,
                s.state,
                s.metrics.items_in,
                s.metrics.items_out,
                lost,
                queue,
                s.batch,
                s.items_per_s,
                s.restarts
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn stop(name: Option<&str>) -> anyhow::Result<ExitCode> {
    let apps = live_apps()?;
    let mut stopped = 0;
    for (sock, app) in &apps {
        if name.is_some_and(|n| n != app.name) {
            continue;
        }
        let (code, _) = control::request(sock, "POST", "/stop")?;
        if code == 202 {
            println!(
                "draining app '{}' (supervisor pid {})",
                app.name, app.supervisor_pid
            );
            stopped += 1;
        }
    }
    if stopped == 0 {
        anyhow::bail!(
            "no running app{} to stop",
            name.map(|n| format!(" named '{n}'")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn logs(stage: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let (app_name, label) = match stage.split_once('/') {
        Some((a, l)) => (Some(a), l),
        None => (None, stage),
    };
    let label = if label.contains('#') {
        label.to_string()
    } else {
        format!("{label}#0")
    };
    let apps = live_apps()?;
    let app = apps
        .iter()
        .map(|(_, a)| a)
        .find(|a| app_name.is_none_or(|n| n == a.name) && a.stages.iter().any(|s| s.label == label))
        .ok_or_else(|| {
            anyhow::anyhow!("no running app has a stage '{label}' (see `supervisor status`)")
        })?;
    let path = std::path::Path::new(&app.run_dir)
        .join("logs")
        .join(format!("{label}.log"));
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = std::io::stdout();
    loop {
        std::io::copy(&mut file, &mut out)?;
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        use std::io::Write;
        out.flush()?;
        // Following a file that grows: poll for new bytes.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Start this same command without `--detach` in a new session, output to the run dir.
fn detach_start(
    app: &std::path::Path,
    run_dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log_path = run_dir.join("supervisor.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let err = log.try_clone()?;
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let has_run_dir = args.iter().any(|a| a == "--run-dir");
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(&args);
    if !has_run_dir {
        cmd.arg("--run-dir").arg(run_dir);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe; the child leaves our session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .context("cannot start the background supervisor")?;
    println!(
        "app '{name}' ({}) runs in the background: supervisor pid {}, run dir {}\n\
         see `supervisor status`, `supervisor logs {name}/TASK`, stop it with `supervisor stop {name}`",
        app.display(),
        child.id(),
        run_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
