//! The agent's executor pool: `n` threads, each running one job at a time (on `cpu:0`
//! one model session with one intra-op thread), so that several requests — of
//! different models, or of one stage's pyramid levels — run at once while the agent's
//! own thread keeps serving its inbox and writing outputs back. A job goes to a
//! thread the agent names (so that it can hand that thread the session it ran last, see
//! [`crate::residency::session_for`]). Each finished job is handed back (its session to
//! check in) with its result and its thread; a job that fails, or panics, is reported
//! like any other and frees its thread.

use crate::tensors::RunInput;
use protocol::messages::AgentRequest;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vision::{Model, TensorF32};

/// Work an executor thread runs.
pub trait Work: Send + 'static {
    fn work(&mut self) -> Result<Vec<TensorF32>, String>;
}

/// One run: the session (checked out of the residency, of `generation`), its input (read
/// in place in the stage's slot, or batched), the request.
pub struct Job {
    pub model: Model,
    pub generation: u64,
    pub input: RunInput,
    pub req: AgentRequest,
}

impl Work for Job {
    fn work(&mut self) -> Result<Vec<TensorF32>, String> {
        let Job { model, input, .. } = self;
        input.read(|view| model.run_one(view).map_err(|e| e.to_string()))?
    }
}

/// A finished run: the job back, the outputs and the thread that ran it.
pub struct Done<J = Job> {
    pub job: J,
    pub result: Result<Vec<TensorF32>, String>,
    pub took: Duration,
    pub executor: usize,
}

pub struct Executor<J: Work = Job> {
    /// Each thread's job queue (it holds at most the one job it runs).
    jobs: Vec<mpsc::Sender<J>>,
    /// Which threads run a job now.
    busy: Vec<bool>,
}

impl<J: Work> Executor<J> {
    /// Starts `size` (at least one) executor threads; each finished run goes to `done`,
    /// wrapped by `wrap` (so that the agent waits on one channel for everything).
    pub fn start<W: Send + 'static>(
        size: usize,
        done: mpsc::Sender<W>,
        wrap: fn(Done<J>) -> W,
    ) -> Result<Executor<J>, String> {
        let size = size.max(1);
        let mut jobs = Vec::with_capacity(size);
        for executor in 0..size {
            let (tx, rx) = mpsc::channel::<J>();
            let done = done.clone();
            std::thread::Builder::new()
                .name(format!("executor-{executor}"))
                .spawn(move || {
                    while let Ok(mut job) = rx.recv() {
                        let started = Instant::now();
                        let result = std::panic::catch_unwind(AssertUnwindSafe(|| job.work()))
                            .unwrap_or_else(|_| Err("the model run panicked".to_string()));
                        let took = started.elapsed();
                        let done_job = Done {
                            job,
                            result,
                            took,
                            executor,
                        };
                        if done.send(wrap(done_job)).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| format!("cannot start executor thread {executor}: {e}"))?;
            jobs.push(tx);
        }
        Ok(Executor {
            busy: vec![false; jobs.len()],
            jobs,
        })
    }

    /// Runs in progress.
    pub fn busy(&self) -> usize {
        self.busy.iter().filter(|&&b| b).count()
    }

    /// Executor threads in all.
    pub fn size(&self) -> usize {
        self.jobs.len()
    }

    /// An executor thread is free for a job.
    pub fn free(&self) -> bool {
        self.next_free().is_some()
    }

    /// The free thread the next job goes to (the lowest-numbered one).
    pub fn next_free(&self) -> Option<usize> {
        self.busy.iter().position(|&b| !b)
    }

    /// Hands `job` to thread `executor` ([`Executor::next_free`]); the job back if that
    /// thread is gone or busy.
    pub fn submit(&mut self, executor: usize, job: J) -> Result<(), Box<J>> {
        if self.busy.get(executor) != Some(&false) {
            return Err(Box::new(job));
        }
        self.jobs[executor]
            .send(job)
            .map_err(|mpsc::SendError(job)| Box::new(job))?;
        self.busy[executor] = true;
        Ok(())
    }

    /// Thread `executor` reported its run.
    pub fn finished(&mut self, executor: usize) {
        if let Some(b) = self.busy.get_mut(executor) {
            *b = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that reports it started, then waits for `go` before it finishes.
    struct Probe {
        name: &'static str,
        started: mpsc::Sender<&'static str>,
        go: Option<mpsc::Receiver<()>>,
        fail: bool,
    }

    impl Work for Probe {
        fn work(&mut self) -> Result<Vec<TensorF32>, String> {
            let _ = self.started.send(self.name);
            if let Some(go) = &self.go {
                go.recv_timeout(Duration::from_secs(30))
                    .map_err(|_| format!("{} was never released", self.name))?;
            }
            if self.fail {
                panic!("{} fails", self.name);
            }
            Ok(vec![])
        }
    }

    fn probe(
        name: &'static str,
        started: &mpsc::Sender<&'static str>,
        fail: bool,
    ) -> (Probe, mpsc::Sender<()>) {
        let (go_tx, go) = mpsc::channel();
        let p = Probe {
            name,
            started: started.clone(),
            go: Some(go),
            fail,
        };
        (p, go_tx)
    }

    #[test]
    fn two_jobs_run_at_the_same_time_and_a_third_waits_for_a_free_thread() {
        let (done_tx, done) = mpsc::channel::<Done<Probe>>();
        let mut ex = Executor::start(2, done_tx, |d| d).expect("executors");
        let (started_tx, started) = mpsc::channel();
        let (a, go_a) = probe("pnet", &started_tx, false);
        let (b, go_b) = probe("rnet", &started_tx, false);
        assert_eq!(ex.next_free(), Some(0));
        ex.submit(0, a).map_err(|_| "submit").expect("a");
        assert_eq!(ex.next_free(), Some(1));
        ex.submit(1, b).map_err(|_| "submit").expect("b");
        assert!(!ex.free() && ex.next_free().is_none());
        // Both started while neither has been released: they run at once.
        let mut first = [
            started
                .recv_timeout(Duration::from_secs(30))
                .expect("one runs"),
            started
                .recv_timeout(Duration::from_secs(30))
                .expect("the other runs beside it"),
        ];
        first.sort();
        assert_eq!(first, ["pnet", "rnet"]);
        // A busy thread takes no second job: it comes back.
        let (c, go_c) = probe("onet", &started_tx, false);
        let c = *ex.submit(0, c).expect_err("thread 0 is busy");
        assert!(started.try_recv().is_err());
        go_b.send(()).expect("release rnet");
        let d = done
            .recv_timeout(Duration::from_secs(30))
            .expect("rnet ends");
        assert_eq!((d.job.name, d.executor), ("rnet", 1));
        ex.finished(d.executor);
        assert_eq!(ex.next_free(), Some(1));
        ex.submit(1, c).map_err(|_| "submit").expect("c");
        assert_eq!(
            started.recv_timeout(Duration::from_secs(30)).expect("onet"),
            "onet"
        );
        go_a.send(()).expect("release");
        go_c.send(()).expect("release");
        let mut ran_on = Vec::new();
        for _ in 0..2 {
            let d = done.recv_timeout(Duration::from_secs(30)).expect("ends");
            ran_on.push((d.job.name, d.executor));
            ex.finished(d.executor);
        }
        ran_on.sort();
        assert_eq!(ran_on, [("onet", 1), ("pnet", 0)]);
        assert_eq!(ex.busy(), 0);
    }

    #[test]
    fn a_failing_job_is_reported_and_does_not_stall_the_others() {
        let (done_tx, done) = mpsc::channel::<Done<Probe>>();
        // One thread: the panicking job must leave it able to run the next one.
        let mut ex = Executor::start(1, done_tx, |d| d).expect("executor");
        let (started_tx, _started) = mpsc::channel();
        let (bad, go_bad) = probe("broken", &started_tx, true);
        let (good, go_good) = probe("good", &started_tx, false);
        ex.submit(0, bad).map_err(|_| "submit").expect("bad");
        go_bad.send(()).expect("release");
        let d = done
            .recv_timeout(Duration::from_secs(30))
            .expect("reported");
        ex.finished(d.executor);
        assert_eq!(d.job.name, "broken");
        assert!(d.result.unwrap_err().contains("panicked"));
        ex.submit(0, good).map_err(|_| "submit").expect("good");
        go_good.send(()).expect("release");
        let d = done.recv_timeout(Duration::from_secs(30)).expect("runs");
        assert_eq!(d.job.name, "good");
        assert!(d.result.is_ok());
    }
}
