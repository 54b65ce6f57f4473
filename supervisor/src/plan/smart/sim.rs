//! Discrete-event simulation of the DAG under one configuration, to check the analytic
//! model (`model.rs`).
//!
//! What it simulates: heads emit items (Poisson or periodic, deterministic seed); every
//! other stage has `replicas` servers, each with its own inbox fed round robin (one
//! counter per consuming stage); a replica takes the first item, then waits at most
//! `max_wait` for up to `batch` items (the stages' greedy batcher), and serves the batch
//! in t(b) times a lognormal noise of mean 1 and the profile's coefficient of variation,
//! part of which (the profile's path loading) follows a factor drawn once per item, so
//! that an item slow at one stage is slow at the others too.
//! GPU stages hand their batches to one shared device, which serves them FIFO while the
//! replica waits. The work of CPU stages, tails and (on `cpu:0`) the device shares the
//! granted cores by processor sharing (`sim_cpu.rs`): the contention the analytic model
//! approximates. A stage with several inputs joins items by (source, seq). Best-effort
//! (`Workload::shed`) drops an item at its head when `queue_bound` of that head's items
//! are in flight (as a source whose pool is full does) and counts it lost; queues between
//! stages are unbounded (the stages wait for a slot rather than shed), and so are
//! request-guarantee ones (backpressure on the sources is not simulated, so keep
//! guarantee runs stable). Unprofiled stages take no time.

use super::model::{Arrivals, Model, ModelError, StageConfig};
use super::sim_cpu::{Cores, Holder};
use protocol::spec::TaskKind;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    /// Simulated seconds of arrivals.
    pub duration_s: f64,
    /// Items emitted before this are not measured.
    pub warmup_s: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            duration_s: 120.0,
            warmup_s: 10.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimResult {
    pub emitted: u64,
    pub completed: u64,
    pub lost: u64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub jitter_ms: f64,
    pub loss_pct: f64,
    /// Mean batch size per stage (1 for unprofiled stages).
    pub mean_batch: Vec<f64>,
    /// Busy fraction per stage (service time / (replicas × duration)).
    pub utilisation: Vec<f64>,
}

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.uniform().ln()
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Lognormal with mean 1 and coefficient of variation `cv`.
    pub fn lognormal1(&mut self, cv: f64) -> f64 {
        if cv <= 0.0 {
            return 1.0;
        }
        let s2 = (1.0 + cv * cv).ln();
        (-s2 / 2.0 + s2.sqrt() * self.normal()).exp()
    }
}

#[derive(Debug, Clone, Copy)]
struct Item {
    head: usize,
    seq: u64,
    t0: f64,
    /// The item's own factor (standard normal), shared by its stages' service times as far
    /// as their profiles' path loadings say.
    u: f64,
}

/// Service-time factor of a batch: lognormal with mean 1 and the profile's cv. Its shared
/// part (log-scale sd `shared_sigma`) follows the mean of the batch items' factors, the
/// rest is drawn afresh.
fn service_noise(rng: &mut Rng, cv: f64, shared_sigma: f64, items: &[Item]) -> f64 {
    if shared_sigma <= 0.0 || items.is_empty() || cv <= 0.0 {
        return rng.lognormal1(cv);
    }
    let s2 = (1.0 + cv * cv).ln();
    let shared = shared_sigma.min(s2.sqrt());
    let own2 = (s2 - shared * shared).max(0.0);
    let n = items.len() as f64;
    let mean_u = items.iter().map(|i| i.u).sum::<f64>() / n;
    let var = shared * shared / n + own2;
    (-var / 2.0 + shared * mean_u + own2.sqrt() * rng.normal()).exp()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Arrival(usize),
    Deadline(usize, usize, u64),
    /// A job on the cores came due (ignored unless `version` is still current).
    CpuDone(Holder, u64),
    /// A batch on a CUDA device finished (on executor k).
    DeviceDone(usize),
}

#[derive(Debug, Clone, Copy)]
struct Timed(f64, u64, Ev);
impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    // Reversed: BinaryHeap is a max-heap, we want the earliest event.
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(o.1.cmp(&self.1))
    }
}

#[derive(Debug, Default)]
struct Rep {
    inbox: VecDeque<Item>,
    batch: Vec<Item>,
    collecting: bool,
    busy: bool,
    token: u64,
}

struct Sim<'a> {
    m: &'a Model,
    cfg: &'a [StageConfig],
    sc: SimConfig,
    rng: Rng,
    /// Draws the items' own factors (a stream of its own, so that the service noise is
    /// drawn as before when no stage shares variability).
    item_rng: Rng,
    now: f64,
    seq: u64,
    events: BinaryHeap<Timed>,
    reps: Vec<Vec<Rep>>,
    rr: Vec<usize>,
    joins: Vec<HashMap<(usize, u64), usize>>,
    need: Vec<Vec<usize>>,
    tails_of_head: Vec<usize>,
    done_tails: HashMap<(usize, u64), usize>,
    device_q: VecDeque<(usize, usize, f64)>,
    /// What each of the device's executors runs (one on CUDA; on `cpu:0` the agent's
    /// executor threads, each running one batch at a time).
    device_busy: Vec<Option<(usize, usize)>>,
    cores: Cores,
    lost: HashSet<(usize, u64)>,
    latencies: Vec<f64>,
    emitted: u64,
    completed_in_window: u64,
    batches: Vec<(u64, u64)>,
    busy: Vec<f64>,
    next_seq: Vec<u64>,
    /// Per head: items emitted and not yet at every tail.
    in_flight: Vec<u64>,
}

impl Sim<'_> {
    fn at(&mut self, t: f64, e: Ev) {
        self.seq += 1;
        self.events.push(Timed(t, self.seq, e));
    }

    fn measured(&self, it: &Item) -> bool {
        it.t0 >= self.sc.warmup_s
    }

    fn deliver(&mut self, it: Item, i: usize) {
        let st = &self.m.dag.stages[i];
        if st.inputs.len() > 1 {
            let need = self.need[i][it.head];
            let e = self.joins[i].entry((it.head, it.seq)).or_insert(0);
            *e += 1;
            if *e < need {
                return;
            }
            self.joins[i].remove(&(it.head, it.seq));
        }
        if self.m.profiles[i].is_none() {
            self.forward(it, i);
            return;
        }
        let c = self.reps[i].len();
        let r = self.rr[i] % c;
        self.rr[i] += 1;
        self.reps[i][r].inbox.push_back(it);
        self.try_start(i, r);
    }

    fn try_start(&mut self, i: usize, r: usize) {
        let b = self.cfg[i].batch.max(1) as usize;
        let w = self.cfg[i].max_wait_ms.max(0.0) / 1000.0;
        let rep = &mut self.reps[i][r];
        if rep.busy {
            return;
        }
        let starting = !rep.collecting;
        if starting && rep.inbox.is_empty() {
            return;
        }
        while rep.batch.len() < b {
            match rep.inbox.pop_front() {
                Some(it) => rep.batch.push(it),
                None => break,
            }
        }
        if rep.batch.len() >= b || (starting && w <= 0.0) {
            self.start_service(i, r);
        } else if starting {
            rep.collecting = true;
            rep.token += 1;
            let tok = rep.token;
            self.at(self.now + w, Ev::Deadline(i, r, tok));
        }
    }

    fn start_service(&mut self, i: usize, r: usize) {
        let rep = &mut self.reps[i][r];
        rep.collecting = false;
        rep.busy = true;
        let n = rep.batch.len().max(1);
        self.batches[i].0 += 1;
        self.batches[i].1 += n as u64;
        let m = self.m;
        let Some(p) = &m.profiles[i] else { return };
        let noise = service_noise(&mut self.rng, p.cv, p.shared_sigma, &self.reps[i][r].batch);
        let d = p.t(n as f64, self.cfg[i].threads) * noise;
        self.busy[i] += d;
        match self.m.dag.stages[i].kind {
            TaskKind::Gpu => {
                self.device_q.push_back((i, r, d));
                self.start_device();
            }
            kind => {
                let threads = if kind == TaskKind::Cpu {
                    self.cfg[i].threads
                } else {
                    1
                };
                self.cores
                    .start(self.now, Holder::Replica(i, r), d, threads);
                self.reschedule();
            }
        }
    }

    /// Completion events for every job on the cores at their current speed.
    fn reschedule(&mut self) {
        let v = self.cores.version;
        for (t, h) in self.cores.due() {
            self.at(t, Ev::CpuDone(h, v));
        }
    }

    fn start_device(&mut self) {
        while let Some(k) = self.device_busy.iter().position(Option::is_none) {
            let Some((i, r, d)) = self.device_q.pop_front() else {
                return;
            };
            self.device_busy[k] = Some((i, r));
            if self.m.resources.gpu {
                self.at(self.now + d, Ev::DeviceDone(k));
            } else {
                // On `cpu:0` a batch is CPU work of the agent's intra-op threads.
                let threads = self.m.resources.device_threads(self.cfg[i].threads);
                self.cores.start(self.now, Holder::Device(k), d, threads);
                self.reschedule();
            }
        }
    }

    fn device_done(&mut self, k: usize) {
        if let Some((i, r)) = self.device_busy.get_mut(k).and_then(Option::take) {
            self.done(i, r);
        }
        self.start_device();
    }

    fn done(&mut self, i: usize, r: usize) {
        let batch = std::mem::take(&mut self.reps[i][r].batch);
        self.reps[i][r].busy = false;
        for it in batch {
            self.forward(it, i);
        }
        self.try_start(i, r);
    }

    fn forward(&mut self, it: Item, i: usize) {
        let outs = self.m.dag.stages[i].outputs.clone();
        if outs.is_empty() {
            let need = self.tails_of_head[it.head];
            let e = self.done_tails.entry((it.head, it.seq)).or_insert(0);
            *e += 1;
            if *e >= need {
                self.done_tails.remove(&(it.head, it.seq));
                self.in_flight[it.head] = self.in_flight[it.head].saturating_sub(1);
                if self.now >= self.sc.warmup_s && self.now <= self.sc.duration_s {
                    self.completed_in_window += 1;
                }
                if self.measured(&it) && it.t0 <= self.sc.duration_s {
                    self.latencies.push(self.now - it.t0);
                }
            }
            return;
        }
        for o in outs {
            self.deliver(it, o);
        }
    }

    fn arrival(&mut self, h: usize) {
        let seq = self.next_seq[h];
        self.next_seq[h] += 1;
        let it = Item {
            head: h,
            seq,
            t0: self.now,
            u: self.item_rng.normal(),
        };
        if self.measured(&it) {
            self.emitted += 1;
        }
        let bound = u64::from(self.m.workload.queue_bound.max(1));
        if self.m.workload.shed && self.in_flight[h] >= bound {
            if self.measured(&it) {
                self.lost.insert((it.head, it.seq));
            }
        } else {
            self.in_flight[h] += 1;
            // The head itself serves the item first (drawing, decoding, writing its
            // slot): its time counts in the item's latency.
            self.deliver(it, h);
        }
        let lam = self.m.stage_rate(h);
        let gap = match self.m.workload.arrivals {
            Arrivals::Poisson => self.rng.exp(1.0 / lam),
            Arrivals::Periodic => 1.0 / lam,
        };
        if self.now + gap <= self.sc.duration_s {
            self.at(self.now + gap, Ev::Arrival(h));
        }
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

impl Sim<'_> {
    /// Runs the events until none is left.
    fn run(&mut self) {
        while let Some(Timed(t, _, e)) = self.events.pop() {
            self.now = t;
            match e {
                Ev::Arrival(h) => self.arrival(h),
                Ev::Deadline(i, r, tok) => {
                    if self.reps[i][r].collecting && self.reps[i][r].token == tok {
                        self.start_service(i, r);
                    }
                }
                Ev::CpuDone(h, v) => {
                    if v != self.cores.version {
                        continue;
                    }
                    self.cores.finish(self.now, h);
                    self.reschedule();
                    match h {
                        Holder::Replica(i, r) => self.done(i, r),
                        Holder::Device(k) => self.device_done(k),
                    }
                }
                Ev::DeviceDone(k) => self.device_done(k),
            }
        }
    }

    /// What the run measured.
    fn result(&mut self) -> SimResult {
        let mut lat = std::mem::take(&mut self.latencies);
        lat.sort_by(f64::total_cmp);
        let k = lat.len().max(1) as f64;
        let mean = lat.iter().sum::<f64>() / k;
        let var = lat.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k;
        let window = (self.sc.duration_s - self.sc.warmup_s).max(1e-9);
        let lost = self.lost.len() as u64;
        SimResult {
            emitted: self.emitted,
            completed: lat.len() as u64,
            lost,
            throughput_per_s: self.completed_in_window as f64 / window,
            p50_ms: quantile(&lat, 0.5) * 1000.0,
            p99_ms: quantile(&lat, 0.99) * 1000.0,
            mean_ms: mean * 1000.0,
            jitter_ms: var.sqrt() * 1000.0,
            loss_pct: if self.emitted > 0 {
                lost as f64 * 100.0 / self.emitted as f64
            } else {
                0.0
            },
            mean_batch: self
                .batches
                .iter()
                .map(|&(nb, ni)| if nb > 0 { ni as f64 / nb as f64 } else { 1.0 })
                .collect(),
            utilisation: self
                .busy
                .iter()
                .zip(self.cfg)
                .map(|(b, c)| b / (f64::from(c.replicas.max(1)) * self.sc.duration_s.max(1e-9)))
                .collect(),
        }
    }
}

/// Simulates `cfg` on the model's DAG, profiles and workload.
pub fn simulate(m: &Model, cfg: &[StageConfig], sc: SimConfig) -> Result<SimResult, ModelError> {
    let n = m.dag.stages.len();
    if cfg.len() != n {
        return Err(ModelError::ConfigCount {
            expected: n,
            got: cfg.len(),
        });
    }
    let need: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|h| {
                    m.dag.stages[i]
                        .inputs
                        .iter()
                        .filter(|&&j| m.dag.heads_of[j].contains(&h))
                        .count()
                })
                .collect()
        })
        .collect();
    let tails_of_head: Vec<usize> = (0..n)
        .map(|h| {
            (0..n)
                .filter(|&t| m.dag.stages[t].outputs.is_empty() && m.dag.heads_of[t].contains(&h))
                .count()
                .max(1)
        })
        .collect();
    let mut s = Sim {
        m,
        cfg,
        sc,
        rng: Rng::new(sc.seed),
        item_rng: Rng::new(sc.seed ^ 0x5EED_17E5),
        now: 0.0,
        seq: 0,
        events: BinaryHeap::new(),
        reps: (0..n)
            .map(|i| {
                (0..cfg[i].replicas.max(1))
                    .map(|_| Rep::default())
                    .collect()
            })
            .collect(),
        rr: vec![0; n],
        joins: vec![HashMap::new(); n],
        need,
        tails_of_head,
        done_tails: HashMap::new(),
        device_q: VecDeque::new(),
        device_busy: vec![None; m.resources.device_executors() as usize],
        cores: Cores::new(m.resources.cpu_cores),
        lost: HashSet::new(),
        latencies: Vec::new(),
        emitted: 0,
        completed_in_window: 0,
        batches: vec![(0, 0); n],
        busy: vec![0.0; n],
        next_seq: vec![0; n],
        in_flight: vec![0; n],
    };
    for h in m.dag.heads() {
        let first = match m.workload.arrivals {
            Arrivals::Poisson => s.rng.exp(1.0 / m.stage_rate(h)),
            Arrivals::Periodic => 0.0,
        };
        s.at(first, Ev::Arrival(h));
    }
    s.run();
    Ok(s.result())
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
