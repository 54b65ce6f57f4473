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
    /// The outputs the manifest declares: runs return only these (none: every output).
    #[serde(default)]
    pub outputs: Vec<String>,
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
    let (requests, rx) = mpsc::channel::<AgentModel>();
    std::thread::Builder::new()
        .name("model-loader".into())
        .spawn(move || {
            for m in rx {
                let started = Instant::now();
                let opts = SessionOptions {
                    intra_threads: threads.load(Ordering::Relaxed).max(1),
                    ..opts.clone()
                };
                let result = Model::load(&rt, &m.name, std::path::Path::new(&m.path), &opts)
                    .and_then(|mut model| {
                        model.set_max_rows(m.max_rows);
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

pub struct Residency {
    models: HashMap<String, AgentModel>,
    idle: HashMap<String, Model>,
    /// The resident model whose session the executor holds now.
    busy: Option<String>,
    /// Most recently used last.
    lru: Vec<String>,
    budget: Option<u64>,
    /// A shared agent: which apps use each model (a model no app uses any more is
    /// unloaded). Models given at start (a one-app agent) have no entry and stay.
    users: HashMap<String, HashSet<String>>,
    loader: mpsc::Sender<AgentModel>,
    /// The model being loaded, if any (one at a time).
    loading: Option<String>,
    /// Models whose last load failed: loaded again only for a request, never ahead.
    failed: HashSet<String>,
    /// Bumped when the intra-op threads change: sessions of an older generation (the
    /// busy one, a load in flight) are dropped when they come back.
    generation: u64,
    loading_generation: u64,
    busy_generation: u64,
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
            users: HashMap::new(),
            loader,
            loading: None,
            failed: HashSet::new(),
            generation: 0,
            loading_generation: 0,
            busy_generation: 0,
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
        if self.loading_generation != self.generation && result.is_ok() {
            // Requested before the threads changed: load it again when it is needed.
            tracing::info!(model = %name, "dropped a session made with the old threads");
            return Ok(());
        }
        let model = result.inspect_err(|_| {
            self.failed.insert(name.clone());
        })?;
        self.failed.remove(&name);
        self.make_room(self.bytes(&name), &name);
        let rewrites = model.rewrites();
        self.idle.insert(name.clone(), model);
        self.touch(&name);
        self.loads += 1;
        self.load_ns += took.as_nanos() as u64;
        tracing::info!(model = %name, load_ms = took.as_secs_f64() * 1e3, used_bytes = self.used(), generation = self.generation, %rewrites, "loaded");
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
        self.loading_generation = self.generation;
        true
    }

    /// When nothing is loading: starts loading the first hosted model (in the order the
    /// agent was given them) that is not resident, did not fail to load, and fits the
    /// budget without evicting anything, so that models are ready before their first
    /// request.
    pub fn prefetch_idle(&mut self, order: &[String]) {
        if self.loading.is_some() {
            return;
        }
        if let Some(name) = order
            .iter()
            .find(|n| !self.is_resident(n) && !self.failed.contains(*n) && self.fits(n))
        {
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
        self.busy_generation = self.generation;
        self.touch(name);
        Some(model)
    }

    /// The session back from the executor, idle again (dropped if it was made with
    /// threads that changed since).
    pub fn checkin(&mut self, name: &str, model: Model) {
        if self.busy.as_deref() == Some(name) {
            self.busy = None;
        }
        // A model whose last app left while it ran is dropped now.
        if self.busy_generation == self.generation && self.models.contains_key(name) {
            self.idle.insert(name.to_string(), model);
        }
    }

    /// App `app` uses `models` from now on. A model of the same name is shared (loaded
    /// once) when it is the same file; another file under a name already hosted is an
    /// error naming both apps and files.
    pub fn add_models(&mut self, app: &str, models: Vec<AgentModel>) -> Result<(), String> {
        for m in &models {
            if let Some(have) = self.models.get(&m.name) {
                if have.path != m.path {
                    let other = self
                        .users
                        .get(&m.name)
                        .and_then(|u| u.iter().next().cloned())
                        .unwrap_or_else(|| "the agent's own".into());
                    return Err(format!(
                        "model '{}' of app '{app}' is {}, but app '{other}' runs {} under that name on this device; rename one of them in its manifest",
                        m.name, m.path, have.path
                    ));
                }
            }
        }
        for m in models {
            self.users
                .entry(m.name.clone())
                .or_default()
                .insert(app.to_string());
            self.models.entry(m.name.clone()).or_insert(m);
        }
        Ok(())
    }

    /// App `app` has left: the models only it used are no longer hosted (unloaded when
    /// idle; the busy one when it comes back). Returns their names.
    pub fn remove_app(&mut self, app: &str) -> Vec<String> {
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
mod tests {
    use super::*;
    use std::path::PathBuf;
    use vision::Provider;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The runtime, or `None` when ONNX Runtime is not provisioned and
    /// SMARTPIPE_SKIP_MODEL_TESTS=1 (as vision's model tests do).
    fn runtime() -> Option<Runtime> {
        let lib = match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => root().join(".smartpipe/lib/libonnxruntime.so.1.32.0"),
        };
        if !lib.is_file() && std::env::var("SMARTPIPE_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
            return None;
        }
        Some(Runtime::init(&lib, Provider::Cpu).expect("ONNX Runtime (run scripts/provision.sh)"))
    }

    fn model(name: &str, file: &str) -> AgentModel {
        let path = root().join(".smartpipe/models").join(file);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(1000);
        AgentModel {
            name: name.into(),
            path: path.display().to_string(),
            bytes,
            max_rows: None,
            outputs: vec![],
        }
    }

    /// Waits for the load in flight and takes it in.
    fn settle(res: &mut Residency, done: &mpsc::Receiver<Loaded>) -> Result<(), String> {
        let loaded = done
            .recv_timeout(Duration::from_secs(60))
            .expect("a load finishes");
        res.accept_loaded(loaded)
    }

    #[test]
    fn loads_ahead_within_the_budget_evicts_least_recently_used_and_skips_failures() {
        let Some(rt) = runtime() else { return };
        let (pnet, rnet) = (
            model("pnet", "mtcnn-pnet.onnx"),
            model("rnet", "mtcnn-rnet.onnx"),
        );
        let broken = AgentModel {
            name: "broken".into(),
            path: "/nonexistent/broken.onnx".into(),
            bytes: 1,
            max_rows: None,
            outputs: vec![],
        };
        // room for rnet, or pnet and the broken one, not for rnet and pnet together
        let budget = rnet.bytes + 1;
        let order: Vec<String> = ["broken", "pnet", "rnet"].map(String::from).to_vec();
        let (tx, done) = mpsc::channel();
        let threads = Arc::new(AtomicUsize::new(1));
        let loader =
            start_loader(rt, SessionOptions::default(), threads, tx, |l| l).expect("loader");
        let mut res = Residency::new(
            vec![broken, pnet.clone(), rnet.clone()],
            Some(budget),
            loader,
        );

        // ahead of requests: the broken model fails once and is not tried again ahead
        res.prefetch_idle(&order);
        assert_eq!(res.loading(), Some("broken"));
        assert!(settle(&mut res, &done).is_err());
        res.prefetch_idle(&order);
        assert_eq!(res.loading(), Some("pnet"));
        settle(&mut res, &done).expect("pnet loads");
        // rnet does not fit beside pnet: nothing more is loaded ahead
        res.prefetch_idle(&order);
        assert_eq!(res.loading(), None);
        assert_eq!(res.used(), pnet.bytes);

        // a request for rnet loads it and evicts pnet, the least recently used idle model
        assert!(res.prefetch("rnet"));
        assert!(!res.prefetch("pnet"), "one load at a time");
        settle(&mut res, &done).expect("rnet loads");
        assert!(res.is_resident("rnet") && !res.is_resident("pnet"));
        assert_eq!((res.loads, res.evictions), (2, 1));

        // a busy model is never evicted, even past the budget
        let session = res.checkout("rnet").expect("rnet is idle");
        assert!(res.checkout("rnet").is_none());
        assert!(res.prefetch("pnet"));
        settle(&mut res, &done).expect("pnet loads");
        assert!(res.is_resident("rnet") && res.is_resident("pnet"));
        assert_eq!(res.used(), pnet.bytes + rnet.bytes);
        res.checkin("rnet", session);
        assert!(res.checkout("rnet").is_some());
    }

    #[test]
    fn new_threads_renew_every_session_including_the_busy_one_and_a_load_in_flight() {
        let Some(rt) = runtime() else { return };
        let (pnet, rnet, onet) = (
            model("pnet", "mtcnn-pnet.onnx"),
            model("rnet", "mtcnn-rnet.onnx"),
            model("onet", "mtcnn-onet.onnx"),
        );
        let (tx, done) = mpsc::channel();
        let threads = Arc::new(AtomicUsize::new(2));
        let loader = start_loader(rt, SessionOptions::default(), threads.clone(), tx, |l| l)
            .expect("loader");
        let mut res = Residency::new(vec![pnet, rnet, onet], None, loader);
        for name in ["pnet", "rnet"] {
            assert!(res.prefetch(name));
            settle(&mut res, &done).expect("loads");
        }
        let busy = res.checkout("rnet").expect("rnet is idle");
        assert!(res.prefetch("onet"));
        // The threads change while rnet runs and onet loads.
        threads.store(1, Ordering::Relaxed);
        res.renew_sessions();
        assert!(
            !res.is_resident("pnet"),
            "idle sessions are dropped at once"
        );
        settle(&mut res, &done).expect("the old load ends");
        assert!(
            !res.is_resident("onet"),
            "a load requested before is not kept"
        );
        res.checkin("rnet", busy);
        assert!(
            !res.is_resident("rnet"),
            "the busy session is dropped when it returns"
        );
        assert_eq!(res.used(), 0);
        // Each is made again (with the new threads) when asked for.
        assert!(res.prefetch("rnet"));
        settle(&mut res, &done).expect("rnet loads again");
        assert!(res.is_resident("rnet"));
    }
}
