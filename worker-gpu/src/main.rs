//! `worker-gpu`: SmartPipe's device processes. Started by the supervisor in one of two
//! modes: `--agent` (one per device: owns the device, hosts the ONNX Runtime sessions
//! of every model on it, runs requests) or `--stage` (one per `model.inference` task
//! replica: batches its input and asks its device's agent to run the model).
//! Without CUDA (or without the `cuda` feature) the device is `cpu:0`, through the same
//! code and ONNX Runtime's CPU provider.

mod agent;
mod apps;
mod executor;
mod pick;
mod regions;
mod residency;
mod sessions;
mod stage;
mod switching;
mod tensors;
#[cfg(test)]
mod test_models;
#[cfg(test)]
mod test_requests;

use ::stage::StageError;
use protocol::functions::{Builtin, AGENT_FUNCTION};
use protocol::node::{Node, NodeError};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "worker-gpu: a SmartPipe GPU agent (--agent) or GPU stage (--stage).\n\n\
             It is started by `supervisor start APP.json`, which passes the bootstrap channel\n\
             in SMARTPIPE_BOOTSTRAP and SMARTPIPE_NONCE. ORT_DYLIB_PATH names the ONNX Runtime library."
        );
        return ExitCode::SUCCESS;
    }
    let label = args.get(2).cloned().unwrap_or_else(|| "worker-gpu".into());
    protocol::logcap::init_stage_logging();
    let mut node = match Node::bootstrap(&label) {
        Ok(node) => node,
        Err(e) => {
            eprintln!("worker-gpu {label}: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(stage = %node.label(), function = %node.task.function, "started");
    // The agent is the supervisor's own task; every other task is a registered built-in.
    let builtin = protocol::functions::builtin(&node.task.function);
    let result = match (node.task.function.as_str(), builtin) {
        (AGENT_FUNCTION, _) => agent::run(&mut node),
        (_, Some(Builtin::ModelInference)) => stage::run(&mut node),
        (other, _) => Err(StageError::from(NodeError::Bootstrap(format!(
            "worker-gpu cannot run '{other}': it runs model.inference and the device agent"
        )))),
    };
    match result {
        Ok(()) => match node.finish() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("cannot report the end of the stream: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) if e.is_stop() => {
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
