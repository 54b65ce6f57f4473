//! `supervisor finish-outputs APP.json`: write the outputs a run of the app left
//! unfinished. A Parquet file, a pretty table to a file and an MP4/MOV/MKV/AVI/WebM video
//! are written when their tail ends, from a journal or segments kept beside them; a tail
//! stopped at once (a second Ctrl-C) or failing at its end leaves those and no file, and
//! the run's summary says so (`not written:`). Each is written here by `worker-cpu
//! --finish-output` (the code the tail itself finishes with), its journal then removed.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::{ExitCode, Stdio};

pub fn finish_outputs(app: &Path) -> anyhow::Result<ExitCode> {
    let loaded = crate::plan::app::load(app)?;
    let spec = &loaded.spec;
    let left = crate::run::apprun::outputs::unfinished(&spec.tasks, app);
    if left.is_empty() {
        println!(
            "nothing to finish: no output of app '{}' has a journal or segments left beside it",
            spec.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Claimed as a run claims them: refused while the app (or another app writing them)
    // runs, whose tails are still writing.
    let _claims =
        crate::control::output_claims::claim(&spec.name, &crate::control::outputs_of(spec))
            .context("the outputs cannot be finished now")?;
    let worker = crate::env::launch::find_worker("worker-cpu")?;
    let mut failed = 0;
    for o in &left {
        let Some(task) = spec.tasks.iter().find(|t| t.name == o.task) else {
            continue;
        };
        let tail = serde_json::json!({"function": task.function, "params": task.params});
        match run_worker(&worker, &tail) {
            Ok(done) => println!("{}: {done}", o.output),
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

/// `worker-cpu --finish-output` for one tail: what it did, or why it could not.
fn run_worker(worker: &Path, tail: &serde_json::Value) -> Result<String, String> {
    let mut child = std::process::Command::new(worker)
        .arg("--finish-output")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
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
    let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    if out.status.success() {
        Ok(said(&out.stdout))
    } else {
        Err(match said(&out.stderr) {
            why if why.is_empty() => format!("{} ended with {}", worker.display(), out.status),
            why => why,
        })
    }
}
