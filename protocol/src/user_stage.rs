//! User-written stages: a task that names a `program` instead of a built-in
//! `function`. This module holds what the supervisor and the `stage` SDK must agree on:
//! the app field ([`ProgramSpec`]), the declaration a program prints when asked
//! (`PROGRAM --smartpipe-describe`, [`Declaration`]), the payload kinds of the built-in
//! functions, and the type check of every edge that touches a program.

use crate::spec::{AppSpec, TaskKind, TaskSpec};
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// What travels on an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// An RGB8 image in shared memory.
    Frame,
    /// An n-dimensional array in shared memory.
    Tensor,
    /// An Arrow table (e.g. detections).
    Table,
    /// Anything (a pass-through or a sink that takes every kind).
    Any,
}

impl fmt::Display for PayloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadKind::Frame => "frame",
            PayloadKind::Tensor => "tensor",
            PayloadKind::Table => "table",
            PayloadKind::Any => "any",
        })
    }
}

/// What a stage program declares at start-up: the protocol it speaks, the kinds it
/// takes and the kinds it makes (`makes: ["any"]` for a pass-through).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    pub protocol: u32,
    pub takes: Vec<PayloadKind>,
    pub makes: Vec<PayloadKind>,
}

/// The kinds a built-in function takes and makes, where they are fixed (`None`: not
/// declared, e.g. the model cascade's steps, whose items mix kinds; not checked).
pub fn builtin_kinds(function: &str) -> Option<(Vec<PayloadKind>, Vec<PayloadKind>)> {
    use PayloadKind::*;
    Some(match function {
        "image.gen" | "source.images" | "source.video" => (vec![], vec![Frame]),
        "bench.blob" => (vec![], vec![Tensor]),
        "image.resize" | "image.crop" => (vec![Frame], vec![Frame]),
        "core.forward" | "test.fault" => (vec![Any], vec![Any]),
        "image.show" => (vec![Frame], vec![]),
        "table.print" => (vec![Any], vec![]),
        "bench.sink" => (vec![Tensor], vec![]),
        "table.filter" | "table.select" | "table.merge" => (vec![Table], vec![Table]),
        _ => return None,
    })
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
    if makes.contains(&PayloadKind::Any) && depth < app.tasks.len() {
        // A pass-through makes what it takes: follow its (single) input.
        let j = app.task_index(task.inputs.first()?)?;
        return makes_of(app, j, declared, depth + 1).or(Some(makes));
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

/// Type-check every edge that touches a program task; `declared(i)` is task `i`'s
/// declaration when it is a program. Each mismatch names both tasks and the kinds.
pub fn check_edges(app: &AppSpec, declared: &dyn Fn(usize) -> Option<Declaration>) -> Vec<String> {
    let mut problems = Vec::new();
    for (c, consumer) in app.tasks.iter().enumerate() {
        for input in &consumer.inputs {
            let Some(p) = app.task_index(input) else {
                continue;
            };
            let producer = &app.tasks[p];
            if producer.program.is_none() && consumer.program.is_none() {
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
                problems.push(format!(
                    "tasks[{c}] {} takes {} but its input {} makes {}",
                    named(consumer),
                    list(&takes),
                    named(producer),
                    list(&makes)
                ));
            }
        }
    }
    problems
}
