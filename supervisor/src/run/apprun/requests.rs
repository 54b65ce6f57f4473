//! What the control API asks of a running app: a restart of a task's replicas, a new
//! request rate for its sources, new intra-op threads for its agent.

use super::AppRun;
use protocol::messages::*;
use protocol::spec::TaskKind;

impl AppRun<'_> {
    /// Pace every head at `items_per_s` from its next item on; a message for people.
    pub fn set_rate(&mut self, items_per_s: f64) -> String {
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
        if let Some(note) = beyond_admission(self.wiring.app, items_per_s) {
            tracing::warn!("{note}");
            message = format!("{message}\n{note}");
        }
        message
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
        let mut done = Vec::new();
        for r in targets {
            let Some(&idx) = self.index.get(&(t, r)) else {
                continue;
            };
            let rep = &mut self.replicas[idx];
            if rep.exited.is_some() {
                return Err(format!("{} has already ended", rep.label));
            }
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

/// The warning for a request-guarantee app driven past the rate it was admitted at: its
/// reservation and its promise were made for `request_frequency` and are not raised.
fn beyond_admission(app: &protocol::spec::AppSpec, items_per_s: f64) -> Option<String> {
    if app.service_type != protocol::spec::ServiceType::RequestGuarantee {
        return None;
    }
    let admitted = app.request_frequency.filter(|r| *r > 0.0)?;
    let past = items_per_s <= 0.0 || items_per_s > admitted * 1.0001;
    past.then(|| {
        let now = if items_per_s > 0.0 {
            format!("{items_per_s} items/s")
        } else {
            "unpaced".to_string()
        };
        format!(
            "note: app '{}' was admitted at its request_frequency of {admitted} items/s; at {now} its quota is not promised and what it reserved on the node is not raised (start it again with the new request_frequency to be admitted at that rate)",
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
            "tasks": []
        }))
        .expect("app");
        assert_eq!(super::beyond_admission(&app, 5.0), None, "slower is fine");
        assert_eq!(super::beyond_admission(&app, 10.0), None);
        let note = super::beyond_admission(&app, 1000.0).expect("past it");
        assert!(
            note.contains("admitted at its request_frequency of 10 items/s; at 1000 items/s"),
            "{note}"
        );
        assert!(super::beyond_admission(&app, 0.0).is_some_and(|n| n.contains("unpaced")));
        app.service_type = protocol::spec::ServiceType::BestEffort;
        assert_eq!(super::beyond_admission(&app, 1000.0), None);
    }
}
