//! The simulation's cores: processor sharing of the granted cores among the jobs in
//! service (a stage replica's batch, or the agent's on `cpu:0`). Every runnable thread
//! progresses at min(1, cores ÷ runnable threads); whenever the set changes, the work
//! done so far is accounted and every job's completion is due again (older completion
//! events carry an older version and are ignored).

use std::collections::BTreeMap;

/// Who holds a job: a stage replica, or one of the device's executors (the GPU agent's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Holder {
    Replica(usize, usize),
    Device(usize),
}

#[derive(Debug, Clone, Copy)]
struct Job {
    /// Seconds of work left at full speed.
    left: f64,
    threads: u32,
}

#[derive(Debug)]
pub(crate) struct Cores {
    cores: f64,
    jobs: BTreeMap<Holder, Job>,
    /// When the work was last accounted, and the speed since.
    last: f64,
    speed: f64,
    pub(crate) version: u64,
}

impl Cores {
    pub(crate) fn new(cores: f64) -> Self {
        Cores {
            cores,
            jobs: BTreeMap::new(),
            last: 0.0,
            speed: 1.0,
            version: 0,
        }
    }

    fn account(&mut self, now: f64) {
        let dt = (now - self.last).max(0.0);
        for j in self.jobs.values_mut() {
            j.left = (j.left - dt * self.speed).max(0.0);
        }
        self.last = now;
    }

    fn respeed(&mut self) {
        let threads: u32 = self.jobs.values().map(|j| j.threads).sum();
        self.speed = if f64::from(threads) <= self.cores || threads == 0 {
            1.0
        } else {
            self.cores / f64::from(threads)
        };
        self.version += 1;
    }

    /// Starts a job of `work` seconds on `threads` threads at `now`.
    pub(crate) fn start(&mut self, now: f64, holder: Holder, work: f64, threads: u32) {
        self.account(now);
        self.jobs.insert(
            holder,
            Job {
                left: work,
                threads: threads.max(1),
            },
        );
        self.respeed();
    }

    /// Ends `holder`'s job at `now` (its completion came due).
    pub(crate) fn finish(&mut self, now: f64, holder: Holder) {
        self.account(now);
        self.jobs.remove(&holder);
        self.respeed();
    }

    /// Completion times of every job at the current speed, for the current version.
    pub(crate) fn due(&self) -> Vec<(f64, Holder)> {
        self.jobs
            .iter()
            .map(|(h, j)| (self.last + j.left / self.speed, *h))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_jobs_on_one_core_share_it() {
        let mut c = Cores::new(1.0);
        c.start(0.0, Holder::Replica(0, 0), 1.0, 1);
        assert_eq!(c.due(), vec![(1.0, Holder::Replica(0, 0))]);
        c.start(0.5, Holder::Replica(1, 0), 1.0, 1);
        // Half done; from now on each runs at half speed.
        let due = c.due();
        assert!((due[0].0 - 1.5).abs() < 1e-12 && (due[1].0 - 2.5).abs() < 1e-12);
        c.finish(1.5, Holder::Replica(0, 0));
        // The second did 0.5 s of work at half speed; 0.5 s left at full speed.
        assert!((c.due()[0].0 - 2.0).abs() < 1e-12);
    }

    #[test]
    fn jobs_that_fit_the_cores_run_at_full_speed() {
        let mut c = Cores::new(2.0);
        c.start(0.0, Holder::Device(0), 1.0, 1);
        c.start(0.0, Holder::Replica(3, 1), 2.0, 1);
        let v = c.version;
        let due = c.due();
        assert_eq!(due.len(), 2);
        assert!(due.contains(&(1.0, Holder::Device(0))));
        c.start(0.0, Holder::Replica(4, 0), 1.0, 2);
        assert!(c.version > v);
        assert!(c.due().iter().all(|(t, _)| *t > 1.0));
    }
}
