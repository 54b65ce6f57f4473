//! Which models the agent holds: sessions resident under the device's memory budget
//! (least recently used evicted first), loaded one at a time on a loader thread so that
//! loading overlaps the executors' runs. A resident session is either idle (here) or
//! checked out to the executor; only idle ones can be evicted. While nothing else is
//! loading, the models that fit the budget without evicting anything are loaded ahead
//! of their first request.

use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use vision::{Model, Runtime, SessionOptions};

/// A model the agent may be asked to run (from the agent task's params).
#[derive(Debug, Clone, Deserialize)]
pub struct AgentModel {
    pub name: String,
    pub path: String,
    /// Bytes it costs on the device while resident (the file size for CPU).
    pub bytes: u64,
    /// Most batch rows per run (bigger batches run in parts); none: any.
    #[serde(default)]
    pub max_rows: Option<usize>,
    /// Most input values per run (the manifest's `max_run_values`): a bigger batch runs a
    /// few whole rows at a time; none: at once.
    #[serde(default)]
    pub max_run_values: Option<usize>,
    /// The decoder that replaces the graph's tail (the manifest's `native_tail`); none: the
    /// graph runs whole.
    #[serde(default)]
    pub native_tail: Option<vision::native_tail::NativeTail>,
    /// The outputs the manifest declares: runs return only these (none: every output).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// Its sessions allocate from arenas of their own, not the agent's shared CPU arena
    /// (the manifest's `own_arena`).
    #[serde(default)]
    pub own_arena: bool,
    /// Large inputs run in strips (the manifest's `strips`); none: always whole.
    #[serde(default)]
    pub strips: Option<vision::strips::Strips>,
    /// Load it with the top-1 head on its outputs (the manifest's `output_head`).
    #[serde(default)]
    pub top1_outputs: bool,
    /// Wide 3×3 convolutions by Winograd on `cpu:0` (the manifest's `winograd`, on unless it
    /// says `false`), unless `SMARTPIPE_ORT_WINOGRAD` says otherwise for every model.
    #[serde(default = "vision::manifest::winograd_default")]
    pub winograd: bool,
}

/// A finished load: the model's name, the session or why it failed, how long it took.
pub type Loaded = (String, Result<Model, String>, Duration);

/// Starts the loader thread: it loads the models it is sent, with `opts` and the intra-op
/// threads `threads` holds when the load starts, and hands each result to `done`
/// wrapped by `wrap` (so that the agent waits on one channel for everything).
pub fn start_loader<W: Send + 'static>(
    rt: Runtime,
    opts: SessionOptions,
    threads: Arc<AtomicUsize>,
    done: mpsc::Sender<W>,
    wrap: fn(Loaded) -> W,
) -> Result<mpsc::Sender<AgentModel>, String> {
    let winograd_override =
        vision::session_options::winograd_override().map_err(|e| e.to_string())?;
    let (requests, rx) = mpsc::channel::<AgentModel>();
    std::thread::Builder::new()
        .name("model-loader".into())
        .spawn(move || {
            for m in rx {
                let started = Instant::now();
                let opts = SessionOptions {
                    intra_threads: threads.load(Ordering::Relaxed).max(1),
                    top1_outputs: m.top1_outputs,
                    native_tail: m.native_tail,
                    outputs: m.outputs.clone(),
                    shared_arena: opts.shared_arena && !m.own_arena,
                    winograd: winograd_override.unwrap_or(m.winograd),
                    ..opts.clone()
                };
                let result = Model::load(&rt, &m.name, std::path::Path::new(&m.path), &opts)
                    .and_then(|mut model| {
                        model.set_max_rows(m.max_rows);
                        model.set_strips(m.strips);
                        model.set_max_run_values(m.max_run_values);
                        model.keep_outputs(&m.outputs)?;
                        Ok(model)
                    })
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

/// Where each model is first wanted in the agent's queue (position 0 is the next
/// request to run): the residency evicts the model wanted furthest ahead (or not at all)
/// first, and never one wanted before the request a load is for.
#[derive(Debug, Default, Clone)]
pub struct Demand {
    first: HashMap<String, usize>,
}

impl Demand {
    /// The models of the requests in the order they will run.
    pub fn new<'a>(models: impl Iterator<Item = &'a str>) -> Demand {
        let mut first = HashMap::new();
        for (i, m) in models.enumerate() {
            first.entry(m.to_string()).or_insert(i);
        }
        Demand { first }
    }

    /// The position of the first request for `name`, if one is queued.
    pub fn first(&self, name: &str) -> Option<usize> {
        self.first.get(name).copied()
    }

    /// `name` is wanted by a request before position `before`.
    fn wanted_before(&self, name: &str, before: usize) -> bool {
        self.first(name).is_some_and(|i| i < before)
    }
}

/// A resident session no executor runs now.
struct IdleSession {
    model: Model,
    /// The generation it was made in.
    generation: u64,
    /// The executor thread that ran it last; none: not run yet.
    last_executor: Option<usize>,
}

/// Which of a model's idle sessions (in the order they went idle; `last_executor` of each
/// says which executor ran it last) executor `executor` takes: the one it ran last, so that
/// a session's memory (its own arena on `cpu:0`, `own_arena` in the manifest) stays in that
/// core's caches; else one no executor has run yet; else the one that went idle last.
pub fn session_for<T>(
    idle: &[T],
    last_executor: impl Fn(&T) -> Option<usize>,
    executor: usize,
) -> Option<usize> {
    idle.iter()
        .rposition(|s| last_executor(s) == Some(executor))
        .or_else(|| idle.iter().rposition(|s| last_executor(s).is_none()))
        .or_else(|| idle.len().checked_sub(1))
}

pub struct Residency {
    models: HashMap<String, AgentModel>,
    /// Idle sessions per model (one per executor that ran it at once, at most
    /// `instances`).
    idle: HashMap<String, Vec<IdleSession>>,
    /// Sessions checked out to the executors, per model.
    busy: HashMap<String, usize>,
    /// Most sessions of one model (the executors: each runs one session at a time).
    instances: usize,
    /// Most recently used last.
    lru: Vec<String>,
    budget: Option<u64>,
    /// A shared agent: which apps use each model (a model no app uses any more is
    /// unloaded). Models given at start (a one-app agent) have no entry and stay.
    users: HashMap<String, HashSet<String>>,
    /// The request-guarantee apps among them: their models are evicted last.
    guaranteed_apps: HashSet<String>,
    loader: mpsc::Sender<AgentModel>,
    /// The model being loaded, if any (one at a time).
    loading: Option<String>,
    /// Models whose last load failed: loaded again only for a request, never ahead.
    failed: HashSet<String>,
    /// Bumped when the intra-op threads change: sessions of an older generation (busy
    /// ones, a load in flight) are dropped when they come back.
    generation: u64,
    loading_generation: u64,
    /// Models whose loaded graph is larger than their file (Winograd's weights): the loaded
    /// and the file's bytes, to scale what their sessions are counted.
    grown: HashMap<String, (u64, u64)>,
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
            busy: HashMap::new(),
            instances: 1,
            lru: Vec::new(),
            budget,
            users: HashMap::new(),
            guaranteed_apps: HashSet::new(),
            loader,
            loading: None,
            failed: HashSet::new(),
            generation: 0,
            loading_generation: 0,
            grown: HashMap::new(),
            loads: 0,
            evictions: 0,
            load_ns: 0,
        }
    }

    /// At most `n` sessions of one model (one per executor thread).
    pub fn with_instances(mut self, n: usize) -> Self {
        self.instances = n.max(1);
        self
    }

    /// What a session of `name` is counted: its declared bytes (the file's size on the CPU),
    /// grown as its loaded graph outgrew the file.
    fn bytes(&self, name: &str) -> u64 {
        let declared = self.models.get(name).map_or(0, |m| m.bytes);
        match self.grown.get(name) {
            Some(&(loaded, file)) => {
                let scaled = u128::from(declared) * u128::from(loaded) / u128::from(file.max(1));
                u64::try_from(scaled).unwrap_or(u64::MAX)
            }
            None => declared,
        }
    }

    /// `model`, loaded with Winograd's convolutions, is counted more than the budget holds
    /// where its file would fit (its grown size recorded in `grown` already).
    fn winograd_outgrew_the_budget(&self, name: &str, model: &Model) -> bool {
        let (Some(budget), Some(m)) = (self.budget, self.models.get(name)) else {
            return false;
        };
        m.winograd
            && model.rewrites().winograd > 0
            && self.bytes(name) > budget
            && m.bytes <= budget
    }

    /// Sessions of `name`, idle or busy.
    pub fn sessions(&self, name: &str) -> usize {
        self.idle.get(name).map_or(0, Vec::len) + self.busy.get(name).copied().unwrap_or(0)
    }

    /// Bytes of every resident session, idle or busy (each session holds its own copy
    /// of the weights).
    pub fn used(&self) -> u64 {
        let names: HashSet<&String> = self.idle.keys().chain(self.busy.keys()).collect();
        names
            .into_iter()
            .map(|n| self.bytes(n) * self.sessions(n) as u64)
            .sum()
    }

    pub fn hosts(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    pub fn is_resident(&self, name: &str) -> bool {
        self.sessions(name) > 0
    }

    /// An idle session of `name` is ready for a run.
    pub fn has_idle(&self, name: &str) -> bool {
        self.idle.get(name).is_some_and(|v| !v.is_empty())
    }

    /// True when a request-guarantee app uses `name`.
    fn guaranteed_use(&self, name: &str) -> bool {
        self.users
            .get(name)
            .is_some_and(|apps| apps.iter().any(|a| self.guaranteed_apps.contains(a)))
    }

    /// True when `name` fits the budget as it is, without evicting anything.
    fn fits(&self, name: &str) -> bool {
        self.budget
            .is_none_or(|b| self.used() + self.bytes(name) <= b)
    }

    pub fn loading(&self) -> Option<&str> {
        self.loading.as_deref()
    }

    /// Free memory for `bytes` more by evicting idle sessions: first the extra sessions
    /// of models that have several, then whole models, the one wanted furthest ahead in
    /// `demand` (or not at all) first, least recently used first among equals — never
    /// `keep`'s only one, nor a model a request before position `before` waits for — and a
    /// request-guarantee app's model only when no other can give the room: a best-effort
    /// app that arrives on a full device does not push a guaranteed app's model out.
    /// Busy sessions cannot be evicted: the budget may be exceeded while they run.
    fn make_room(&mut self, bytes: u64, keep: &str, demand: &Demand, before: usize) {
        let Some(budget) = self.budget else { return };
        while self.used() + bytes > budget {
            let extra = self
                .lru
                .iter()
                .find(|n| self.has_idle(n) && self.sessions(n) > 1)
                .cloned();
            let victim = extra.or_else(|| {
                self.lru
                    .iter()
                    .filter(|n| {
                        n.as_str() != keep && self.has_idle(n) && !demand.wanted_before(n, before)
                    })
                    .min_by_key(|n| {
                        (
                            self.guaranteed_use(n),
                            std::cmp::Reverse(demand.first(n).unwrap_or(usize::MAX)),
                        )
                    })
                    .cloned()
            });
            let Some(victim) = victim else { return };
            if let Some(v) = self.idle.get_mut(&victim) {
                v.pop();
            }
            if !self.is_resident(&victim) {
                self.idle.remove(&victim);
                self.lru.retain(|n| *n != victim);
            }
            self.evictions += 1;
            tracing::info!(model = %victim, used_bytes = self.used(), "evicted");
        }
    }

    /// True when a load of `name` for the request at position `before` of `demand` may
    /// start now: no budget; or no idle model is wanted before it (what room the idle
    /// ones cannot give is taken from the busy ones, which may exceed the budget while
    /// they run); or it fits beside the busy sessions and the idle models wanted before
    /// it. Otherwise the load waits until those requests have run, instead of evicting
    /// a model that is needed again first.
    pub fn may_load(&self, name: &str, demand: &Demand, before: usize) -> bool {
        let Some(budget) = self.budget else {
            return true;
        };
        let busy: u64 = self
            .busy
            .iter()
            .map(|(n, k)| self.bytes(n) * *k as u64)
            .sum();
        let wanted: u64 = self
            .idle
            .iter()
            .filter(|(n, v)| {
                !v.is_empty()
                    && n.as_str() != name
                    && !self.busy.contains_key(*n)
                    && demand.wanted_before(n, before)
            })
            .map(|(n, _)| self.bytes(n))
            .sum();
        wanted == 0 || wanted + busy + self.bytes(name) <= budget
    }

    fn touch(&mut self, name: &str) {
        self.lru.retain(|n| n != name);
        self.lru.push(name.to_string());
    }

    /// Takes a finished load in (making room for it as `demand` allows: models wanted
    /// before the first request for it stay); the error is the load's.
    pub fn accept_loaded(
        &mut self,
        (name, result, took): Loaded,
        demand: &Demand,
    ) -> Result<(), String> {
        self.loading = None;
        if self.loading_generation != self.generation && result.is_ok() {
            // Requested before the threads changed: load it again when it is needed.
            tracing::info!(model = %name, "dropped a session made with the old threads");
            return Ok(());
        }
        let model = result.inspect_err(|_| {
            self.failed.insert(name.clone());
        })?;
        self.failed.remove(&name);
        if !self.models.contains_key(&name) {
            // Its last app left while it loaded.
            return Ok(());
        }
        if self.is_resident(&name) && !self.fits(&name) {
            // Another session of a resident model is never worth an eviction.
            return Ok(());
        }
        if model.loaded_bytes() > model.file_bytes() {
            self.grown
                .insert(name.clone(), (model.loaded_bytes(), model.file_bytes()));
            if self.winograd_outgrew_the_budget(&name, &model) {
                // the budget is the user's word on memory: speed gives way
                self.grown.remove(&name);
                if let Some(m) = self.models.get_mut(&name) {
                    m.winograd = false;
                }
                tracing::info!(model = %name, loaded_bytes = model.loaded_bytes(), budget = ?self.budget, "Winograd's weights outgrow the budget: loading the model again without them");
                self.load(&name);
                return Ok(());
            }
        }
        let before = demand.first(&name).unwrap_or(usize::MAX);
        self.make_room(self.bytes(&name), &name, demand, before);
        let (rewrites, nodes_pruned, native_tail, shared_arena) = (
            model.rewrites(),
            model.nodes_pruned(),
            model.native_tail(),
            model.shared_arena(),
        );
        self.idle
            .entry(name.clone())
            .or_default()
            .push(IdleSession {
                model,
                generation: self.generation,
                last_executor: None,
            });
        self.touch(&name);
        self.loads += 1;
        self.load_ns += took.as_nanos() as u64;
        tracing::info!(model = %name, load_ms = took.as_secs_f64() * 1e3, used_bytes = self.used(), sessions = self.sessions(&name), generation = self.generation, %rewrites, nodes_pruned, ?native_tail, shared_arena, "loaded");
        Ok(())
    }

    /// Starts loading `name` unless it is resident or a load is in flight; true when a
    /// load started.
    pub fn prefetch(&mut self, name: &str) -> bool {
        if self.is_resident(name) {
            return false;
        }
        self.load(name)
    }

    /// Starts loading a session of `name` (another one when it is resident) unless a
    /// load is in flight; true when a load started.
    fn load(&mut self, name: &str) -> bool {
        if self.loading.is_some() {
            return false;
        }
        let Some(m) = self.models.get(name) else {
            return false;
        };
        if self.loader.send(m.clone()).is_err() {
            return false;
        }
        self.loading = Some(name.to_string());
        self.loading_generation = self.generation;
        true
    }

    /// The budget holds one session of every hosted model at once.
    fn holds_every_model(&self) -> bool {
        let firsts: u64 = self.models.values().map(|m| m.bytes).sum();
        self.budget.is_none_or(|b| firsts <= b)
    }

    /// True when one more session of `name`, resident already, fits the budget beside
    /// one session of every hosted model: extra sessions never take the room a model's
    /// first one needs (under a tight budget they would be loaded and evicted turn after
    /// turn).
    fn extra_fits(&self, name: &str) -> bool {
        self.budget.is_none_or(|b| {
            let firsts: u64 = self.models.values().map(|m| m.bytes).sum();
            let extras: u64 = self
                .models
                .keys()
                .map(|n| self.bytes(n) * self.sessions(n).saturating_sub(1) as u64)
                .sum();
            firsts + extras + self.bytes(name) <= b
        })
    }

    /// When nothing is loading: starts loading, in the order the agent was given the
    /// models, the first that has fewer sessions than the round (first one session of
    /// every model, then a second of every model, … up to the executors), did not fail
    /// to load, and fits the budget without evicting anything (an extra session: beside
    /// one session of every hosted model), so that sessions are ready before requests
    /// need them. Under a budget that cannot hold one session of every hosted model,
    /// only until the first eviction: from then on what fits beside the resident models
    /// is room a request's model needs next, and a model loaded ahead into it would be
    /// evicted unused (loads and evictions turn after turn); models load on demand.
    pub fn prefetch_idle(&mut self, order: &[String]) {
        if self.loading.is_some() || (self.evictions > 0 && !self.holds_every_model()) {
            return;
        }
        for round in 1..=self.instances {
            let next = order.iter().find(|n| {
                self.hosts(n)
                    && self.sessions(n) < round
                    && !self.failed.contains(*n)
                    && self.fits(n)
                    && (round == 1 || self.extra_fits(n))
            });
            if let Some(name) = next {
                let name = name.clone();
                self.load(&name);
                return;
            }
        }
    }

    /// An idle session of `name` for executor thread `executor` ([`session_for`]), now
    /// busy, with its generation.
    pub fn checkout(&mut self, name: &str, executor: usize) -> Option<(Model, u64)> {
        let idle = self.idle.get_mut(name)?;
        let session = idle.remove(session_for(idle, |s| s.last_executor, executor)?);
        *self.busy.entry(name.to_string()).or_default() += 1;
        self.touch(name);
        Some((session.model, session.generation))
    }

    /// A session back from an executor (the thread that ran it; none: it did not run),
    /// idle again (dropped if it was made with threads that changed since, or its model is
    /// no longer hosted).
    pub fn checkin(&mut self, name: &str, model: Model, generation: u64, executor: Option<usize>) {
        if let Some(n) = self.busy.get_mut(name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.busy.remove(name);
            }
        }
        if generation == self.generation && self.models.contains_key(name) {
            self.idle
                .entry(name.to_string())
                .or_default()
                .push(IdleSession {
                    model,
                    generation,
                    last_executor: executor,
                });
        }
        if !self.is_resident(name) {
            self.idle.remove(name);
        }
    }

    /// App `app` uses `models` from now on. A model of the same name is shared (loaded
    /// once) when it is the same file answering the same outputs; another file, or the same
    /// file with other outputs (the manifest's `outputs` or `output_head`), under a name
    /// already hosted is an error naming both apps: one session cannot answer both. The
    /// models of a `guaranteed` app are evicted only when no best-effort app's can give room.
    pub fn add_models(
        &mut self,
        app: &str,
        models: Vec<AgentModel>,
        guaranteed: bool,
    ) -> Result<(), String> {
        for m in &models {
            let Some(have) = self.models.get(&m.name) else {
                continue;
            };
            let other = self
                .users
                .get(&m.name)
                .and_then(|u| u.iter().next().cloned())
                .unwrap_or_else(|| "the agent's own".into());
            if have.path != m.path {
                return Err(format!(
                    "model '{}' of app '{app}' is {}, but app '{other}' runs {} under that name on this device; rename one of them in its manifest",
                    m.name, m.path, have.path
                ));
            }
            if have.top1_outputs != m.top1_outputs || have.outputs != m.outputs {
                let says = |x: &AgentModel| {
                    format!(
                        "outputs [{}], {}",
                        x.outputs.join(", "),
                        if x.top1_outputs {
                            "top-1 head"
                        } else {
                            "full outputs"
                        }
                    )
                };
                return Err(format!(
                    "model '{}' of app '{app}' ({}) is hosted for app '{other}' with other outputs ({}) on this device; give one of them another name in its manifest",
                    m.name,
                    says(m),
                    says(have)
                ));
            }
        }
        for m in models {
            self.users
                .entry(m.name.clone())
                .or_default()
                .insert(app.to_string());
            self.models.entry(m.name.clone()).or_insert(m);
        }
        if guaranteed {
            self.guaranteed_apps.insert(app.to_string());
        } else {
            self.guaranteed_apps.remove(app);
        }
        Ok(())
    }

    /// App `app` has left: the models only it used are no longer hosted (unloaded when
    /// idle; the busy one when it comes back). Returns their names.
    pub fn remove_app(&mut self, app: &str) -> Vec<String> {
        self.guaranteed_apps.remove(app);
        let mut gone = Vec::new();
        self.users.retain(|name, apps| {
            apps.remove(app);
            if apps.is_empty() {
                gone.push(name.clone());
            }
            !apps.is_empty()
        });
        for name in &gone {
            self.models.remove(name);
            self.idle.remove(name);
            self.lru.retain(|n| n != name);
            self.failed.remove(name);
        }
        gone
    }

    /// The device memory resident models may use from now on (none = unlimited).
    pub fn set_budget(&mut self, budget: Option<u64>) {
        self.budget = budget;
    }

    /// The intra-op threads changed (the loader uses the new count from its next load):
    /// drop every idle session now and the busy one when it comes back, so each model is
    /// created again — ahead of its requests where it fits the budget, else on demand.
    pub fn renew_sessions(&mut self) {
        self.generation += 1;
        self.idle.clear();
        self.failed.clear();
    }
}

#[cfg(test)]
#[path = "residency_tests.rs"]
mod tests;
