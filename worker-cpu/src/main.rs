//! `worker-cpu`: one CPU stage replica of a SmartPipe app (a head, a CPU body or a
//! tail). Started by the supervisor, never by hand: it connects back over the
//! bootstrap channel named in its environment, receives its stage setup, runs the
//! stage's function to the end of its input and reports.

use protocol::node::Node;
use std::process::ExitCode;
use worker_cpu::run_stage;

fn main() -> ExitCode {
    let label = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "worker-cpu".into());
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!(
            "worker-cpu: runs one CPU stage of a SmartPipe app.\n\n\
             It is started by `supervisor start APP.json`, which passes the bootstrap\n\
             channel in SMARTPIPE_BOOTSTRAP and SMARTPIPE_NONCE. Run apps with the supervisor.\n\n\
             worker-cpu --finish-output: writes the output of the tail described on stdin\n\
             ({{\"function\": ..., \"params\": {{...}}}}) from the journal or segments it left\n\
             (run by `supervisor finish-outputs APP.json`)."
        );
        return ExitCode::SUCCESS;
    }
    if std::env::args().nth(1).as_deref() == Some("--finish-output") {
        return finish_output();
    }
    protocol::logcap::init_stage_logging();
    let mut node = match Node::bootstrap(&label) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("worker-cpu {label}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(stage = %node.label(), function = %node.task.function, "started");
    match run_stage(&mut node) {
        Ok(()) => match node.finish() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("cannot report the end of the stream: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) if e.is_stop() => {
            tracing::info!("stopped by the supervisor");
            node.stopped();
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            node.fail(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// `--finish-output`: the tail `{"function", "params"}` on stdin (with `stdout_journal`:
/// the run-folder journal of its pretty table to stdout); its table, if it prints one, on
/// stdout; what was done, or why not, on stderr.
fn finish_output() -> ExitCode {
    #[derive(serde::Deserialize)]
    struct Tail {
        function: String,
        params: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        stdout_journal: Option<std::path::PathBuf>,
    }
    let tail: Tail = match serde_json::from_reader(std::io::stdin().lock()) {
        Ok(tail) => tail,
        Err(e) => {
            eprintln!(
                "worker-cpu --finish-output: stdin is not a tail's {{function, params}}: {e}"
            );
            return ExitCode::from(2);
        }
    };
    let done = match &tail.stdout_journal {
        Some(journal) => worker_cpu::finish_left::finish_stdout_table(journal).map(Some),
        None => worker_cpu::finish_left::finish_left_output(&tail.function, &tail.params)
            .map(|f| f.map(|f| f.done)),
    };
    match done {
        Ok(done) => {
            eprintln!(
                "{}",
                done.unwrap_or_else(|| "nothing was left to finish".into())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
