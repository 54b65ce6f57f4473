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
        format!("request rate set to {rate} (sources: {})", heads.join(", "))
    }

    /// Run the GPU agent's models with `threads` intra-op threads from now on (a
    /// restarted agent starts with them too); a message for people, or why not.
    pub fn set_threads(&mut self, threads: u32) -> Result<String, String> {
        if self.wiring.shared.is_some() {
            return Err(format!(
                "app '{}' runs on the node's shared GPU agent, whose threads are the node's",
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
