//! The GPU agent: one process per device that owns the device and runs every model of
//! every GPU stage on it. One ONNX Runtime environment; sessions kept resident under
//! the device's memory budget ([`crate::residency`]); the model the queue needs next is
//! loaded on a loader thread while the executor runs, so weight upload overlaps
//! execution.
//!
//! Runs happen on `executors` executor threads ([`crate::executor`]), each with its own
//! session of the model it runs (on `cpu:0` one executor per granted core, sessions at
//! one intra-op thread: several requests, of different models or of one stage's
//! pyramid levels, run at once); this thread reads requests, starts each free executor
//! on the earliest-deadline request it can run ([`crate::pick`]), readies the next
//! request's inputs while every executor is busy (a single tensor is checked and left in
//! the stage's slot, where the executor reads it; several items' tensors are copied into
//! one batch), starts the next run as soon as one finishes and only then writes the
//! finished run's outputs back and replies. Sessions use `threads` intra-op threads
//! (`SetThreads` changes them live: every session is created again). On `cpu:0` the agent
//! shares the cores with the pipeline's CPU stages: its sessions neither spin, plan memory
//! nor warm up ([`crate::sessions`]).

use crate::apps::{enqueue, Apps};
use crate::executor::{Done, Executor, Job};
use crate::pick::next_runnable;
use crate::residency::{start_loader, AgentModel, Loaded, Residency};
use crate::switching::{demand, next_load};
use crate::tensors::{write_f32, RunInput};
use protocol::messages::{AgentError, AgentReply, AgentRequest, Command, Inbox, TensorRef};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::ShmRef;
use serde::Deserialize;
use stage::StageError;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;
use vision::{Provider, Runtime, TensorF32};

#[derive(Debug, Deserialize)]
struct AgentParams {
    device: String,
    models: Vec<AgentModel>,
    /// Device memory budget for resident models; none = unlimited.
    budget_mb: Option<u64>,
    #[serde(default = "one")]
    threads: usize,
    /// Requests run at once, each on its own executor thread and session.
    #[serde(default = "one")]
    executors: usize,
}

fn one() -> usize {
    1
}

/// How long a stopped agent waits for a model load in progress before it exits anyway.
const LOAD_AT_STOP: Duration = Duration::from_secs(60);

/// What wakes the agent besides its inbox.
/// (Boxed: a finished run carries its session, a load its new one.)
pub enum Wake {
    Ran(Box<Done>),
    Loaded(Box<Loaded>),
}

/// How long the agent waits for a run or a load to finish before it looks at its inbox
/// again while an executor is free (the inbox and the executors' channel cannot be
/// waited on together): a request that comes meanwhile may start at once.
const POLL: Duration = Duration::from_millis(1);

/// The same wait while every executor is busy: a request that comes meanwhile cannot
/// start before a run ends, and the run's end wakes the agent. The inbox is still looked
/// at this often, for commands and for loads to start ahead of the queue. (Polling every
/// millisecond here woke the agent's thread a thousand times a second, each time taking
/// a core from a running executor: BENCHMARKS.md, session 36.)
const BUSY_POLL: Duration = Duration::from_millis(20);

/// What the agent holds between its loop's turns.
struct State {
    res: Residency,
    exec: Executor,
    queue: VecDeque<AgentRequest>,
    /// The next request to run, its inputs already read (checked in their slot, or batched).
    ready: Option<(AgentRequest, RunInput)>,
    /// A node's shared agent: the apps attached to it.
    apps: Apps,
    /// Hosted models in the order they were given (loaded ahead in this order).
    order: Vec<String>,
    /// Queue order: first come first served instead of earliest deadline first.
    fcfs: bool,
    /// Keep an executor for guaranteed requests when serving them ([`crate::pick`]).
    keep: bool,
    /// A guaranteed request came since the last app detached: the agent serves a
    /// request-guarantee app.
    serving_guaranteed: bool,
}

impl State {
    fn executors(&self) -> crate::pick::Executors {
        crate::pick::Executors {
            busy: self.exec.busy(),
            size: self.exec.size(),
            keep_one: self.keep && self.serving_guaranteed,
        }
    }
}

/// Run the agent until the supervisor stops it.
pub fn run(node: &mut Node) -> Result<(), StageError> {
    let params: AgentParams =
        serde_json::from_value(serde_json::Value::Object(node.task.params.clone()))
            .map_err(|e| NodeError::Bootstrap(format!("agent params: {e}")))?;
    let provider: Provider = params
        .device
        .parse()
        .map_err(|e: vision::VisionError| NodeError::Bootstrap(e.to_string()))?;
    let rt = Runtime::from_env(provider).map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    let opts = crate::sessions::agent_session_options(provider, params.threads)
        .with_env()
        .map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    let executors = params.executors.max(1);
    let malloc = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    tracing::info!(device = %params.device, models = params.models.len(), budget_mb = ?params.budget_mb, threads = opts.intra_threads, executors, conv_search = ?opts.conv_search, memory_pattern = opts.memory_pattern, shared_arena = opts.shared_arena, warm_up = opts.warm_up, spinning = opts.intra_spinning, glibc_tunables = %malloc, "agent ready");
    let (wake_tx, wake) = mpsc::channel();
    let threads = Arc::new(AtomicUsize::new(opts.intra_threads));
    let loader = start_loader(rt, opts, threads.clone(), wake_tx.clone(), |l| {
        Wake::Loaded(Box::new(l))
    })
    .map_err(StageError::Failed)?;
    let device_budget = params.budget_mb.map(|mb| mb * 1024 * 1024);
    let fcfs = crate::apps::fcfs_from_env();
    let mut st = State {
        order: params.models.iter().map(|m| m.name.clone()).collect(),
        res: Residency::new(params.models, device_budget, loader).with_instances(executors),
        exec: Executor::start(executors, wake_tx, |done| Wake::Ran(Box::new(done)))
            .map_err(StageError::Failed)?,
        queue: VecDeque::new(),
        ready: None,
        apps: Apps::new(device_budget),
        fcfs,
        keep: crate::pick::keep_from_env(),
        serving_guaranteed: false,
    };
    let mut woken: Option<Wake> = None;
    loop {
        // Models to load ahead start loading before the agent waits on its inbox (an idle
        // wait here held each ahead-of-request load back by up to 200 ms at start).
        st.res.prefetch_idle(&st.order);
        // Everything the inbox holds now (waiting only when there is nothing else to do).
        let idle = woken.is_none()
            && st.queue.is_empty()
            && st.ready.is_none()
            && st.exec.busy() == 0
            && st.res.loading().is_none();
        let mut wait = if idle {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        let mut stop = false;
        loop {
            match node.next(wait)? {
                Event::Request(r) => {
                    st.serving_guaranteed |= r.guaranteed;
                    enqueue(&mut st.queue, r, st.fcfs)
                }
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
                    // Whether a guaranteed app is still served shows with its next request.
                    st.serving_guaranteed = false;
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
            // A load that ended while the agent waited is taken in (the wait below is
            // for loads still running).
            if let Some(w @ Wake::Loaded(_)) = woken.take() {
                handle(node, &mut st, w)?;
            }
            break;
        }
        // A run or load that ended while the agent waited, then any that ended since (its
        // inbox read first, so that a freed executor takes what came meanwhile).
        if let Some(w) = woken.take() {
            handle(node, &mut st, w)?;
        }
        while let Ok(w) = wake.try_recv() {
            handle(node, &mut st, w)?;
        }
        dispatch(node, &mut st)?;
        st.res.prefetch_idle(&st.order);
        if st.exec.busy() > 0 || st.res.loading().is_some() {
            let wait = if st.exec.free() { POLL } else { BUSY_POLL };
            woken = wake.recv_timeout(wait).ok();
        }
    }
    // A load still running in the loader thread would be cut off by the exit (ONNX Runtime
    // aborts the process when a session is made while it ends): let it finish first, for
    // as long as a load may take.
    let stopped_at = std::time::Instant::now();
    while st.res.loading().is_some() && stopped_at.elapsed() < LOAD_AT_STOP {
        match wake.recv_timeout(POLL) {
            Ok(w @ Wake::Loaded(_)) => handle(node, &mut st, w)?,
            Ok(Wake::Ran(done)) => st.exec.finished(done.executor),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
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
            let wanted = demand(&st.queue, st.ready.as_ref().map(|(r, _)| r));
            if let Err(e) = st.res.accept_loaded(*loaded, &wanted) {
                tracing::error!(model = %name, "load failed: {e}");
                let (failed, kept): (Vec<_>, Vec<_>) =
                    st.queue.drain(..).partition(|r| r.model == name);
                st.queue.extend(kept);
                for req in failed {
                    reply(
                        node,
                        &st.res,
                        &req,
                        Err(AgentError::Failed(format!("cannot load {name}: {e}"))),
                    )?;
                }
            }
        }
        Wake::Ran(done) => {
            let Done {
                job,
                result,
                took,
                executor,
            } = *done;
            st.exec.finished(executor);
            st.res
                .checkin(&job.req.model, job.model, job.generation, Some(executor));
            node.note_busy(took.as_nanos() as u64);
            tracing::debug!(model = %job.req.model, ms = took.as_secs_f64() * 1e3, shape = ?job.input.shape(), "ran");
            start_runs(node, st)?;
            let req = job.req;
            let result = result
                .map_err(AgentError::Failed)
                .and_then(|outputs| write_outputs(node, &req, &outputs));
            if let Err(e) = &result {
                tracing::error!(stage = %req.stage, model = %req.model, "run failed: {e}");
            }
            reply(node, &st.res, &req, result)?;
        }
    }
    Ok(())
}

/// Fails the requests no session will serve and starts loading the model of the
/// earliest request whose model is not resident ([`crate::switching::next_load`]: not
/// while that would evict a model an earlier request waits for); starts every run an
/// executor can take; while every executor is busy, copies the inputs of the next
/// request whose model is resident, so that it starts as soon as one is free.
fn dispatch(node: &Node, st: &mut State) -> Result<(), NodeError> {
    let mut i = 0;
    while i < st.queue.len() {
        if st.res.hosts(&st.queue[i].model) {
            i += 1;
            continue;
        }
        if let Some(req) = st.queue.remove(i) {
            let e = format!("model '{}' is not hosted by this agent", req.model);
            reply(node, &st.res, &req, Err(AgentError::Failed(e)))?;
        }
    }
    let ready = st.ready.as_ref().map(|(r, _)| r);
    if let Some(name) = next_load(&st.res, &st.queue, ready) {
        if !st.res.prefetch(&name) {
            let (failed, kept): (Vec<_>, Vec<_>) =
                st.queue.drain(..).partition(|r| r.model == name);
            st.queue.extend(kept);
            for req in failed {
                let e = Err(AgentError::Failed("the model loader thread died".into()));
                reply(node, &st.res, &req, e)?;
            }
        }
    }
    start_runs(node, st)?;
    while st.ready.is_none() && !st.exec.free() {
        let Some(i) = st.queue.iter().position(|r| st.res.is_resident(&r.model)) else {
            break;
        };
        let Some(req) = st.queue.remove(i) else { break };
        match read_inputs(node, &req) {
            Ok(input) => st.ready = Some((req, input)),
            Err(e) => reply(node, &st.res, &req, Err(AgentError::Failed(e)))?,
        }
    }
    Ok(())
}

/// Starts runs while an executor is free: the request whose inputs are ready when its
/// model has an idle session, else the earliest-deadline request that can run now.
fn start_runs(node: &Node, st: &mut State) -> Result<(), NodeError> {
    while let Some(executor) = st.exec.next_free() {
        let Some((req, input)) = next_run(node, st)? else {
            return Ok(());
        };
        let Some((model, generation)) = st.res.checkout(&req.model, executor) else {
            // next_run only returns requests whose model has an idle session
            st.ready = Some((req, input));
            return Ok(());
        };
        let job = Job {
            model,
            generation,
            input,
            req,
        };
        if let Err(job) = st.exec.submit(executor, job) {
            st.res
                .checkin(&job.req.model, job.model, job.generation, None);
            let e = Err(AgentError::Failed("the executor threads died".into()));
            reply(node, &st.res, &job.req, e)?;
            return Ok(());
        }
    }
    Ok(())
}

/// The next request to run now and its inputs: the ready one if its model has an idle
/// session, else the first queued one that has (inputs read now).
fn next_run(node: &Node, st: &mut State) -> Result<Option<(AgentRequest, RunInput)>, NodeError> {
    let executors = st.executors();
    match st.ready.take() {
        Some((req, input)) if st.res.has_idle(&req.model) && executors.may_start(&req) => {
            return Ok(Some((req, input)))
        }
        // evicted since its inputs were read: wait for it again
        Some((req, _)) if !st.res.is_resident(&req.model) => enqueue(&mut st.queue, req, st.fcfs),
        other => st.ready = other,
    }
    while let Some(i) = next_runnable(&st.queue, |m| st.res.has_idle(m), executors) {
        let Some(req) = st.queue.remove(i) else { break };
        match read_inputs(node, &req) {
            Ok(input) => return Ok(Some((req, input))),
            Err(e) => reply(node, &st.res, &req, Err(AgentError::Failed(e)))?,
        }
    }
    Ok(None)
}

fn reply(
    node: &Node,
    res: &Residency,
    req: &AgentRequest,
    result: Result<Vec<TensorRef>, AgentError>,
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

/// The request's inputs as its run reads them: one tensor left in its slot, several
/// concatenated along dim 0.
fn read_inputs(node: &Node, req: &AgentRequest) -> Result<RunInput, String> {
    let mut parts = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        let pool = node.shared_pool(t.shm.pool).map_err(|e| e.to_string())?;
        parts.push((pool, t));
    }
    RunInput::of(&parts)
}

/// Writes every output into the request's output slot, 64-byte aligned, in order.
fn write_outputs(
    node: &Node,
    req: &AgentRequest,
    outputs: &[TensorF32],
) -> Result<Vec<TensorRef>, AgentError> {
    let out_pool = node
        .pool(req.output.pool)
        .map_err(|e| AgentError::Failed(e.to_string()))?;
    let mut offset = 0u64;
    let mut refs = Vec::with_capacity(outputs.len());
    for out in outputs {
        let len = out.data.len() as u64 * 4;
        if offset + len > req.output.len {
            let need: u64 = outputs
                .iter()
                .map(|o| (o.data.len() as u64 * 4).div_ceil(64) * 64)
                .sum();
            return Err(AgentError::OutputSlotTooSmall {
                model: req.model.clone(),
                stage: req.stage.clone(),
                need,
                have: req.output.len,
            });
        }
        write_f32(out_pool, &req.output, req.output.offset + offset, &out.data)
            .map_err(AgentError::Failed)?;
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
