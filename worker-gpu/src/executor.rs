//! The agent's executor thread: it runs one model session at a time and hands the
//! session back with the outputs, so that the agent's own thread keeps serving its
//! inbox, and copying the next request's inputs and the last one's outputs, while a
//! model runs.

use protocol::messages::AgentRequest;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vision::{Model, TensorF32};

/// One run: the session (checked out of the residency), its batched input, the request.
pub struct Job {
    pub model: Model,
    pub input: TensorF32,
    pub req: AgentRequest,
}

/// A finished run: the job back (its session to check in) and the outputs.
pub struct Done {
    pub job: Job,
    pub result: Result<Vec<TensorF32>, String>,
    pub took: Duration,
}

pub struct Executor {
    jobs: mpsc::Sender<Job>,
    busy: bool,
}

impl Executor {
    /// Starts the executor thread; each finished run goes to `done`, wrapped by `wrap`
    /// (so that the agent waits on one channel for everything).
    pub fn start<W: Send + 'static>(
        done: mpsc::Sender<W>,
        wrap: fn(Done) -> W,
    ) -> Result<Executor, String> {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("executor".into())
            .spawn(move || {
                for mut job in rx {
                    let started = Instant::now();
                    let result = job
                        .model
                        .run(std::slice::from_ref(&job.input))
                        .map_err(|e| e.to_string());
                    let took = started.elapsed();
                    if done.send(wrap(Done { job, result, took })).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the executor thread: {e}"))?;
        Ok(Executor { jobs, busy: false })
    }

    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Hands `job` to the executor; the job back if its thread is gone.
    pub fn submit(&mut self, job: Job) -> Result<(), Box<Job>> {
        self.jobs
            .send(job)
            .map_err(|mpsc::SendError(job)| Box::new(job))?;
        self.busy = true;
        Ok(())
    }

    /// The executor reported its run.
    pub fn finished(&mut self) {
        self.busy = false;
    }
}
