//! The GPU agent: one process per device that owns the device and runs every model of
//! every GPU stage on it. One ONNX Runtime environment; sessions kept resident under
//! the device's memory budget (least recently used evicted first); the model the queue
//! needs next is loaded on a loader thread while the executor runs the current one,
//! so weight upload overlaps execution.

use crate::tensors::{read_tensor, tensor_bytes};
use protocol::messages::{AgentReply, AgentRequest, Command, Inbox, TensorRef};
use protocol::node::{Event, Node, NodeError};
use protocol::shm::ShmRef;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vision::{Model, Provider, Runtime, SessionOptions, TensorF32};

/// A model the agent may be asked to run (from the agent task's params).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentModel {
    pub name: String,
    pub path: String,
    /// Bytes it costs on the device while resident (the file size for CPU).
    pub bytes: u64,
}

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

type Loaded = (String, Result<Model, String>, Duration);

/// Loads models off the executor's thread.
struct Loader {
    requests: mpsc::Sender<AgentModel>,
    done: mpsc::Receiver<Loaded>,
    in_flight: Option<String>,
}

impl Loader {
    fn start(rt: Runtime, opts: SessionOptions) -> Loader {
        let (requests, rx) = mpsc::channel::<AgentModel>();
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("model-loader".into())
            .spawn(move || {
                for m in rx {
                    let started = Instant::now();
                    let result = Model::load(&rt, &m.name, std::path::Path::new(&m.path), &opts)
                        .map_err(|e| e.to_string());
                    if tx.send((m.name, result, started.elapsed())).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Loader {
            requests,
            done,
            in_flight: None,
        }
    }
}

struct Agent {
    models: HashMap<String, AgentModel>,
    resident: HashMap<String, Model>,
    /// Most recently used last.
    lru: Vec<String>,
    budget: Option<u64>,
    loader: Loader,
    loads: u64,
    evictions: u64,
    load_ns: u64,
}

impl Agent {
    fn used(&self) -> u64 {
        self.resident
            .keys()
            .filter_map(|n| self.models.get(n))
            .map(|m| m.bytes)
            .sum()
    }

    /// Free memory for `bytes` more, evicting least recently used models (never `keep`).
    fn make_room(&mut self, bytes: u64, keep: &str) {
        let Some(budget) = self.budget else { return };
        while self.used() + bytes > budget {
            let Some(pos) = self
                .lru
                .iter()
                .position(|n| n != keep && self.resident.contains_key(n))
            else {
                return;
            };
            let victim = self.lru.remove(pos);
            self.resident.remove(&victim);
            self.evictions += 1;
            tracing::info!(model = %victim, used_bytes = self.used(), "evicted");
        }
    }

    fn touch(&mut self, name: &str) {
        self.lru.retain(|n| n != name);
        self.lru.push(name.to_string());
    }

    fn accept_loaded(&mut self, (name, result, took): Loaded) -> Result<(), String> {
        self.loader.in_flight = None;
        let model = result?;
        let bytes = self.models.get(&name).map(|m| m.bytes).unwrap_or(0);
        self.make_room(bytes, &name);
        self.resident.insert(name.clone(), model);
        self.touch(&name);
        self.loads += 1;
        self.load_ns += took.as_nanos() as u64;
        tracing::info!(model = %name, load_ms = took.as_secs_f64() * 1e3, used_bytes = self.used(), "loaded");
        Ok(())
    }

    /// Start loading `name` in the background if it is not resident or loading.
    fn prefetch(&mut self, name: &str) {
        if self.resident.contains_key(name) || self.loader.in_flight.is_some() {
            return;
        }
        if let Some(m) = self.models.get(name) {
            self.loader.in_flight = Some(name.to_string());
            let _ = self.loader.requests.send(m.clone());
        }
    }

    /// Make `name` resident, waiting for the loader.
    fn ensure(&mut self, name: &str) -> Result<(), String> {
        if self.resident.contains_key(name) {
            self.touch(name);
            return Ok(());
        }
        if !self.models.contains_key(name) {
            return Err(format!("model '{name}' is not hosted by this agent"));
        }
        loop {
            match self.loader.in_flight.clone() {
                None => self.prefetch(name),
                Some(loading) => {
                    let loaded = self
                        .loader
                        .done
                        .recv()
                        .map_err(|_| "the model loader thread died".to_string())?;
                    let ok = self.accept_loaded(loaded);
                    if loading == name {
                        return ok;
                    }
                    if let Err(e) = ok {
                        tracing::error!("prefetch of {loading} failed: {e}");
                    }
                }
            }
        }
    }
}

/// Run one request: concatenate inputs along dim 0, run, write outputs into the slot.
fn execute(agent: &mut Agent, node: &Node, req: &AgentRequest) -> Result<Vec<TensorRef>, String> {
    agent.ensure(&req.model)?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        let pool = node.pool(t.shm.pool).map_err(|e| e.to_string())?;
        inputs.push(read_tensor(pool, t)?);
    }
    let input = concat_dim0(inputs)?;
    let model = agent
        .resident
        .get_mut(&req.model)
        .ok_or_else(|| format!("model '{}' vanished", req.model))?;
    let outputs = model.run(&[input]).map_err(|e| e.to_string())?;
    let out_pool = node.pool(req.output.pool).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    let mut refs = Vec::new();
    for out in &outputs {
        let bytes = tensor_bytes(out);
        if offset + bytes.len() as u64 > req.output.len {
            return Err(format!(
                "outputs of {} do not fit the {}-byte output slot of {}",
                req.model, req.output.len, req.stage
            ));
        }
        out_pool
            .write_at(&req.output, req.output.offset + offset, &bytes)
            .map_err(|e| e.to_string())?;
        refs.push(TensorRef {
            shm: ShmRef {
                offset: req.output.offset + offset,
                len: bytes.len() as u64,
                ..req.output
            },
            shape: out.shape.iter().map(|&d| d as u32).collect(),
        });
        offset += (bytes.len() as u64).div_ceil(64) * 64;
    }
    Ok(refs)
}

fn concat_dim0(mut parts: Vec<TensorF32>) -> Result<TensorF32, String> {
    if parts.len() == 1 {
        return parts
            .pop()
            .ok_or_else(|| "a request without inputs".to_string());
    }
    match parts.as_slice() {
        [] => Err("a request without inputs".into()),
        parts => {
            let rest = &parts[0].shape[1..];
            let mut n = 0;
            let mut data = Vec::new();
            for p in parts {
                if &p.shape[1..] != rest {
                    return Err(format!(
                        "cannot batch shapes {:?} and {:?}",
                        parts[0].shape, p.shape
                    ));
                }
                n += p.shape[0];
                data.extend_from_slice(&p.data);
            }
            let mut shape = vec![n];
            shape.extend_from_slice(rest);
            TensorF32::new(shape, data).map_err(|e| e.to_string())
        }
    }
}

/// Run the agent until the supervisor stops it.
pub fn run(node: &mut Node) -> Result<(), NodeError> {
    let params: AgentParams =
        serde_json::from_value(serde_json::Value::Object(node.task.params.clone()))
            .map_err(|e| NodeError::Bootstrap(format!("agent params: {e}")))?;
    let provider = if params.device.starts_with("cuda") {
        let id = params
            .device
            .trim_start_matches("cuda:")
            .parse()
            .unwrap_or(0);
        Provider::Cuda { device_id: id }
    } else {
        Provider::Cpu
    };
    let rt = Runtime::from_env(provider).map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    let opts = SessionOptions {
        intra_threads: params.threads.max(1),
        warm_up: true,
    };
    tracing::info!(device = %params.device, models = params.models.len(), budget_mb = ?params.budget_mb, "agent ready");
    let mut agent = Agent {
        models: params
            .models
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect(),
        resident: HashMap::new(),
        lru: Vec::new(),
        budget: params.budget_mb.map(|mb| mb * 1024 * 1024),
        loader: Loader::start(rt, opts),
        loads: 0,
        evictions: 0,
        load_ns: 0,
    };
    let mut queue: VecDeque<AgentRequest> = VecDeque::new();
    loop {
        let wait = if queue.is_empty() {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        match node.next(wait)? {
            Event::Request(r) => {
                queue.push_back(r);
                continue;
            }
            Event::Command(Command::Stop) => break,
            _ => {}
        }
        if let Ok(loaded) = agent.loader.done.try_recv() {
            if let Err(e) = agent.accept_loaded(loaded) {
                tracing::error!("background load failed: {e}");
            }
        }
        let Some(req) = queue.pop_front() else {
            continue;
        };
        // Overlap: start loading the next different model while this one runs.
        if let Some(next) = queue
            .iter()
            .find(|r| r.model != req.model && !agent.resident.contains_key(&r.model))
        {
            let name = next.model.clone();
            agent.prefetch(&name);
        }
        let started = Instant::now();
        let result = execute(&mut agent, node, &req);
        if let Err(e) = &result {
            tracing::error!(stage = %req.stage, model = %req.model, "run failed: {e}");
        }
        let busy = started.elapsed().as_nanos() as u64;
        let resident = agent.used();
        node.metrics(|m| {
            m.items_in += 1;
            m.items_out += u64::from(result.is_ok());
            m.model_loads = agent.loads;
            m.model_evictions = agent.evictions;
            m.model_load_ns = agent.load_ns;
            m.resident_model_bytes = resident;
        });
        node.note_busy(busy);
        node.send_to(
            req.reply_to,
            &Inbox::AgentReply(AgentReply { id: req.id, result }),
        )?;
    }
    tracing::info!(
        loads = agent.loads,
        evictions = agent.evictions,
        "agent stopped"
    );
    Ok(())
}
