//! `supervisor`: the SmartPipe command line. It validates app files, plans them, and
//! runs them as one OS process per stage replica (plus one GPU agent per device),
//! wired with ipc-channel and shared memory, supervised until they finish.

mod cli;
mod control;
mod env;
mod observe;
mod plan;
mod run;

#[cfg(test)]
mod rooms_tests;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
`supervisor schema` prints the JSON Schema of the app format for editors.\n\n\
Environment: ORT_DYLIB_PATH (ONNX Runtime's shared library; `source .smartpipe/env`), \
SMARTPIPE_DEVICE (cpu:0 or cuda:N; default: the first CUDA device in a `--features cuda` \
build, else cpu:0), SMARTPIPE_MANIFEST and SMARTPIPE_MODELS_DIR (models), \
SMARTPIPE_CUDNN_CONV_SEARCH, SMARTPIPE_CUDA_OPTIONS, SMARTPIPE_ORT_PROFILE (GPU agent settings: \
README, \"On a GPU\")."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an app in the node's daemon (started when none runs), beside the node's other
    /// apps: followed in the foreground until its sources end (its rows on this command's
    /// stdout, progress and summary on stderr; Ctrl-C drains it), or in the background
    /// with --detach.
    Start {
        /// The app file.
        app: PathBuf,
        /// Where logs, outputs, plan.json and summary.json go [default: runs/<app>-<time>/].
        #[arg(long)]
        run_dir: Option<PathBuf>,
        /// Seconds a stage may take to start and connect back (1 to 86400).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=control::MAX_STARTUP_TIMEOUT_S))]
        startup_timeout: u64,
        /// A stage silent this long (3 missed heartbeats of 100 ms by default) is taken
        /// for hung and killed; raise it on an overloaded machine. Less than three
        /// heartbeats is raised to three (with a warning).
        #[arg(long, env = "SMARTPIPE_HANG_AFTER_MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=control::MAX_HANG_AFTER_MS))]
        hang_after_ms: u64,
        /// Also serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Run the app in the background daemon and return once it runs. The first
        /// `--detach` starts the daemon (its own session; log in the runtime folder's
        /// daemon.log); later ones start their apps into it. Each app keeps its own run
        /// dir (summary in RUN_DIR/supervisor.log). The daemon exits when its last app
        /// has ended; `status`, `logs`, `restart`, `stop` and `shutdown` reach it.
        #[arg(long)]
        detach: bool,
        /// Refuse a request-guarantee app with a quota that has no profile of its tasks on
        /// this machine, instead of profiling it first.
        #[arg(long)]
        no_profile: bool,
        /// Run the app in a supervisor of this command's own instead of the node's
        /// daemon: it is still admitted against the node's ledger, but gets a GPU agent
        /// of its own and is not seen by other supervisors' `status`. For debugging the
        /// supervisor itself (signals to this process reach the app's supervisor
        /// directly). Ignored with --detach.
        #[arg(long, env = "SMARTPIPE_NO_DAEMON", value_parser = clap::builder::BoolishValueParser::new())]
        no_daemon: bool,
    },
    /// The daemon that `start --detach` starts (not for direct use).
    #[command(hide = true)]
    Daemon {
        /// Also serve the Prometheus metrics of every app on this loopback address.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Show the running apps: a table per app and stage (pid, state, items, rates).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Drain and stop running apps (all, or the one named); the others run on. A daemon
    /// left without apps exits.
    Stop {
        /// Only the app with this name.
        app: Option<String>,
    },
    /// Restart a stage (`APP/TASK#N`; every replica of the task without `#N`): the
    /// replacement starts and is rewired, then the old one is drained.
    Restart {
        /// `APP/TASK#N`, `APP/TASK` (every replica) or `TASK#N` when one app runs.
        stage: String,
    },
    /// Change the request frequency of a running app: its sources offer ITEMS_PER_S
    /// items per second each from their next item on (0 = as fast as the pipeline takes
    /// them). A `balance` app then retunes itself to the new load. A request-guarantee
    /// app admitted on a profile is admitted again at the new rate: planned anew within
    /// what the node's other guaranteed apps leave, its reservation raised or lowered to
    /// the new plan; a rate the node cannot promise is refused and the old rate stays.
    Rate {
        /// The running app's name (see `supervisor status`).
        app: String,
        /// Items per second each source offers from now on; 0 = unpaced.
        #[arg(value_name = "ITEMS_PER_S", allow_negative_numbers = true)]
        items_per_s: f64,
        /// A request-guarantee app: take a rate the node cannot promise (or unpaced)
        /// anyway; its quota is then not promised and its reservation stays as it was.
        #[arg(long)]
        unpromised: bool,
    },
    /// Change the intra-op threads of a running app's GPU agent: every model's session
    /// is created again with N threads, one at a time, while requests keep being served
    /// (no restart, nothing lost). On `cpu:0` the agent shares the cores with the CPU
    /// stages: fewer threads leave them more. Only an app's own agent (`start
    /// --no-daemon`): apps in the daemon share the node's agent, whose threads come from
    /// SMARTPIPE_AGENT_THREADS when the daemon starts it.
    Threads {
        /// The running app's name (see `supervisor status`).
        app: String,
        /// Intra-op threads per session from now on (1 to 256).
        #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(control::MAX_THREADS)))]
        threads: u32,
    },
    /// Stop the daemon: drain every app it runs, take no new one, and wait until it
    /// has exited (a second shutdown stops the apps at once).
    Shutdown {
        /// Seconds to wait for the daemon to exit.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print a stage's log (`APP/TASK#N` or `TASK#N`; `#0` when omitted).
    Logs {
        /// `APP/TASK#N`, or `TASK#N` when one app runs (`#0` when omitted).
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
    /// Write the outputs a run of the app left unfinished: a Parquet file, a pretty table
    /// or an MP4/MOV/MKV/AVI/WebM video whose tail was stopped at once (a second Ctrl-C) or
    /// failed at its end, from the journal or segments kept beside it (the run's summary
    /// names them: `not written:`); with --run-dir, the pretty tables to stdout of that run
    /// are printed. Refused while the app runs.
    FinishOutputs {
        /// The app file.
        app: PathBuf,
        /// The run folder of the stopped run: its stdout tables are printed too.
        #[arg(long)]
        run_dir: Option<PathBuf>,
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
        /// Batch sizes to measure the GPU tasks at, comma-separated (e.g. `--batches 1,2,4`).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8", value_parser = clap::value_parser!(u32).range(1..))]
        batches: Vec<u32>,
        /// Items per measuring run (sources are capped to it; at least 1).
        #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
        items: u64,
    },
    /// Benchmarks of SmartPipe itself.
    Bench {
        #[command(subcommand)]
        which: cli::bench::BenchCmd,
    },
}

fn main() -> ExitCode {
    // Nothing this process creates is for other users.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(|| env::appenv::Stderr)
        .init();
    let cli = Cli::parse();
    if prints_only(&cli.command) {
        default_sigpipe();
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote names, paths and answers from outside: no raw control characters.
            eprintln!(
                "error: {}",
                protocol::text::escape_controls(&format!("{e:#}"))
            );
            ExitCode::from(1)
        }
    }
}

/// Commands that only print what they find (no server, no children): a reader that
/// goes away (`| head -1`) ends them quietly, as it does `cat`.
fn prints_only(cmd: &Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Validate { .. }
            | Cmd::Schema
            | Cmd::Plan { .. }
            | Cmd::Status { .. }
            | Cmd::Logs { .. }
            // Its children (one per output) finish theirs whatever happens to it.
            | Cmd::FinishOutputs { .. }
    )
}

/// Let SIGPIPE end the process (Rust ignores it, so a closed stdout made `println!`
/// panic with exit status 101).
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to its default installs no handler of ours,
    // so nothing can run in a signal context.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
}

/// Refused before anything starts: outputs an earlier run left unfinished (the run's own
/// check, with its outputs claimed, is the one that counts: `refuse_unfinished`). Outputs
/// an app writes now are not looked at here: their journals are that app's, and the start
/// is refused later for what it is (the app runs, or shares an output, or does not fit).
fn refuse_unfinished_outputs(loaded: &plan::app::LoadedApp) -> anyhow::Result<()> {
    let spec = &loaded.spec;
    let Ok(free) = control::output_claims::claim(&spec.name, &control::outputs_of(spec)) else {
        return Ok(());
    };
    let refused = run::apprun::outputs::refuse_unfinished(&spec.tasks, &spec.name, &loaded.file);
    drop(free);
    refused.map_err(anyhow::Error::msg)
}

/// `runs/APP-STAMP` under the current folder ([`claim_run_dir`]).
fn default_run_dir(app: &str) -> PathBuf {
    claim_run_dir(Path::new("runs"), &format!("{app}-{}", utc_stamp()))
}

/// `RUNS/NAME`, claimed by creating it, so that two starts of one app in the same second get
/// a folder each (`NAME-2`, `NAME-3`, … after the first) instead of sharing logs and summary.
/// A folder that cannot be made is left to the run's own creation to report.
fn claim_run_dir(runs: &Path, name: &str) -> PathBuf {
    let _ = std::fs::create_dir_all(runs);
    for k in 1..1000 {
        let dir = match k {
            1 => runs.join(name),
            _ => runs.join(format!("{name}-{k}")),
        };
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            _ => return dir,
        }
    }
    runs.join(name)
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
            let loaded = plan::app::load(&app)?;
            plan::preflight::check(&loaded)?;
            println!(
                "{}: app '{}' is valid ({} tasks)",
                protocol::text::shown_up_to(&app.display().to_string(), 4096),
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
        } => cli::show_plan::plan(&app, json, brute_force),
        Cmd::Start {
            app,
            run_dir,
            startup_timeout,
            hang_after_ms,
            metrics_addr,
            detach,
            no_profile,
            no_daemon,
        } => {
            // Checked here first, so that problems are listed before any daemon starts.
            let loaded = plan::app::load(&app)?;
            plan::preflight::check(&loaded)?;
            refuse_unfinished_outputs(&loaded)?;
            control::autoprofile::before_start(&loaded, no_profile)?;
            let run_dir = run_dir.unwrap_or_else(|| default_run_dir(&loaded.spec.name));
            if run_dir.exists() && !run_dir.is_dir() {
                anyhow::bail!(
                    "--run-dir {} is a file, not a folder: give a folder (it is made when missing)",
                    run_dir.display()
                );
            }
            if detach {
                return cli::start::start_detached(
                    &loaded,
                    &run_dir,
                    startup_timeout,
                    hang_after_ms,
                    metrics_addr,
                );
            }
            if !no_daemon {
                return cli::start::start_followed(
                    &loaded,
                    &run_dir,
                    startup_timeout,
                    hang_after_ms,
                    metrics_addr,
                );
            }
            cli::start::run_here(
                loaded,
                run_dir,
                startup_timeout,
                hang_after_ms,
                metrics_addr,
            )
        }
        Cmd::Bench { which } => cli::bench::run(which),
        Cmd::FinishOutputs { app, run_dir } => {
            cli::finish_outputs::finish_outputs(&app, run_dir.as_deref())
        }
        Cmd::Profile {
            app,
            batches,
            items,
        } => {
            let loaded = plan::app::load(&app)?;
            let runtime_dir = env::runtime::prepare()?;
            let result = control::profiling::profile(&loaded, &batches, items);
            env::runtime::cleanup(&runtime_dir);
            // Its stages are gone: from here on it only prints.
            default_sigpipe();
            control::profiling::print_fits(&loaded.spec, &result?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => cli::ops::status(json),
        Cmd::Stop { app } => cli::ops::stop(app.as_deref()),
        Cmd::Logs { stage, follow } => cli::ops::logs(&stage, follow),
        Cmd::Restart { stage } => cli::ops::restart(&stage),
        Cmd::Rate {
            app,
            items_per_s,
            unpromised,
        } => cli::ops::set_rate(&app, items_per_s, unpromised),
        Cmd::Threads { app, threads } => cli::ops::set_threads(&app, threads),
        Cmd::Shutdown { timeout } => cli::ops::shutdown(Duration::from_secs(timeout)),
        Cmd::Daemon { metrics_addr } => control::daemon::run_daemon(metrics_addr),
    }
}

#[cfg(test)]
mod run_dir_tests {
    #[test]
    fn two_starts_in_one_second_get_a_run_folder_each() {
        let runs = std::env::temp_dir().join(format!("smartpipe-runs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&runs);
        let first = super::claim_run_dir(&runs, "app-20261203-120000");
        let second = super::claim_run_dir(&runs, "app-20261203-120000");
        let third = super::claim_run_dir(&runs, "app-20261203-120000");
        assert_eq!(first, runs.join("app-20261203-120000"));
        assert_eq!(second, runs.join("app-20261203-120000-2"));
        assert_eq!(third, runs.join("app-20261203-120000-3"));
        assert!(first.is_dir() && second.is_dir() && third.is_dir());
        std::fs::remove_dir_all(&runs).expect("clean up");
    }
}
