//! The operating commands of the CLI, as clients of the supervisors' control sockets:
//! `start --detach` (into the daemon, started when none runs), `status`, `stop`,
//! `restart`, `logs` and `shutdown`.

use crate::control::client::{find_supervisors, request};
use crate::control::{self, SupervisorStatus};
use crate::env::runtime;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long a status request may take.
pub const STATUS_WAIT: Duration = Duration::from_secs(5);

/// Supervisors found running (pid alive, socket there) that did not answer the last
/// survey ([`supervisors`]): named in what the commands say instead of "none runs".
static SILENT: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// " (supervisor pid N did not answer …)" when the last survey found silent ones.
fn silent_note() -> String {
    let silent = SILENT.lock().map(|s| s.clone()).unwrap_or_default();
    if silent.is_empty() {
        return String::new();
    }
    let pids: Vec<String> = silent.iter().map(u32::to_string).collect();
    format!(
        " (supervisor pid {} runs but did not answer within {} s: stopped, or overloaded; its apps are not listed)",
        pids.join(", "),
        STATUS_WAIT.as_secs()
    )
}

/// A live supervisor: its socket and what it answered to `GET /status`.
pub struct Found {
    pub sock: PathBuf,
    pub status: SupervisorStatus,
}

/// Every live supervisor of this user that answers.
pub fn supervisors() -> Vec<Found> {
    let mut silent = Vec::new();
    let found = find_supervisors()
        .into_iter()
        .filter_map(|(pid, sock)| {
            let answer = request(&sock, "GET", "/status", None, STATUS_WAIT).ok();
            let status = answer
                .and_then(|(code, body)| serde_json::from_str(&body).ok().filter(|_| code == 200));
            if status.is_none() && runtime::pid_alive(pid as i32) {
                silent.push(pid);
            }
            Some(Found {
                sock,
                status: status?,
            })
        })
        .collect();
    if let Ok(mut s) = SILENT.lock() {
        *s = silent;
    }
    found
}

/// Every app of every supervisor, with the supervisor's socket.
fn live_apps() -> Vec<(PathBuf, control::LiveApp)> {
    supervisors()
        .into_iter()
        .flat_map(|f| {
            let sock = f.sock;
            f.status.apps.into_iter().map(move |a| (sock.clone(), a))
        })
        .collect()
}

pub fn status(json: bool) -> anyhow::Result<ExitCode> {
    let found = supervisors();
    let reservations = crate::plan::ledger::Ledger::snapshot();
    if json {
        // Each app with its reservation in the node's ledger (null: none).
        let mut list = Vec::new();
        for app in found.iter().flat_map(|f| &f.status.apps) {
            let mut value = serde_json::to_value(app)?;
            let reservation = reservations
                .iter()
                .find(|r| r.app == app.name && r.supervisor_pid == app.supervisor_pid);
            value["reservation"] = serde_json::to_value(reservation)?;
            list.push(value);
        }
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let silent = silent_note();
    if !silent.is_empty() {
        eprintln!("warning:{silent}");
    }
    if found.is_empty() {
        println!("no SmartPipe supervisor is running (start one with `supervisor start APP.json`)");
        return Ok(ExitCode::SUCCESS);
    }
    for f in &found {
        let s = &f.status;
        let n = s.apps.len();
        if s.daemon {
            println!(
                "daemon pid {}: {n} app{}{}",
                s.pid,
                if n == 1 { "" } else { "s" },
                if s.closing { " (shutting down)" } else { "" }
            );
        }
        for app in &s.apps {
            print_app(app);
        }
    }
    print!(
        "{}",
        crate::plan::ledger::render(&reservations, crate::plan::ledger::Node::this_machine())
    );
    Ok(ExitCode::SUCCESS)
}

fn print_app(app: &control::LiveApp) {
    println!(
        "app {} ({}, {:.0} s, supervisor pid {}, run dir {})",
        app.name, app.state, app.uptime_s, app.supervisor_pid, app.run_dir
    );
    if !app.constraints.is_empty() {
        println!("  {}", app.constraints);
    }
    match app.request_rate {
        Some(r) if r > 0.0 => println!("  request rate: {r} items/s per source (set by `rate`)"),
        Some(_) => println!("  request rate: unpaced (set by `rate`)"),
        None => {}
    }
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
    // Why a stage dropped input, while the app runs (the summary says it at the end).
    let stages = app.stages.iter().map(|s| (&s.label, &s.metrics));
    for line in crate::observe::summary::bad_input_by_stage(stages) {
        println!("  bad input: {line}");
    }
}

pub fn stop(name: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(name) = name {
        name_arg("an app", name)?;
    }
    let mut stopped = 0;
    match name {
        Some(name) => {
            for (sock, app) in live_apps().iter().filter(|(_, a)| a.name == name) {
                let target = format!("/apps/{name}/stop");
                let (code, said) = request(sock, "POST", &target, None, STATUS_WAIT)?;
                if code == 202 {
                    println!(
                        "{} (supervisor pid {})",
                        said.trim_end(),
                        app.supervisor_pid
                    );
                    stopped += 1;
                }
            }
        }
        None => {
            for f in supervisors() {
                let (code, body) = request(&f.sock, "POST", "/stop", None, STATUS_WAIT)?;
                let (drained, at_once) = stopped_apps(&body);
                if code == 202 {
                    for app in &drained {
                        println!(
                            "{} (supervisor pid {})",
                            stop_line(app, &at_once),
                            f.status.pid
                        );
                    }
                    stopped += drained.len();
                }
            }
        }
    }
    if stopped == 0 {
        anyhow::bail!(
            "no running app{} to stop{}",
            name.map(|n| format!(" named '{n}'")).unwrap_or_default(),
            silent_note()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The apps a stop or shutdown drains, and those of them it stops at once (they were
/// draining already), from the answer's `draining` and `at_once`.
fn stopped_apps(body: &str) -> (Vec<String>, Vec<String>) {
    let answer = serde_json::from_str::<serde_json::Value>(body).unwrap_or_default();
    let names = |key: &str| -> Vec<String> {
        serde_json::from_value(answer[key].clone()).unwrap_or_default()
    };
    (names("draining"), names("at_once"))
}

/// What a stop does to `app`, for people.
fn stop_line(app: &str, at_once: &[String]) -> String {
    if at_once.iter().any(|a| a == app) {
        format!("app '{app}' was draining already: stopping it at once (SIGTERM, then SIGKILL)")
    } else {
        format!("draining app '{app}'")
    }
}

/// An app's or task's name given on the command line, refused (shown escaped and cut)
/// when no app file could have it.
fn name_arg(what: &str, name: &str) -> anyhow::Result<()> {
    if !protocol::validate::is_name(name) {
        anyhow::bail!(
            "'{}' is not {what} name (letters, digits, '-', '_' and '.', at most {} bytes): see `supervisor status` for the running ones",
            protocol::text::shown(name),
            protocol::limits::MAX_NAME_LEN
        );
    }
    Ok(())
}

/// `APP/TASK#N`, `APP/TASK`, `TASK#N` or `TASK` → (app, task, replica).
pub fn parse_stage(stage: &str) -> anyhow::Result<(Option<&str>, &str, Option<u32>)> {
    let (app, rest) = match stage.split_once('/') {
        Some((a, r)) => (Some(a), r),
        None => (None, stage),
    };
    let (task, replica) = match rest.split_once('#') {
        Some((t, n)) => {
            let n = n.parse::<u32>().with_context(|| {
                format!(
                    "'{}': the replica after '#' must be a number",
                    protocol::text::shown(stage)
                )
            })?;
            (t, Some(n))
        }
        None => (rest, None),
    };
    if task.is_empty() || app.is_some_and(str::is_empty) {
        anyhow::bail!(
            "'{}': expected APP/TASK, APP/TASK#N, TASK or TASK#N",
            protocol::text::shown(stage)
        );
    }
    if let Some(app) = app {
        name_arg("an app", app)?;
    }
    name_arg("a task", task)?;
    Ok((app, task, replica))
}

/// `supervisor restart APP/TASK[#N]`: ask the app's supervisor to restart the task's
/// replica (every replica without #N).
pub fn restart(stage: &str) -> anyhow::Result<ExitCode> {
    let (app, task, replica) = parse_stage(stage)?;
    let apps = live_apps();
    if apps.is_empty() {
        anyhow::bail!(
            "no SmartPipe supervisor is running: nothing to restart (start an app with `supervisor start APP.json`){}",
            silent_note()
        );
    }
    let (sock, name) = match app {
        Some(app) => apps
            .iter()
            .find(|(_, a)| a.name == app)
            .map(|(s, a)| (s.clone(), a.name.clone()))
            .ok_or_else(|| {
                let names: Vec<&str> = apps.iter().map(|(_, a)| a.name.as_str()).collect();
                anyhow::anyhow!(
                    "no running app named '{app}' (running: {}){}",
                    names.join(", "),
                    silent_note()
                )
            })?,
        None => {
            let with: Vec<&(PathBuf, control::LiveApp)> = apps
                .iter()
                .filter(|(_, a)| a.stages.iter().any(|s| s.task == task))
                .collect();
            match with.as_slice() {
                [(s, a)] => (s.clone(), a.name.clone()),
                [] => anyhow::bail!(
                    "no running app has a task '{task}' (see `supervisor status`){}",
                    silent_note()
                ),
                many => anyhow::bail!(
                    "several apps have a task '{task}' ({}): name one, APP/{task}",
                    many.iter()
                        .map(|(_, a)| a.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let body = serde_json::json!({ "task": task, "replica": replica });
    post_to_app(&sock, &name, "restart", &body)
}

/// `POST /apps/APP/ACTION` with a JSON body to an app's supervisor, which answers once
/// the app's run loop did it: print its answer, or fail with it.
fn post_to_app(
    sock: &Path,
    app: &str,
    action: &str,
    body: &serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let (code, message) = request(
        sock,
        "POST",
        &format!("/apps/{app}/{action}"),
        Some(&body.to_string()),
        control::RESTART_WAIT + Duration::from_secs(5),
    )
    .context("the supervisor did not answer")?;
    if code != 200 {
        anyhow::bail!("{}", message.trim_end());
    }
    println!("{}", message.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `supervisor rate APP ITEMS_PER_S`: set the request frequency of a running app.
pub fn set_rate(app: &str, items_per_s: f64, unpromised: bool) -> anyhow::Result<ExitCode> {
    // Checked here too: JSON has no NaN or infinity to send.
    if let Some(problem) = protocol::limits::rate_problem(items_per_s) {
        anyhow::bail!("ITEMS_PER_S {problem}");
    }
    post_to_app(
        &socket_of(app)?,
        app,
        "rate",
        &serde_json::json!({ "items_per_s": items_per_s, "unpromised": unpromised }),
    )
}

/// `supervisor threads APP N`: set the intra-op threads of a running app's GPU agent.
pub fn set_threads(app: &str, threads: u32) -> anyhow::Result<ExitCode> {
    post_to_app(
        &socket_of(app)?,
        app,
        "threads",
        &serde_json::json!({ "threads": threads }),
    )
}

/// The control socket of the supervisor running `app`, or which apps run.
fn socket_of(app: &str) -> anyhow::Result<PathBuf> {
    name_arg("an app", app)?;
    let apps = live_apps();
    let hosts: Vec<&(PathBuf, control::LiveApp)> =
        apps.iter().filter(|(_, a)| a.name == app).collect();
    if hosts.len() > 1 {
        let pids: Vec<String> = hosts
            .iter()
            .map(|(_, a)| a.supervisor_pid.to_string())
            .collect();
        anyhow::bail!(
            "{} foreground supervisors run an app named '{app}' (supervisor pids {}), so which one to change is ambiguous: stop all but one, or start them under different names (the daemon refuses a second app of one name)",
            hosts.len(),
            pids.join(", ")
        );
    }
    hosts.first().map(|(s, _)| s.clone()).ok_or_else(|| {
        let names: Vec<&str> = apps.iter().map(|(_, a)| a.name.as_str()).collect();
        if names.is_empty() {
            anyhow::anyhow!(
                "no SmartPipe supervisor is running an app named '{app}'{}",
                silent_note()
            )
        } else {
            anyhow::anyhow!(
                "no running app named '{app}' (running: {}){}",
                names.join(", "),
                silent_note()
            )
        }
    })
}

/// `supervisor shutdown`: drain every app of every daemon of this user, then wait
/// (at most `wait`) until the daemons have exited.
pub fn shutdown(wait: Duration) -> anyhow::Result<ExitCode> {
    let daemons: Vec<Found> = supervisors()
        .into_iter()
        .filter(|f| f.status.daemon)
        .collect();
    if daemons.is_empty() {
        println!("no SmartPipe daemon is running");
        return Ok(ExitCode::SUCCESS);
    }
    for d in &daemons {
        let (code, body) = request(&d.sock, "POST", "/shutdown", None, STATUS_WAIT)?;
        if code != 202 {
            anyhow::bail!(
                "the daemon (pid {}) refused to shut down: {}",
                d.status.pid,
                body.trim_end()
            );
        }
        let (drained, at_once) = stopped_apps(&body);
        let lines: Vec<String> = drained.iter().map(|a| stop_line(a, &at_once)).collect();
        println!(
            "shutting down the daemon (pid {}){}",
            d.status.pid,
            if lines.is_empty() {
                String::new()
            } else {
                format!(": {}", lines.join("; "))
            }
        );
    }
    let start = Instant::now();
    for d in &daemons {
        // The daemon is not our child: watch for its pid to go.
        while running(d.status.pid) {
            if start.elapsed() > wait {
                anyhow::bail!(
                    "the daemon (pid {}) still runs after {} s (see `supervisor status`)",
                    d.status.pid,
                    wait.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("the daemon (pid {}) has exited", d.status.pid);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a process runs (exists and is not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'));
    runtime::pid_alive(pid as i32) && !zombie
}

pub fn logs(stage: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let (app_name, task, replica) = parse_stage(stage)?;
    let label = format!("{task}#{}", replica.unwrap_or(0));
    let apps = live_apps();
    if let Some(name) = app_name {
        if !apps.iter().any(|(_, a)| a.name == name) {
            let running: Vec<&str> = apps.iter().map(|(_, a)| a.name.as_str()).collect();
            anyhow::bail!(
                "no running app named '{name}' (running: {}){}",
                if running.is_empty() {
                    "none".to_string()
                } else {
                    running.join(", ")
                },
                silent_note()
            );
        }
    }
    let matching: Vec<&control::LiveApp> = apps
        .iter()
        .map(|(_, a)| a)
        .filter(|a| {
            app_name.is_none_or(|n| n == a.name) && a.stages.iter().any(|s| s.label == label)
        })
        .collect();
    let app = match matching.as_slice() {
        [] => match apps.iter().find(|(_, a)| app_name == Some(a.name.as_str())) {
            Some((_, named)) => anyhow::bail!(
                "app '{}' has no stage '{label}' (its stages: {})",
                named.name,
                named
                    .stages
                    .iter()
                    .map(|s| s.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => anyhow::bail!(
                "no running app has a stage '{label}' (see `supervisor status`){}",
                silent_note()
            ),
        },
        [one] => *one,
        several => {
            let names: Vec<&str> = several.iter().map(|a| a.name.as_str()).collect();
            anyhow::bail!(
                "several running apps have a stage '{label}' ({}): name one, e.g. `supervisor logs {}/{label}`",
                names.join(", "),
                names[0]
            )
        }
    };
    let path = Path::new(&app.run_dir)
        .join("logs")
        .join(format!("{label}.log"));
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = std::io::stdout();
    let (name, pid) = (app.name.clone(), app.supervisor_pid);
    for poll in 0u64.. {
        std::io::copy(&mut file, &mut out)?;
        if !follow {
            break;
        }
        use std::io::Write;
        out.flush()?;
        // Following a file that grows: poll for new bytes; every 2 s, whether the app still
        // runs (once it has ended, what its log holds is printed and following stops).
        if poll % 10 == 9
            && !live_apps()
                .iter()
                .any(|(_, a)| a.name == name && a.supervisor_pid == pid)
        {
            std::io::copy(&mut file, &mut out)?;
            eprintln!("(app '{name}' has ended)");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_stage;

    #[test]
    fn stage_names_parse_with_or_without_app_and_replica() {
        assert_eq!(
            parse_stage("cam/det#2").ok(),
            Some((Some("cam"), "det", Some(2)))
        );
        assert_eq!(
            parse_stage("cam/det").ok(),
            Some((Some("cam"), "det", None))
        );
        assert_eq!(parse_stage("det#0").ok(), Some((None, "det", Some(0))));
        assert_eq!(parse_stage("det").ok(), Some((None, "det", None)));
        assert!(parse_stage("cam/det#x").is_err());
        assert!(parse_stage("cam/").is_err());
        assert!(parse_stage("/det").is_err());
        assert_eq!(
            parse_stage("demo/gpu-agent-cpu0").ok(),
            Some((Some("demo"), "gpu-agent-cpu0", None))
        );
        // What no app file can name is refused, shown escaped and cut.
        let refused = |stage: &str| format!("{:#}", parse_stage(stage).expect_err(stage));
        let newline = refused("a\nb/det");
        assert!(
            newline.contains("a\\nb") && !newline.contains('\n'),
            "{newline}"
        );
        let long = refused(&format!("{}/det", "a".repeat(5000)));
        assert!(
            long.len() < 400 && long.contains("5000 bytes in all"),
            "{long}"
        );
        assert!(refused("cam/d t").contains("is not a task name"));
    }
}
