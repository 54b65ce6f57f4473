//! User-written stages: a task that names a `program` instead of a built-in
//! `function`. This module holds what the supervisor and the `stage` SDK must agree on:
//! the app field ([`ProgramSpec`]), the declaration a program prints when asked
//! (`PROGRAM --smartpipe-describe`, [`Declaration`]), the payload kinds of the built-in
//! functions (from the registry), and the type check of every edge.

use crate::spec::{AppSpec, TaskKind, TaskSpec};
use serde::{Deserialize, Serialize};

/// The function name a program task carries after parsing (never written by users).
pub const PROGRAM_FUNCTION: &str = "user.program";

/// The argument that makes a stage program print its [`Declaration`] as JSON and exit.
pub const DESCRIBE_FLAG: &str = "--smartpipe-describe";

/// `"program": "stages/invert"` or `"program": {"path": "stages/invert", "args": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProgramSpec {
    Path(String),
    Full(ProgramFull),
}

/// The long form of [`ProgramSpec`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramFull {
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
}

impl ProgramSpec {
    pub fn path(&self) -> &str {
        match self {
            ProgramSpec::Path(p) => p,
            ProgramSpec::Full(f) => &f.path,
        }
    }

    pub fn args(&self) -> &[String] {
        match self {
            ProgramSpec::Path(_) => &[],
            ProgramSpec::Full(f) => &f.args,
        }
    }

    /// Replace the path (the supervisor makes it absolute).
    pub fn set_path(&mut self, path: String) {
        match self {
            ProgramSpec::Path(p) => *p = path,
            ProgramSpec::Full(f) => f.path = path,
        }
    }
}

/// After parsing: a task with a `program` and no `function` runs [`PROGRAM_FUNCTION`].
pub fn name_program_functions(app: &mut AppSpec) {
    for t in &mut app.tasks {
        if t.program.is_some() && t.function.is_empty() {
            t.function = PROGRAM_FUNCTION.to_string();
        }
    }
}

pub use crate::functions::PayloadKind;

/// What a stage program declares at start-up: the protocol it speaks, the kinds it
/// takes and the kinds it makes (`makes: ["any"]` for a pass-through).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub protocol: u32,
    pub takes: Vec<PayloadKind>,
    pub makes: Vec<PayloadKind>,
}

/// The kinds a built-in function takes and makes (from the registry; `None` for a
/// name that is not a built-in, e.g. a program's).
pub fn builtin_kinds(function: &str) -> Option<(Vec<PayloadKind>, Vec<PayloadKind>)> {
    let f = crate::functions::find(function)?;
    Some((f.takes.to_vec(), f.makes.to_vec()))
}

/// Checks of a program task that need no program run (the field, the kind).
pub fn check_task(task: &TaskSpec, at: &str, err: &mut impl FnMut(String, String)) {
    let Some(program) = &task.program else {
        if task.function.is_empty() {
            err(
                format!("{at}.function"),
                "missing: name a built-in `function` or a user stage's `program`".into(),
            );
        }
        return;
    };
    if task.function != PROGRAM_FUNCTION {
        err(
            format!("{at}.program"),
            format!(
                "the task names both a function ('{}') and a program; give one",
                crate::text::shown(&task.function)
            ),
        );
    }
    if program.path().trim().is_empty() {
        err(format!("{at}.program"), "the path is empty".into());
    }
    if task.kind != TaskKind::Cpu {
        err(
            format!("{at}.kind"),
            format!(
                "a program runs as a `cpu` body (the SDK's body role), not as a {} task",
                task.kind
            ),
        );
    }
}

/// What one task makes, as far as it is known: a program's declaration, a built-in's
/// table, and `any` resolved through a pass-through to what its input makes.
fn makes_of(
    app: &AppSpec,
    i: usize,
    declared: &dyn Fn(usize) -> Option<Declaration>,
    depth: usize,
) -> Option<Vec<PayloadKind>> {
    let task = app.tasks.get(i)?;
    let makes = match declared(i) {
        Some(d) => d.makes,
        None => builtin_kinds(&task.function)?.1,
    };
    if makes.contains(&PayloadKind::Any) && depth < app.tasks.len() && !task.inputs.is_empty() {
        // A pass-through makes what it takes: what its inputs make (a merge: all of
        // them, and its own kinds beside); an input of unknown kinds leaves it `any`.
        let mut out: Vec<PayloadKind> = makes
            .iter()
            .copied()
            .filter(|k| *k != PayloadKind::Any)
            .collect();
        for input in &task.inputs {
            let Some(m) = app
                .task_index(input)
                .and_then(|j| makes_of(app, j, declared, depth + 1))
            else {
                return Some(makes);
            };
            for k in m {
                if !out.contains(&k) {
                    out.push(k);
                }
            }
        }
        return Some(out);
    }
    Some(makes)
}

/// A task as errors name it: `'inv' (program stages/invert)` or `'rows' (table.filter)`.
fn named(task: &TaskSpec) -> String {
    match &task.program {
        Some(p) => format!("'{}' (program {})", task.name, p.path()),
        None => format!("'{}' ({})", task.name, task.function),
    }
}

fn list(kinds: &[PayloadKind]) -> String {
    if kinds.is_empty() {
        return "nothing".into();
    }
    kinds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// An edge whose producer makes nothing its consumer takes.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeProblem {
    /// The consuming task, and which of its inputs.
    pub consumer: usize,
    pub input: usize,
    /// Both tasks and their kinds, e.g. `'small' (image.resize) takes frame but its
    /// input 'rows' (table.filter) makes table`.
    pub detail: String,
}

/// Type-check every edge whose two ends' kinds are known (built-ins from the registry,
/// programs from `declared(i)`, their declaration); each mismatch names both tasks and
/// the kinds. Edges out of a tail are left to `validate`'s own check.
pub fn edge_problems(
    app: &AppSpec,
    declared: &dyn Fn(usize) -> Option<Declaration>,
) -> Vec<EdgeProblem> {
    let mut problems = Vec::new();
    for (c, consumer) in app.tasks.iter().enumerate() {
        for (k, input) in consumer.inputs.iter().enumerate() {
            let Some(p) = app.task_index(input) else {
                continue;
            };
            let producer = &app.tasks[p];
            if producer.kind == TaskKind::Tail {
                continue;
            }
            let takes = match declared(c) {
                Some(d) => d.takes,
                None => match builtin_kinds(&consumer.function) {
                    Some((takes, _)) => takes,
                    None => continue,
                },
            };
            let Some(makes) = makes_of(app, p, declared, 0) else {
                continue;
            };
            let fits = |k: &PayloadKind| {
                *k == PayloadKind::Any || takes.contains(&PayloadKind::Any) || takes.contains(k)
            };
            if makes.is_empty() || !makes.iter().any(fits) {
                problems.push(EdgeProblem {
                    consumer: c,
                    input: k,
                    detail: format!(
                        "{} takes {} but its input {} makes {}",
                        named(consumer),
                        list(&takes),
                        named(producer),
                        list(&makes)
                    ),
                });
            }
        }
    }
    problems
}

/// [`edge_problems`] as lines that start with the consumer's place (`tasks[2] ...`).
pub fn check_edges(app: &AppSpec, declared: &dyn Fn(usize) -> Option<Declaration>) -> Vec<String> {
    edge_problems(app, declared)
        .into_iter()
        .map(|p| format!("tasks[{}] {}", p.consumer, p.detail))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_app;
    use crate::validate::validate;

    fn app(tasks: serde_json::Value) -> AppSpec {
        let text = serde_json::json!({"name": "a", "tasks": tasks}).to_string();
        parse_app(&text).expect("parses")
    }

    fn frames_into(middle: serde_json::Value, tail: &str) -> AppSpec {
        app(serde_json::json!([
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}},
            middle,
            {"name": "out", "kind": "tail", "function": tail, "inputs": ["inv"]}
        ]))
    }

    fn invert(_: usize) -> Option<Declaration> {
        Some(Declaration {
            protocol: crate::PROTOCOL_VERSION,
            takes: vec![PayloadKind::Frame],
            makes: vec![PayloadKind::Frame],
        })
    }

    #[test]
    fn a_program_is_a_path_or_an_object_and_runs_the_program_function() {
        let a = frames_into(
            serde_json::json!({"name": "inv", "kind": "cpu", "program": "stages/inv", "inputs": ["gen"]}),
            "table.print",
        );
        assert_eq!(a.tasks[1].function, PROGRAM_FUNCTION);
        assert_eq!(
            a.tasks[1].program.as_ref().map(|p| p.path()),
            Some("stages/inv")
        );
        assert!(validate(&a).is_ok());
        let b = frames_into(
            serde_json::json!({"name": "inv", "kind": "cpu", "program": {"path": "x", "args": ["-v"]}, "inputs": ["gen"]}),
            "table.print",
        );
        let p = b.tasks[1].program.as_ref().expect("program");
        assert_eq!((p.path(), p.args()), ("x", &["-v".to_string()][..]));
    }

    #[test]
    fn a_task_needs_a_function_or_a_program_not_both_and_a_program_runs_as_a_body() {
        let none = frames_into(
            serde_json::json!({"name": "inv", "kind": "cpu", "inputs": ["gen"]}),
            "table.print",
        );
        let errs = validate(&none).expect_err("no function").to_string();
        assert!(errs.contains("tasks[1] (inv).function: missing"), "{errs}");
        let both = frames_into(
            serde_json::json!({"name": "inv", "kind": "cpu", "function": "core.forward", "program": "p", "inputs": ["gen"]}),
            "table.print",
        );
        let errs = validate(&both).expect_err("both").to_string();
        assert!(
            errs.contains("names both a function ('core.forward') and a program"),
            "{errs}"
        );
        let tail = app(serde_json::json!([
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}},
            {"name": "inv", "kind": "tail", "program": "p", "inputs": ["gen"]}
        ]));
        let errs = validate(&tail).expect_err("a tail program").to_string();
        assert!(
            errs.contains("tasks[1] (inv).kind: a program runs as a `cpu` body"),
            "{errs}"
        );
    }

    #[test]
    fn edges_are_checked_through_pass_throughs_and_name_both_tasks() {
        let fits = frames_into(
            serde_json::json!({"name": "inv", "kind": "cpu", "program": "p", "inputs": ["gen"]}),
            "image.show",
        );
        assert!(check_edges(&fits, &|i| (i == 1).then(|| invert(i)).flatten()).is_empty());
        let misfit = app(serde_json::json!([
            {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 4, "height": 4}},
            {"name": "inv", "kind": "cpu", "program": "p", "inputs": ["gen"]},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["inv"]},
            {"name": "sel", "kind": "cpu", "function": "table.select", "inputs": ["fwd"], "params": {"columns": ["x"]}},
            {"name": "out", "kind": "tail", "function": "table.print", "inputs": ["sel"]}
        ]));
        // A program not asked yet (no declaration) is not checked, nor what passes it on ...
        assert!(check_edges(&misfit, &|_| None).is_empty());
        // ... and a pass-through after a program carries the program's kinds.
        let blobs = app(serde_json::json!([
            {"name": "gen", "kind": "head", "function": "bench.blob", "params": {"bytes": 4, "count": 1}},
            {"name": "fwd", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
            {"name": "inv", "kind": "cpu", "program": "p", "inputs": ["fwd"]},
            {"name": "out", "kind": "tail", "function": "table.print", "inputs": ["inv"]}
        ]));
        let problems = check_edges(&blobs, &|i| (i == 2).then(|| invert(i)).flatten());
        assert_eq!(
            problems,
            vec!["tasks[2] 'inv' (program p) takes frame but its input 'fwd' (core.forward) makes tensor".to_string()]
        );
    }
}
