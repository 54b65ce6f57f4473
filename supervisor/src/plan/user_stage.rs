//! User stages (tasks naming a `program`), supervisor side: resolve the program's path,
//! check it exists and is executable, ask it for its declaration
//! (`PROGRAM --smartpipe-describe`, with a timeout), check its protocol version and
//! type-check its edges — all before anything runs (`validate` and `start`). Also the
//! command line that starts it as a stage process.

use anyhow::anyhow;
use protocol::spec::AppSpec;
use protocol::user_stage::{check_edges, Declaration, ProgramSpec, DESCRIBE_FLAG};
use protocol::PROTOCOL_VERSION;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a program may take to print its declaration.
pub fn describe_timeout() -> Duration {
    let ms = crate::env::appenv::var("SMARTPIPE_DESCRIBE_TIMEOUT_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    Duration::from_millis(ms)
}

/// Where a program is: a path with a `/` resolves against the app file's folder; a bare
/// name is looked up like the workers (`$SMARTPIPE_WORKER_DIR`, beside the supervisor,
/// then `PATH`), and kept as written when found nowhere (the check then says so).
pub fn resolve(program: &str, dir: &Path) -> PathBuf {
    if program.contains('/') {
        return dir.join(program);
    }
    crate::env::launch::find_worker(program).unwrap_or_else(|_| PathBuf::from(program))
}

/// The command that runs a program: scripts ending in `.py` run under the project's
/// Python (`$SMARTPIPE_PYTHON`, else `python3`), everything else is executed itself.
pub fn command(path: &Path) -> Command {
    let mut cmd = if path.extension().is_some_and(|e| e == "py") {
        let python =
            crate::env::appenv::var("SMARTPIPE_PYTHON").unwrap_or_else(|| "python3".into());
        let mut cmd = Command::new(python);
        cmd.arg(path);
        cmd
    } else {
        Command::new(path)
    };
    crate::env::appenv::apply(&mut cmd);
    cmd
}

/// Whether `path` can be started: a regular file, executable (scripts run by Python
/// need only be readable).
fn check_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("'{}' does not exist", path.display()),
        _ => format!("cannot read '{}': {e}", path.display()),
    })?;
    if !meta.is_file() {
        return Err(format!("'{}' is not a regular file", path.display()));
    }
    let is_script = path.extension().is_some_and(|e| e == "py");
    if !is_script && meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "'{}' is not executable (mode {:o}); chmod +x it",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    Ok(())
}

/// Read a child's pipe to its end (at most 1 MiB) on a thread of its own.
fn read_all<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(p) = pipe {
            let _ = p.take(1 << 20).read_to_string(&mut text);
        }
        text
    })
}

/// Run `PROGRAM ARGS --smartpipe-describe` and read its declaration.
pub fn describe(path: &Path, args: &[String], timeout: Duration) -> Result<Declaration, String> {
    check_file(path)?;
    // Its own process group, so that a program that does not answer is stopped with
    // whatever it started (a shell script's children).
    let mut child = command(path)
        .process_group(0)
        .args(args)
        .arg(DESCRIBE_FLAG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run '{}': {e}", path.display()))?;
    let mut pipes = (child.stdout.take(), child.stderr.take());
    let (out, err) = (read_all(pipes.0.take()), read_all(pipes.1.take()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "'{}' did not answer {DESCRIBE_FLAG} within {} ms (is it a SmartPipe stage?)",
                    path.display(),
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("cannot wait for '{}': {e}", path.display())),
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        let last = err.lines().rev().take(3).collect::<Vec<_>>();
        return Err(format!(
            "'{}' {DESCRIBE_FLAG} failed ({status}){}",
            path.display(),
            if last.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    last.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )
            }
        ));
    }
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let decl: Declaration = serde_json::from_str(line).map_err(|e| {
        format!(
            "'{}' printed no stage declaration for {DESCRIBE_FLAG} ({e}); is it built on SmartPipe's `stage` SDK?",
            path.display()
        )
    })?;
    if decl.protocol != PROTOCOL_VERSION {
        return Err(format!(
            "'{}' speaks protocol version {} but this supervisor speaks {PROTOCOL_VERSION}; rebuild it against this SmartPipe's `stage` SDK",
            path.display(),
            decl.protocol
        ));
    }
    Ok(decl)
}

/// Resolve every program of the app against `dir`, ask each for its declaration and
/// type-check the edges that touch them. Every problem is listed, located.
pub fn prepare(spec: &mut AppSpec, dir: &Path, file: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let mut declared: BTreeMap<usize, Declaration> = BTreeMap::new();
    let timeout = describe_timeout();
    for (i, task) in spec.tasks.iter_mut().enumerate() {
        let Some(program) = task.program.as_mut() else {
            continue;
        };
        let path = resolve(program.path(), dir);
        program.set_path(path.display().to_string());
        match describe(&path, program.args(), timeout) {
            Ok(d) => {
                declared.insert(i, d);
            }
            Err(why) => problems.push(format!("tasks[{i}] ({}).program: {why}", task.name)),
        }
    }
    if problems.is_empty() {
        problems = check_edges(spec, &|i| declared.get(&i).cloned());
    }
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("  {}: {p}", file.display()))
        .collect();
    Err(anyhow!(
        "{} problem{} with the user stages of {}:\n{}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        file.display(),
        lines.join("\n")
    ))
}

/// The program and its arguments, when task `t` is a user stage.
pub fn program_of(spec: &AppSpec, t: usize) -> Option<&ProgramSpec> {
    spec.tasks.get(t).and_then(|task| task.program.as_ref())
}
