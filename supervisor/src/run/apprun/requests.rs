//! What the control API asks of a running app: a restart of a task's replicas, a new
//! request rate for its sources, new intra-op threads for its agent.

use super::AppRun;
use protocol::messages::*;
use protocol::spec::TaskKind;

impl AppRun<'_> {
    /// Pace every head at `items_per_s` from its next item on; a message for people. A
    /// request-guarantee app with a promise is admitted again at the new rate first
    /// ([`crate::plan::readmit`]); a rate the node cannot promise is refused (the old
    /// rate stays) unless `unpromised`.
    pub fn set_rate(&mut self, items_per_s: f64, unpromised: bool) -> Result<String, String> {
        let mut readmitted = None;
        if let Some(mut promise) = self.promise.take() {
            let outcome = if items_per_s <= 0.0 && promise.rate <= 0.0 {
                Ok("admitted unpaced, as it was".to_string())
            } else {
                self.readmit(&mut promise, items_per_s)
            };
            let (rate, name) = (promise.rate, self.wiring.app.name.clone());
            self.promise = Some(promise);
            match outcome {
                Ok(message) => readmitted = Some(message),
                Err(why) if unpromised => {
                    readmitted = Some(format!("not re-admitted ({why})"));
                }
                Err(why) => {
                    let keeps = if rate > 0.0 {
                        format!("keeps its rate of {rate} items/s")
                    } else {
                        "stays unpaced".to_string()
                    };
                    return Err(format!(
                        "app '{name}' {keeps}: {why}; `supervisor rate {name} {items_per_s} --unpromised` takes the rate without a promise"
                    ));
                }
            }
        }
        let cmd = Command::SetRate { items_per_s };
        // Kept for heads started later (a restart brings back this rate, not the file's).
        self.wiring.rate = Some(items_per_s.max(0.0));
        let mut heads = Vec::new();
        for t in 0..self.wiring.app.tasks.len() {
            if self.wiring.kind(t) == TaskKind::Head {
                for r in 0..self.wiring.replicas_of(t) {
                    self.wiring.command((t, r), &cmd);
                }
                heads.push(self.wiring.task_name(t));
            }
        }
        let rate = if items_per_s > 0.0 {
            format!("{items_per_s} items/s")
        } else {
            "as fast as the pipeline takes them".into()
        };
        let mut message = format!("request rate set to {rate} (sources: {})", heads.join(", "));
        if let Some(readmitted) = readmitted {
            message = format!("{message}; {readmitted}");
        }
        let admitted = self.promise.as_ref().map(|p| p.rate);
        if let Some(note) = beyond_admission(self.wiring.app, admitted, items_per_s) {
            tracing::warn!("{note}");
            message = format!("{message}\n{note}");
        }
        Ok(message)
    }

    /// Admit the app again at `items_per_s` (see [`crate::plan::readmit`]): plan it
    /// within what the node's other guaranteed apps leave, check that its running
    /// replicas can follow the plan, change its reservation, and apply the plan's
    /// batches and replicas getting items (a `balance` app's tuners do that themselves).
    fn readmit(
        &mut self,
        promise: &mut crate::plan::readmit::Promise,
        items_per_s: f64,
    ) -> Result<String, String> {
        let before = promise.cores;
        let wiring = &self.wiring;
        let outcome = crate::plan::readmit::readmit(wiring.app, promise, items_per_s, |plan| {
            for (task, cfg) in &plan.stages {
                let Some(t) = wiring.app.task_index(task) else {
                    continue;
                };
                let running = wiring.replicas_of(t);
                if matches!(wiring.kind(t), TaskKind::Cpu | TaskKind::Gpu) && cfg.replicas > running
                {
                    return Err(format!(
                        "task '{task}' needs {} replicas at that rate and {running} run; start the app again with request_frequency {items_per_s} to be planned with them",
                        cfg.replicas
                    ));
                }
            }
            Ok(())
        });
        let readmitted = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => return Err(why),
            Err(e) => return Err(e.to_string()),
        };
        if self.wiring.app.strategy != protocol::spec::Strategy::Balance {
            for (task, cfg) in &readmitted.plan.stages {
                let Some(t) = self.wiring.app.task_index(task) else {
                    continue;
                };
                let kind = self.wiring.kind(t);
                if matches!(kind, TaskKind::Cpu | TaskKind::Gpu)
                    && cfg.replicas != self.wiring.active_now(t)
                {
                    self.wiring.scale(t, cfg.replicas);
                }
                if kind == TaskKind::Gpu
                    && (cfg.batch != self.wiring.batch_now(t)
                        || cfg.max_wait_ms != self.wiring.batch_wait_now(t))
                {
                    self.wiring.retune(t, cfg.batch, cfg.max_wait_ms);
                }
            }
        }
        Ok(format!(
            "re-admitted at {items_per_s} items/s: it reserves {:.2} cores of the node (was {before:.2})",
            readmitted.cores
        ))
    }

    /// Run the GPU agent's models with `threads` intra-op threads from now on (a
    /// restarted agent starts with them too); a message for people, or why not.
    pub fn set_threads(&mut self, threads: u32) -> Result<String, String> {
        if self.wiring.shared.is_some() {
            return Err(format!(
                "app '{}' runs on the node's shared GPU agent, whose threads are the node's: `threads` changes an app's own agent (an app started with --no-daemon); the shared agent takes SMARTPIPE_AGENT_THREADS from the environment of the start that started it",
                self.wiring.app.name
            ));
        }
        let Some(agent) = self.wiring.agent.as_mut() else {
            return Err(format!(
                "app '{}' has no GPU agent (no gpu task): nothing runs with intra-op threads",
                self.wiring.app.name
            ));
        };
        agent
            .params
            .insert("threads".into(), serde_json::json!(threads));
        let name = agent.name.clone();
        let id = (self.wiring.agent_index, 0);
        self.wiring.command(id, &Command::SetThreads { threads });
        Ok(format!(
            "intra-op threads of '{name}' set to {threads} (its sessions are created again)"
        ))
    }

    /// Kill replicas of `task` (one, or all) so they are restarted at once.
    pub fn request_restart(&mut self, task: &str, replica: Option<u32>) -> Result<String, String> {
        let Some(t) = (0..=self.wiring.app.tasks.len()).find(|&t| self.wiring.task_name(t) == task)
        else {
            let names: Vec<String> = (0..self.wiring.app.tasks.len())
                .map(|t| self.wiring.task_name(t))
                .collect();
            return Err(format!(
                "no task '{task}' in app '{}' (tasks: {})",
                self.wiring.app.name,
                names.join(", ")
            ));
        };
        let n = self.wiring.replicas_of(t);
        if n == 0 {
            return Err(format!("task '{task}' has no process in this run"));
        }
        let targets: Vec<u32> = match replica {
            Some(r) if r < n => vec![r],
            Some(r) => return Err(format!("task '{task}' has {n} replicas; there is no #{r}")),
            None => (0..n).collect(),
        };
        let targets: Vec<usize> = targets
            .into_iter()
            .filter_map(|r| self.index.get(&(t, r)).copied())
            .collect();
        // Every replica checked before any is killed: a request refused is refused whole.
        for &idx in &targets {
            let rep = &self.replicas[idx];
            if rep.exited.is_none() {
                continue;
            }
            let restarting = rep.restart_due.is_some() || rep.judge_pending.is_some();
            return Err(if restarting {
                format!(
                    "{} is being restarted already (its process ended; the new one starts shortly): nothing was restarted by this request",
                    rep.label
                )
            } else {
                format!("{} has already ended: nothing was restarted", rep.label)
            });
        }
        let mut done = Vec::new();
        for idx in targets {
            let rep = &mut self.replicas[idx];
            rep.manual_restart = true;
            // Our child's own process group; it has not been reaped.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(rep.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            done.push(rep.label.clone());
        }
        Ok(format!("restarting {}", done.join(", ")))
    }
}

/// The warning for a request-guarantee app driven past the rate it was admitted at
/// (`admitted`: its promise's, else its `request_frequency`): its reservation and its
/// promise were made for that rate and are not raised.
fn beyond_admission(
    app: &protocol::spec::AppSpec,
    admitted: Option<f64>,
    items_per_s: f64,
) -> Option<String> {
    let quota = &app.quota;
    let promises_something = quota.throughput_per_min.is_some()
        || quota.max_latency_ms.is_some()
        || quota.max_jitter_ms.is_some()
        || quota.max_loss_pct.is_some();
    if app.service_type != protocol::spec::ServiceType::RequestGuarantee || !promises_something {
        return None;
    }
    let admitted = admitted.or(app.request_frequency).filter(|r| *r > 0.0)?;
    let past = items_per_s <= 0.0 || items_per_s > admitted * 1.0001;
    past.then(|| {
        let now = if items_per_s > 0.0 {
            format!("at {items_per_s} items/s")
        } else {
            "unpaced".to_string()
        };
        format!(
            "note: app '{}' was admitted at {admitted} items/s; {now} its quota is not promised and what it reserved on the node is not raised",
            app.name
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_guaranteed_app_driven_past_its_admitted_rate_is_told_so() {
        let mut app: protocol::spec::AppSpec = serde_json::from_value(serde_json::json!({
            "name": "cam", "service_type": "request-guarantee", "request_frequency": 10.0,
            "quota": {"max_latency_ms": 100}, "tasks": []
        }))
        .expect("app");
        let beyond = super::beyond_admission;
        assert_eq!(beyond(&app, None, 5.0), None, "slower is fine");
        assert_eq!(beyond(&app, None, 10.0), None);
        let note = beyond(&app, None, 1000.0).expect("past it");
        assert!(
            note.contains("admitted at 10 items/s; at 1000 items/s"),
            "{note}"
        );
        assert!(beyond(&app, None, 0.0).is_some_and(|n| n.contains("unpaced")));
        // Re-admitted at 2000/s: 1000/s is within its promise.
        assert_eq!(beyond(&app, Some(2000.0), 1000.0), None);
        app.service_type = protocol::spec::ServiceType::BestEffort;
        assert_eq!(beyond(&app, None, 1000.0), None);
        app.service_type = protocol::spec::ServiceType::RequestGuarantee;
        app.quota = Default::default();
        assert_eq!(
            beyond(&app, None, 1000.0),
            None,
            "no quota: nothing was promised"
        );
    }
}
