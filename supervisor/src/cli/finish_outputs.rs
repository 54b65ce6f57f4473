//! `supervisor finish-outputs APP.json [--run-dir RUN]`: write the outputs a run of the
//! app left unfinished. A Parquet file, a pretty table and an MP4/MOV/MKV/AVI/WebM video
//! are written when their tail ends, from a journal or segments kept beside them (a
//! stdout table's journal in the run folder); a tail stopped at once (a second Ctrl-C) or
//! failing at its end leaves those and no file, and the run's summary says so (`not
//! written:`). Each is written here by `worker-cpu --finish-output` (the code the tail
//! itself finishes with), its journal then removed; a stdout table is printed.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::{ExitCode, Stdio};

pub fn finish_outputs(app: &Path, run_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Only the tasks and their outputs are needed: a source or user stage gone since the
    // run must not keep what the run received from being written.
    let loaded = crate::plan::app::load_outputs_only(app)?;
    let spec = &loaded.spec;
    let left = crate::run::apprun::outputs::unfinished(&spec.tasks, app, run_dir);
    if left.is_empty() {
        println!(
            "nothing to finish: no output of app '{}' has a journal or segments holding items beside it{}",
            spec.name,
            match run_dir {
                Some(dir) => format!(", nor a stdout table in {}", dir.display()),
                None => String::new(),
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Claimed as a run claims them: refused while the app (or another app writing them,
    // or another finish-outputs) runs.
    let mut claimed = crate::control::outputs_of(spec);
    for o in &left {
        let kept = crate::control::resolved_output(&o.kept_in);
        if !claimed.contains(&kept) {
            claimed.push(kept);
        }
    }
    let _claims =
        crate::control::output_claims::claim(&format!("finish-outputs of {}", spec.name), &claimed)
            .context("the outputs cannot be finished now")?;
    let worker = crate::env::launch::find_worker("worker-cpu")?;
    let mut failed = 0;
    for o in &left {
        let Some(task) = spec.tasks.iter().find(|t| t.name == o.task) else {
            continue;
        };
        let mut tail = serde_json::json!({"function": task.function, "params": task.params});
        if o.output == "stdout" {
            tail["stdout_journal"] = serde_json::json!(o.kept_in);
        }
        match run_worker(&worker, &tail) {
            Ok(done) => eprintln!("{}: {done}", o.output),
            Err(why) => {
                eprintln!("{}: not written: {why}", o.output);
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} output(s) could not be written; what their tails received is kept beside them",
            left.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `worker-cpu --finish-output` for one tail (a stdout table printed on this command's
/// stdout): what it did, or why it could not.
fn run_worker(worker: &Path, tail: &serde_json::Value) -> Result<String, String> {
    let mut child = std::process::Command::new(worker)
        .arg("--finish-output")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", worker.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(tail.to_string().as_bytes())
            .map_err(|e| format!("cannot hand the tail to {}: {e}", worker.display()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", worker.display()))?;
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match (out.status.success(), said.is_empty()) {
        (true, _) => Ok(said),
        (false, true) => Err(format!("{} ended with {}", worker.display(), out.status)),
        (false, false) => Err(said),
    }
}
