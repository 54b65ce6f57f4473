//! Semantic checks of a parsed app: the DAG (names, inputs, cycles, roles), the
//! functions and their parameters, and the numbers of quota, constraints and tasks.
//! Every problem is reported, each with the JSON path where it is.

use crate::functions::{self, FunctionDef, ParamType};
use crate::limits::{LimitError, Limits};
use crate::spec::{parse_app, AppSpec, SpecError, SpecErrors, TaskKind, TaskSpec};
use crate::text::shown;
use crate::validate_limits::check_limits;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The smallest memory limit an app may ask for: below it not even one stage process and
/// its shared memory start (a limit too small for the app's processes is reported at start,
/// as the out-of-memory kill it causes).
pub const MIN_MEMORY_MB: u64 = 16;

/// Parse and validate in one step.
pub fn load_app(text: &str) -> Result<AppSpec, SpecErrors> {
    let app = parse_app(text)?;
    validate(&app)?;
    Ok(app)
}

/// Check an app against the limits of the environment ([`Limits::from_env`]); all
/// problems are returned together.
pub fn validate(app: &AppSpec) -> Result<(), SpecErrors> {
    validate_with(app, Limits::from_env())
}

/// Check an app against the given limits (an unusable setting is one more problem).
pub fn validate_with(app: &AppSpec, limits: Result<Limits, LimitError>) -> Result<(), SpecErrors> {
    let mut errs = Vec::new();
    let mut err = |path: String, message: String| {
        errs.push(SpecError {
            path,
            position: None,
            message,
        })
    };

    if app.name.trim().is_empty() {
        err("name".into(), "must not be empty".into());
    } else if !valid_name(&app.name) {
        err(
            "name".into(),
            format!(
                "'{}' may only use letters, digits, '-', '_' and '.'",
                shown(&app.name)
            ),
        );
    }
    if app.tasks.is_empty() {
        err(
            "tasks".into(),
            "an app needs at least one head and one tail".into(),
        );
    }
    check_numbers(app, &mut err);
    crate::ranges::check_ranges(app, &mut err);
    match limits {
        Ok(limits) => check_limits(app, &limits, &mut err),
        Err(e) => err("environment".into(), e.to_string()),
    }

    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut duplicated: HashSet<&str> = HashSet::new();
    for (i, task) in app.tasks.iter().enumerate() {
        let at = task_path(i, task);
        if !valid_name(&task.name) {
            err(
                format!("{at}.name"),
                format!(
                    "'{}' may only use letters, digits, '-', '_' and '.'",
                    shown(&task.name)
                ),
            );
        }
        if let Some(first) = index.insert(task.name.as_str(), i) {
            duplicated.insert(task.name.as_str());
            err(
                format!("{at}.name"),
                format!(
                    "duplicate task name '{}' (first used by tasks[{first}])",
                    shown(&task.name)
                ),
            );
        }
    }

    for (i, task) in app.tasks.iter().enumerate() {
        check_task(app, i, task, &index, &duplicated, &mut err);
    }
    if !duplicated.is_empty() {
        // Which task an input names is ambiguous: the graph's checks would report
        // consequences of the duplicate (own inputs, cycles), not problems of their own.
        return finish(errs);
    }

    if let Some(cycle) = find_cycle(app, &index) {
        err(
            "tasks".into(),
            format!("the tasks form a cycle: {}", cycle.join(" → ")),
        );
    }
    crate::validate_flow::check_flow(app, &index, &mut err);
    crate::validate_flow::check_outputs(app, &mut err);
    // Payload kinds on every edge between built-ins (a program's edges are checked once
    // it has declared its kinds: `supervisor validate` asks it).
    for p in crate::user_stage::edge_problems(app, &|_| None) {
        let task = &app.tasks[p.consumer];
        err(
            format!("{}.inputs[{}]", task_path(p.consumer, task), p.input),
            p.detail,
        );
    }

    finish(errs)
}

fn finish(errs: Vec<SpecError>) -> Result<(), SpecErrors> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errs))
    }
}

/// The checks of one task: its inputs, its function and params, batch and replicas.
fn check_task(
    app: &AppSpec,
    i: usize,
    task: &TaskSpec,
    index: &HashMap<&str, usize>,
    duplicated: &HashSet<&str>,
    err: &mut impl FnMut(String, String),
) {
    let at = task_path(i, task);
    // A task whose name another task also has: which one an input names is ambiguous, and
    // its inputs' checks would only report the duplicate again ("its own input").
    if !duplicated.contains(task.name.as_str()) {
        check_inputs(app, i, task, index, &at, err);
    }
    crate::user_stage::check_task(task, &at, err);
    match functions::find(&task.function) {
        _ if task.program.is_some() || task.function.is_empty() => {}
        None => {
            let hint = functions::closest(&task.function)
                .map(|n| format!(" (did you mean '{n}'?)"))
                .unwrap_or_default();
            err(
                format!("{at}.function"),
                format!(
                    "unknown function '{}'{hint}; known functions: {}",
                    shown(&task.function),
                    functions::names().join(", ")
                ),
            );
        }
        Some(def) => check_function(task, def, &at, err),
    }
    if let Some(batch) = &task.batch {
        if batch.size == 0 {
            err(format!("{at}.batch.size"), "must be at least 1".into());
        }
        if !(batch.max_wait_ms.is_finite() && batch.max_wait_ms >= 0.0) {
            err(
                format!("{at}.batch.max_wait_ms"),
                "must be a number ≥ 0".into(),
            );
        }
    }
    if let Some(r) = task.replicas {
        if r == 0 {
            err(format!("{at}.replicas"), "must be at least 1".into());
        } else if task.kind == TaskKind::Head && r > 1 {
            err(
                format!("{at}.replicas"),
                "a head reads one source and runs as exactly one replica".into(),
            );
        } else if let Some(path) = (r > 1 && task.kind == TaskKind::Tail)
            .then(|| one_file_written(task))
            .flatten()
        {
            err(
                format!("{at}.replicas"),
                format!(
                    "replicas of this tail would each write {} over the others' output: a tail that writes one file runs as one replica ({} with `dir` may have several: a file per item)",
                    shown(path),
                    "image.show"
                ),
            );
        } else if r > 1 && functions::is_stateful(&task.function) {
            err(
                format!("{at}.replicas"),
                format!(
                    "{} keeps state per source (its tracks) and runs as one replica: replicas would split a source's items between processes",
                    task.function
                ),
            );
        }
    }
}

/// The one file a tail writes, whatever its replica (`table.print {path}`, `image.show
/// {path}`).
fn one_file_written(task: &TaskSpec) -> Option<&str> {
    matches!(task.function.as_str(), "table.print" | "image.show")
        .then(|| task.params.get("path").and_then(|v| v.as_str()))
        .flatten()
}

fn task_path(i: usize, task: &TaskSpec) -> String {
    format!("tasks[{i}] ({})", shown(&task.name))
}

/// Whether `name` can be an app's or a task's name (what `validate` accepts): for the
/// commands that take one, so that anything else is refused before it is looked up.
pub fn is_name(name: &str) -> bool {
    valid_name(name) && name.len() <= crate::limits::MAX_NAME_LEN
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_numbers(app: &AppSpec, err: &mut impl FnMut(String, String)) {
    let mut non_negative = |path: &str, v: Option<f64>| {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                err(path.into(), format!("must be a number ≥ 0, got {v}"));
            }
        }
    };
    non_negative("request_frequency", app.request_frequency);
    non_negative("quota.throughput_per_min", app.quota.throughput_per_min);
    non_negative("quota.max_latency_ms", app.quota.max_latency_ms);
    non_negative("quota.max_jitter_ms", app.quota.max_jitter_ms);
    non_negative("constraints.cpu_cores", app.constraints.cpu_cores);
    if let Some(loss) = app.quota.max_loss_pct {
        if !(0.0..=100.0).contains(&loss) {
            err(
                "quota.max_loss_pct".into(),
                format!("must be a percentage between 0 and 100, got {loss}"),
            );
        }
    }
    if app.constraints.cpu_cores == Some(0.0) {
        err("constraints.cpu_cores".into(), "must be more than 0".into());
    }
    if let Some(mb) = app.constraints.memory_mb.filter(|mb| *mb < MIN_MEMORY_MB) {
        err(
            "constraints.memory_mb".into(),
            format!("{mb} MiB cannot start the app's processes: at least {MIN_MEMORY_MB} MiB"),
        );
    }
}

fn check_inputs(
    app: &AppSpec,
    i: usize,
    task: &TaskSpec,
    index: &HashMap<&str, usize>,
    at: &str,
    err: &mut impl FnMut(String, String),
) {
    if task.kind == TaskKind::Head && !task.inputs.is_empty() {
        err(
            format!("{at}.inputs"),
            "a head is a source and takes no inputs".into(),
        );
    }
    if task.kind != TaskKind::Head && task.inputs.is_empty() {
        err(
            format!("{at}.inputs"),
            format!("a {} task needs at least one input", task.kind),
        );
    }
    for (k, name) in task.inputs.iter().enumerate() {
        let input = shown(name);
        match index.get(name.as_str()) {
            None => err(
                format!("{at}.inputs[{k}]"),
                format!("unknown task '{input}': no task has that name"),
            ),
            Some(&j) if j == i => err(
                format!("{at}.inputs[{k}]"),
                "a task cannot be its own input".into(),
            ),
            Some(&j) if app.tasks[j].kind == TaskKind::Tail => err(
                format!("{at}.inputs[{k}]"),
                format!(
                    "'{input}' is a tail (a sink) and cannot feed other tasks; make it a cpu task"
                ),
            ),
            Some(_) => {}
        }
        if task.inputs[..k].contains(name) {
            err(
                format!("{at}.inputs[{k}]"),
                format!("'{input}' is listed twice"),
            );
        }
    }
}

fn check_function(
    task: &TaskSpec,
    def: &FunctionDef,
    at: &str,
    report: &mut impl FnMut(String, String),
) {
    if !def.kinds.contains(&task.kind) {
        let kinds: Vec<String> = def.kinds.iter().map(|k| k.to_string()).collect();
        report(
            format!("{at}.kind"),
            format!(
                "function '{}' runs as {}, not as {}",
                def.name,
                kinds.join(" or "),
                task.kind
            ),
        );
    }
    let n = task.inputs.len();
    if task.kind != TaskKind::Head && (n < def.inputs.min || n > def.inputs.max) {
        let want = if def.inputs.max == usize::MAX {
            format!("at least {}", def.inputs.min)
        } else if def.inputs.min == def.inputs.max {
            format!("exactly {}", def.inputs.min)
        } else {
            format!("{} to {}", def.inputs.min, def.inputs.max)
        };
        report(
            format!("{at}.inputs"),
            format!("function '{}' takes {want} input(s), got {n}", def.name),
        );
    }
    let mut found: Vec<(String, String)> = Vec::new();
    let mut err = |path: String, message: String| found.push((path, message));
    for param in def.params {
        match task.params.get(param.name) {
            None if param.required => err(
                format!("{at}.params.{}", param.name),
                format!("missing required parameter ({})", param.doc),
            ),
            None => {}
            Some(value) => {
                if let Some(problem) = check_type(param.ty, value) {
                    err(format!("{at}.params.{}", param.name), problem);
                }
            }
        }
    }
    for key in task.params.keys() {
        if !def.params.iter().any(|p| p.name == key) {
            let known: Vec<&str> = def.params.iter().map(|p| p.name).collect();
            err(
                format!("{at}.params.{key}"),
                format!(
                    "unknown parameter for '{}'; it takes: {}",
                    def.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
    // The typed struct the stage reads its params with: anything it refuses that the
    // checks above let through (a number too large for its field) is refused here.
    if found.is_empty() {
        if let Err(e) = (def.check)(&task.params) {
            found.push((format!("{at}.params"), format!("'{}': {e}", def.name)));
        }
    }
    for (path, message) in found {
        report(path, message);
    }
    if !def.one_of.is_empty() && !def.one_of.iter().any(|k| task.params.contains_key(*k)) {
        report(
            format!("{at}.params"),
            format!("'{}' needs one of: {}", def.name, def.one_of.join(", ")),
        );
    }
}

fn describe(value: &Value) -> String {
    let s = value.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// `None` when the value fits the type, else what is wrong.
fn check_type(ty: ParamType, value: &Value) -> Option<String> {
    let got = describe(value);
    match ty {
        ParamType::PositiveInt => match value.as_u64() {
            Some(v) if v >= 1 => None,
            _ => Some(format!("expected an integer ≥ 1, got {got}")),
        },
        ParamType::Count => match value.as_u64() {
            Some(_) => None,
            None => Some(format!("expected an integer ≥ 0, got {got}")),
        },
        ParamType::NonNegative => match value.as_f64() {
            Some(v) if v.is_finite() && v >= 0.0 => None,
            _ => Some(format!("expected a number ≥ 0, got {got}")),
        },
        ParamType::Text | ParamType::Path | ParamType::PathOrUrl => match value.as_str() {
            Some(s) if !s.is_empty() => None,
            _ => Some(format!("expected a non-empty string, got {got}")),
        },
        ParamType::OneOf(options) => match value.as_str() {
            Some(s) if options.contains(&s) => None,
            _ => Some(format!("expected one of {}, got {got}", options.join(", "))),
        },
        ParamType::TextList => match value.as_array() {
            Some(items) if !items.is_empty() && items.iter().all(Value::is_string) => None,
            _ => Some(format!("expected a non-empty list of strings, got {got}")),
        },
        ParamType::TextOrList => {
            if value.is_string() {
                None
            } else {
                check_type(ParamType::TextList, value)
            }
        }
        ParamType::Bool => match value.as_bool() {
            Some(_) => None,
            None => Some(format!("expected true or false, got {got}")),
        },
    }
}

/// A cycle as a list of task names (first repeated at the end), if there is one.
fn find_cycle(app: &AppSpec, index: &HashMap<&str, usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = app.tasks.len();
    let deps: Vec<Vec<usize>> = app
        .tasks
        .iter()
        .map(|t| {
            t.inputs
                .iter()
                .filter_map(|i| index.get(i.as_str()).copied())
                .collect()
        })
        .collect();
    let mut mark = vec![Mark::New; n];
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next dependency to visit).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::Active;
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(t, _)| *t == dep).unwrap_or(0);
                        // Walk in data-flow order: producer first.
                        let mut members: Vec<usize> =
                            stack[from..].iter().map(|(t, _)| *t).collect();
                        members.reverse();
                        // Start at the task that comes first in the file, for a stable message.
                        let first = members
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, t)| **t)
                            .map(|(k, _)| k)
                            .unwrap_or(0);
                        members.rotate_left(first);
                        members.push(members[0]);
                        return Some(members.iter().map(|t| app.tasks[*t].name.clone()).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

/// Tasks in an order where every task comes after its inputs (the app must be valid).
pub fn topological_order(app: &AppSpec) -> Vec<usize> {
    let n = app.tasks.len();
    let mut indegree: Vec<usize> = app.tasks.iter().map(|t| t.inputs.len()).collect();
    let mut order: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut k = 0;
    while k < order.len() {
        let done = &app.tasks[order[k]].name;
        for (j, t) in app.tasks.iter().enumerate() {
            if t.inputs.iter().any(|i| i == done) {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    order.push(j);
                }
            }
        }
        k += 1;
    }
    order
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
