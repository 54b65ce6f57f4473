//! Which models the agent holds: sessions resident under the device's memory budget
//! (least recently used evicted first), loaded one at a time on a loader thread so that
//! loading overlaps the executors' runs. A resident session is either idle (here) or
//! checked out to the executor; only idle ones can be evicted. While nothing else is
//! loading, the models that fit the budget without evicting anything are loaded ahead
//! of their first request.

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vision::{Model, Runtime, SessionOptions};

/// A model the agent may be asked to run (from the agent task's params).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentModel {
    pub name: String,
    pub path: String,
    /// Bytes it costs on the device while resident (the file size for CPU).
    pub bytes: u64,
}

/// A finished load: the model's name, the session or why it failed, how long it took.
pub type Loaded = (String, Result<Model, String>, Duration);

/// Starts the loader thread: it loads the models it is sent and hands each result to
/// `done` wrapped by `wrap` (so that the agent waits on one channel for everything).
pub fn start_loader<W: Send + 'static>(
    rt: Runtime,
    opts: SessionOptions,
    done: mpsc::Sender<W>,
    wrap: fn(Loaded) -> W,
) -> Result<mpsc::Sender<AgentModel>, String> {
    let (requests, rx) = mpsc::channel::<AgentModel>();
    std::thread::Builder::new()
        .name("model-loader".into())
        .spawn(move || {
            for m in rx {
                let started = Instant::now();
                let result = Model::load(&rt, &m.name, std::path::Path::new(&m.path), &opts)
                    .map_err(|e| e.to_string());
                if done
                    .send(wrap((m.name, result, started.elapsed())))
                    .is_err()
                {
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot start the model loader thread: {e}"))?;
    Ok(requests)
}

pub struct Residency {
    models: HashMap<String, AgentModel>,
    idle: HashMap<String, Model>,
    /// The resident model whose session the executor holds now.
    busy: Option<String>,
    /// Most recently used last.
    lru: Vec<String>,
    budget: Option<u64>,
    loader: mpsc::Sender<AgentModel>,
    /// The model being loaded, if any (one at a time).
    loading: Option<String>,
    pub loads: u64,
    pub evictions: u64,
    pub load_ns: u64,
}

impl Residency {
    pub fn new(
        models: Vec<AgentModel>,
        budget: Option<u64>,
        loader: mpsc::Sender<AgentModel>,
    ) -> Self {
        Residency {
            models: models.into_iter().map(|m| (m.name.clone(), m)).collect(),
            idle: HashMap::new(),
            busy: None,
            lru: Vec::new(),
            budget,
            loader,
            loading: None,
            loads: 0,
            evictions: 0,
            load_ns: 0,
        }
    }

    fn bytes(&self, name: &str) -> u64 {
        self.models.get(name).map_or(0, |m| m.bytes)
    }

    /// Bytes of every resident model, idle or busy.
    pub fn used(&self) -> u64 {
        self.idle
            .keys()
            .chain(self.busy.iter())
            .map(|n| self.bytes(n))
            .sum()
    }

    pub fn hosts(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    pub fn is_resident(&self, name: &str) -> bool {
        self.idle.contains_key(name) || self.busy.as_deref() == Some(name)
    }

    /// True when `name` fits the budget as it is, without evicting anything.
    fn fits(&self, name: &str) -> bool {
        self.budget
            .is_none_or(|b| self.used() + self.bytes(name) <= b)
    }

    pub fn loading(&self) -> Option<&str> {
        self.loading.as_deref()
    }

    /// Free memory for `bytes` more by evicting idle models, least recently used first
    /// (never `keep`). The busy model cannot be evicted: the budget may be exceeded while
    /// it runs.
    fn make_room(&mut self, bytes: u64, keep: &str) {
        let Some(budget) = self.budget else { return };
        while self.used() + bytes > budget {
            let Some(pos) = self
                .lru
                .iter()
                .position(|n| n != keep && self.idle.contains_key(n))
            else {
                return;
            };
            let victim = self.lru.remove(pos);
            self.idle.remove(&victim);
            self.evictions += 1;
            tracing::info!(model = %victim, used_bytes = self.used(), "evicted");
        }
    }

    fn touch(&mut self, name: &str) {
        self.lru.retain(|n| n != name);
        self.lru.push(name.to_string());
    }

    /// Takes a finished load in; the error is the load's.
    pub fn accept_loaded(&mut self, (name, result, took): Loaded) -> Result<(), String> {
        self.loading = None;
        let model = result?;
        self.make_room(self.bytes(&name), &name);
        self.idle.insert(name.clone(), model);
        self.touch(&name);
        self.loads += 1;
        self.load_ns += took.as_nanos() as u64;
        tracing::info!(model = %name, load_ms = took.as_secs_f64() * 1e3, used_bytes = self.used(), "loaded");
        Ok(())
    }

    /// Starts loading `name` unless it is resident or a load is in flight; true when a
    /// load started.
    pub fn prefetch(&mut self, name: &str) -> bool {
        if self.is_resident(name) || self.loading.is_some() {
            return false;
        }
        let Some(m) = self.models.get(name) else {
            return false;
        };
        if self.loader.send(m.clone()).is_err() {
            return false;
        }
        self.loading = Some(name.to_string());
        true
    }

    /// When nothing is loading: starts loading the first hosted model (in the order the
    /// agent was given them) that is not resident and fits the budget without evicting
    /// anything, so that models are ready before their first request.
    pub fn prefetch_idle(&mut self, order: &[String]) {
        if self.loading.is_some() {
            return;
        }
        if let Some(name) = order.iter().find(|n| !self.is_resident(n) && self.fits(n)) {
            let name = name.clone();
            self.prefetch(&name);
        }
    }

    /// The idle session of `name`, now busy.
    pub fn checkout(&mut self, name: &str) -> Option<Model> {
        if self.busy.is_some() {
            return None;
        }
        let model = self.idle.remove(name)?;
        self.busy = Some(name.to_string());
        self.touch(name);
        Some(model)
    }

    /// The session back from the executor, idle again.
    pub fn checkin(&mut self, name: &str, model: Model) {
        if self.busy.as_deref() == Some(name) {
            self.busy = None;
        }
        self.idle.insert(name.to_string(), model);
    }
}
