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
             channel in SMARTPIPE_BOOTSTRAP and SMARTPIPE_NONCE. Run apps with the supervisor."
        );
        return ExitCode::SUCCESS;
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
