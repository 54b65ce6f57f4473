//! The checks `start` makes beyond the app file's own validation: `where` predicates that
//! parse, tails of request-guarantee apps run as one replica, models the manifest has, and
//! a plan within the size limits and the process limit. `validate` and `start` both run
//! them, so `validate` accepts nothing that `start` refuses.

use crate::plan::app::LoadedApp;
use crate::plan::{plan_with, Plan};
use protocol::functions::{self, Builtin};
use protocol::limits::Limits;
use protocol::predicate::Predicate;
use protocol::spec::{AppSpec, ServiceType, TaskKind};

/// Problems of the app's tasks that need no file or probe, each with its place.
pub fn task_problems(app: &AppSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, t) in app.tasks.iter().enumerate() {
        let at = format!("tasks[{i}] ({})", t.name);
        if functions::builtin(&t.function) == Some(Builtin::TableFilter) {
            if let Some(text) = t.params.get("where").and_then(|v| v.as_str()) {
                if let Err(e) = Predicate::parse(text) {
                    problems.push(format!("{at}.params.where: {e}"));
                }
            }
        }
        if app.service_type == ServiceType::RequestGuarantee
            && t.kind == TaskKind::Tail
            && t.replicas.unwrap_or(1) > 1
        {
            problems.push(format!(
                "{at}.replicas: a tail of a request-guarantee app runs as one replica (it puts the output in order and removes duplicates)"
            ));
        }
    }
    problems
}

/// Everything `start` checks before it starts a process; every problem is listed.
pub fn check(loaded: &LoadedApp) -> anyhow::Result<Plan> {
    let mut problems = task_problems(&loaded.spec);
    if let Err(e) = crate::env::appenv::max_restarts(0) {
        problems.push(format!("environment: {e}"));
    }
    if let Err(e) = crate::plan::models::locate(&loaded.spec, &loaded.file) {
        problems.push(format!("{e:#}"));
    }
    let planned = Limits::from_env()
        .map_err(crate::plan::PlanError::from)
        .and_then(|limits| plan_with(&loaded.spec, &limits));
    match planned {
        Ok(plan) if problems.is_empty() => Ok(plan),
        Ok(_) => Err(listed(loaded, problems)),
        Err(e) => {
            problems.push(format!("cannot plan the app: {e}"));
            Err(listed(loaded, problems))
        }
    }
}

fn listed(loaded: &LoadedApp, problems: Vec<String>) -> anyhow::Error {
    let file = loaded.file.display();
    let lines: Vec<String> = problems.iter().map(|p| format!("  {file}: {p}")).collect();
    anyhow::anyhow!(
        "{} problem{} in {file}:\n{}",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        lines.join("\n")
    )
}
