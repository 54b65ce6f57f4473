//! The GPU agent: one process per device that owns the device and runs every model of
//! every GPU stage on it. One ONNX Runtime environment; sessions kept resident under
//! the device's memory budget ([`crate::residency`]); the model the queue needs next is
//! loaded on a loader thread while the executor runs, so weight upload overlaps
//! execution.
//!
//! Runs happen on the executor thread ([`crate::executor`]); this thread reads requests,
//! copies the next request's inputs out of shared memory while a run is on, starts the
//! next run as soon as one finishes and only then writes the finished run's outputs
//! back and replies. Sessions use `threads` intra-op threads (the cores granted;
//! `SetThreads` changes them live: every session is created again). On
//! `cpu:0` the agent shares those cores with the pipeline's CPU stages, so its idle ORT
//! threads sleep instead of spinning.

use crate::apps::{enqueue, Apps};
use crate::executor::{Done, Executor, Job};
use crate::residency::{start_loader, AgentModel, Loaded, Residency};
use crate::tensors::{read_batch, write_f32};
use protocol::messages::{AgentReply, AgentRequest, Command, Inbox, TensorRef};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::ShmRef;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use vision::{Provider, Runtime, SessionOptions, TensorF32};

#[derive(Debug, Deserialize)]
struct AgentParams {
    device: String,
    models: Vec<AgentModel>,
    /// Device memory budget for resident models; none = unlimited.
    budget_mb: Option<u64>,
    #[serde(default = "one")]
    threads: usize,
}

fn one() -> usize {
    1
}

/// What wakes the agent besides its inbox.
pub enum Wake {
    Ran(Done),
    Loaded(Loaded),
}

/// How long the agent waits for a run or a load to finish before it looks at its inbox
/// again (the inbox and the executors' channel cannot be waited on together).
const POLL: Duration = Duration::from_millis(1);

/// What the agent holds between its loop's turns.
struct State {
    res: Residency,
    exec: Executor,
    queue: VecDeque<AgentRequest>,
    /// The next request to run, its inputs already copied out of shared memory.
    ready: Option<(AgentRequest, TensorF32)>,
    /// A node's shared agent: the apps attached to it.
    apps: Apps,
    /// Hosted models in the order they were given (loaded ahead in this order).
    order: Vec<String>,
}

/// Run the agent until the supervisor stops it.
pub fn run(node: &mut Node) -> Result<(), NodeError> {
    let params: AgentParams =
        serde_json::from_value(serde_json::Value::Object(node.task.params.clone()))
            .map_err(|e| NodeError::Bootstrap(format!("agent params: {e}")))?;
    let provider: Provider = params
        .device
        .parse()
        .map_err(|e: vision::VisionError| NodeError::Bootstrap(e.to_string()))?;
    let rt = Runtime::from_env(provider).map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    let opts = SessionOptions {
        intra_threads: params.threads.max(1),
        warm_up: true,
        intra_spinning: provider != Provider::Cpu,
        ..SessionOptions::default()
    }
    .with_env()
    .map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    tracing::info!(device = %params.device, models = params.models.len(), budget_mb = ?params.budget_mb, threads = opts.intra_threads, conv_search = ?opts.conv_search, memory_pattern = opts.memory_pattern, "agent ready");
    let (wake_tx, wake) = mpsc::channel();
    let threads = Arc::new(AtomicUsize::new(opts.intra_threads));
    let loader = start_loader(rt, opts, threads.clone(), wake_tx.clone(), Wake::Loaded)
        .map_err(NodeError::Stage)?;
    let device_budget = params.budget_mb.map(|mb| mb * 1024 * 1024);
    let fcfs = crate::apps::fcfs_from_env();
    let mut st = State {
        order: params.models.iter().map(|m| m.name.clone()).collect(),
        res: Residency::new(params.models, device_budget, loader),
        exec: Executor::start(wake_tx, Wake::Ran).map_err(NodeError::Stage)?,
        queue: VecDeque::new(),
        ready: None,
        apps: Apps::new(device_budget),
    };
    loop {
        // Everything the inbox holds now (waiting only when there is nothing else to do).
        let idle = st.queue.is_empty()
            && st.ready.is_none()
            && !st.exec.busy()
            && st.res.loading().is_none();
        let mut wait = if idle {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        let mut stop = false;
        loop {
            match node.next(wait)? {
                Event::Request(r) => enqueue(&mut st.queue, r, fcfs),
                Event::Command(Command::Stop) => stop = true,
                Event::Command(Command::Attach { app }) => {
                    // An app whose attach fails is refused (its stages' requests get
                    // errors naming the model); the agent serves the others on.
                    if let Err(e) = st.apps.attach(node, &mut st.res, &mut st.order, &app) {
                        tracing::error!(app = %app, "cannot attach: {e}");
                    }
                }
                Event::Command(Command::Detach { app }) => {
                    st.apps.detach(node, &mut st.res, &mut st.order, &app);
                }
                Event::Command(Command::SetThreads { threads: n }) => {
                    let n = (n as usize).max(1);
                    if threads.swap(n, Ordering::Relaxed) != n {
                        tracing::info!(threads = n, "intra-op threads changed: sessions renewed");
                        st.res.renew_sessions();
                    }
                }
                Event::Idle => break,
                _ => {}
            }
            wait = Duration::ZERO;
        }
        if stop {
            break;
        }
        while let Ok(w) = wake.try_recv() {
            handle(node, &mut st, w)?;
        }
        dispatch(node, &mut st)?;
        st.res.prefetch_idle(&st.order);
        if st.exec.busy() || st.res.loading().is_some() {
            if let Ok(w) = wake.recv_timeout(POLL) {
                handle(node, &mut st, w)?;
                dispatch(node, &mut st)?;
            }
        }
    }
    tracing::info!(
        loads = st.res.loads,
        evictions = st.res.evictions,
        "agent stopped"
    );
    Ok(())
}

/// A finished load (the queued requests for a model that failed to load fail) or run
/// (the next run starts before this one's outputs are copied out and answered).
fn handle(node: &Node, st: &mut State, wake: Wake) -> Result<(), NodeError> {
    match wake {
        Wake::Loaded(loaded) => {
            let name = loaded.0.clone();
            if let Err(e) = st.res.accept_loaded(loaded) {
                tracing::error!(model = %name, "load failed: {e}");
                let (failed, kept): (Vec<_>, Vec<_>) =
                    st.queue.drain(..).partition(|r| r.model == name);
                st.queue.extend(kept);
                for req in failed {
                    reply(node, &st.res, &req, Err(format!("cannot load {name}: {e}")))?;
                }
            }
        }
        Wake::Ran(done) => {
            st.exec.finished();
            st.res.checkin(&done.job.req.model, done.job.model);
            node.note_busy(done.took.as_nanos() as u64);
            tracing::debug!(model = %done.job.req.model, ms = done.took.as_secs_f64() * 1e3, shape = ?done.job.input.shape, "ran");
            start_ready(node, st)?;
            let req = done.job.req;
            let result = done
                .result
                .and_then(|outputs| write_outputs(node, &req, &outputs));
            if let Err(e) = &result {
                tracing::error!(stage = %req.stage, model = %req.model, "run failed: {e}");
            }
            reply(node, &st.res, &req, result)?;
        }
    }
    Ok(())
}

/// Picks the next request to run (the oldest whose model is resident) and copies its
/// inputs; starts loading the model the oldest waiting request needs; starts the run
/// when the executor is free.
fn dispatch(node: &Node, st: &mut State) -> Result<(), NodeError> {
    let mut i = 0;
    while st.ready.is_none() && i < st.queue.len() {
        let name = st.queue[i].model.clone();
        let fail = if !st.res.hosts(&name) {
            Some(format!("model '{name}' is not hosted by this agent"))
        } else if st.res.is_resident(&name) {
            None
        } else if st.res.loading().is_none() && !st.res.prefetch(&name) {
            Some("the model loader thread died".to_string())
        } else {
            i += 1;
            continue;
        };
        let Some(req) = st.queue.remove(i) else { break };
        if let Some(e) = fail {
            reply(node, &st.res, &req, Err(e))?;
            continue;
        }
        match read_inputs(node, &req) {
            Ok(input) => st.ready = Some((req, input)),
            Err(e) => reply(node, &st.res, &req, Err(e))?,
        }
    }
    if !st.exec.busy() {
        start_ready(node, st)?;
    }
    Ok(())
}

/// Hands the ready request to the executor if its session is free.
fn start_ready(node: &Node, st: &mut State) -> Result<(), NodeError> {
    if st.exec.busy() {
        return Ok(());
    }
    let Some((req, input)) = st.ready.take() else {
        return Ok(());
    };
    let Some(model) = st.res.checkout(&req.model) else {
        if st.res.is_resident(&req.model) {
            st.ready = Some((req, input));
        } else {
            // evicted since its inputs were read: wait for it again
            st.queue.push_front(req);
        }
        return Ok(());
    };
    if let Err(job) = st.exec.submit(Job { model, input, req }) {
        st.res.checkin(&job.req.model, job.model);
        reply(
            node,
            &st.res,
            &job.req,
            Err("the executor thread died".into()),
        )?;
    }
    Ok(())
}

fn reply(
    node: &Node,
    res: &Residency,
    req: &AgentRequest,
    result: Result<Vec<TensorRef>, String>,
) -> Result<(), NodeError> {
    let resident = res.used();
    node.metrics(|m| {
        m.items_in += 1;
        m.items_out += u64::from(result.is_ok());
        m.model_loads = res.loads;
        m.model_evictions = res.evictions;
        m.model_load_ns = res.load_ns;
        m.resident_model_bytes = resident;
    });
    // A stage that died meanwhile gets nothing: its items are replayed to its replacement.
    node.send_to(
        req.reply_to,
        &Inbox::AgentReply(AgentReply { id: req.id, result }),
    )?;
    Ok(())
}

/// The request's inputs, concatenated along dim 0.
fn read_inputs(node: &Node, req: &AgentRequest) -> Result<TensorF32, String> {
    let mut parts = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        let pool = node.pool(t.shm.pool).map_err(|e| e.to_string())?;
        parts.push((pool, t));
    }
    read_batch(&parts)
}

/// Writes every output into the request's output slot, 64-byte aligned, in order.
fn write_outputs(
    node: &Node,
    req: &AgentRequest,
    outputs: &[TensorF32],
) -> Result<Vec<TensorRef>, String> {
    let out_pool = node.pool(req.output.pool).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    let mut refs = Vec::with_capacity(outputs.len());
    for out in outputs {
        let len = out.data.len() as u64 * 4;
        if offset + len > req.output.len {
            let need: u64 = outputs
                .iter()
                .map(|o| (o.data.len() as u64 * 4).div_ceil(64) * 64)
                .sum();
            return Err(format!(
                "{}: the outputs of {} need {need} bytes, the output slot of {} has {}",
                protocol::messages::OUTPUT_SLOT_TOO_SMALL,
                req.model,
                req.stage,
                req.output.len
            ));
        }
        write_f32(out_pool, &req.output, req.output.offset + offset, &out.data)?;
        refs.push(TensorRef {
            shm: ShmRef {
                offset: req.output.offset + offset,
                len,
                ..req.output
            },
            shape: out.shape.iter().map(|&d| d as u32).collect(),
        });
        offset += len.div_ceil(64) * 64;
    }
    Ok(refs)
}
