//! The app format: one JSON file describing a DAG of tasks plus the quality of service
//! asked for. This is a user-facing contract (see DESIGN.md): fields may be added,
//! never renamed or removed. Unknown fields are errors.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether the app is admitted only when its quota can be met (and loses nothing),
/// or admitted anyway and served as well as possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceType {
    RequestGuarantee,
    #[default]
    BestEffort,
}

/// How hard the planner works for the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Lazy,
    #[default]
    Balance,
    Strong,
}

/// What the app must achieve. Every field is optional: an absent field is no constraint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput_per_min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_loss_pct: Option<f64>,
}

/// One GPU the app may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConstraint {
    #[serde(rename = "type")]
    pub gpu_type: String,
    pub memory_mb: u64,
}

/// The resources granted to the app. Absent = the whole machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub gpus: Vec<GpuConstraint>,
}

/// The role of a task in the DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Output only (PipeHead): sources.
    Head,
    /// Input and output on the CPU (CPUBody).
    Cpu,
    /// Input and output through a GPU agent (GPUBody).
    Gpu,
    /// Input only (PipeTail): sinks.
    Tail,
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskKind::Head => "head",
            TaskKind::Cpu => "cpu",
            TaskKind::Gpu => "gpu",
            TaskKind::Tail => "tail",
        })
    }
}

/// Dynamic batching of a task's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub size: u32,
    #[serde(default)]
    pub max_wait_ms: f64,
}

/// What the supervisor does when a task's process ends (OTP-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Restart after any early end, including an error the stage reported itself.
    Permanent,
    /// Restart after a crash or a hang (the default).
    #[default]
    Transient,
    /// Never restart.
    Temporary,
}

/// One node of the DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub kind: TaskKind,
    /// A built-in function; absent when the task names a `program` (then it reads
    /// [`crate::user_stage::PROGRAM_FUNCTION`] after parsing).
    #[serde(default)]
    pub function: String,
    /// A user-written stage: a program (path relative to the app file, or an object
    /// with `path` and `args`) run instead of a built-in worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<crate::user_stage::ProgramSpec>,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Set when the planner, not the user, chose `batch` and `replicas`: live tuning
    /// may change them. Never read from or written to app files.
    #[serde(skip)]
    pub planned: bool,
}

/// A whole app file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    #[serde(default)]
    pub service_type: ServiceType,
    #[serde(default)]
    pub strategy: Strategy,
    /// Requests (items) per second the sources are expected to offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_frequency: Option<f64>,
    #[serde(default)]
    pub quota: Quota,
    #[serde(default)]
    pub constraints: Constraints,
    pub tasks: Vec<TaskSpec>,
    /// Items per second the admitted plan carries when that is below the offered rate
    /// (a best-effort app admitted with a shortfall): set at admission, never in files;
    /// the sources' pools are sized by it.
    #[serde(skip)]
    pub planned_capacity: Option<f64>,
}

impl AppSpec {
    /// Index of the task with this name.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }
}

/// A problem in an app file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// A JSON path such as `tasks[2].params.width`, or `tasks` for whole-DAG problems.
    pub path: String,
    /// Line and column (1-based) in the file, where known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}: {}: {}", line, col, self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// All problems found in one app file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{} problem{} in the app:",
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

/// Parse an app from JSON text. Syntax errors carry line:column; shape errors carry the
/// field path. Semantic checks are done by [`crate::validate::validate`].
pub fn parse_app(text: &str) -> Result<AppSpec, SpecErrors> {
    // A byte-order mark (some editors write one) is not part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(first) = text.trim_start().chars().next().filter(|c| *c != '{') {
        let what = match first {
            '[' => "an array",
            '"' => "a string",
            _ => "another value",
        };
        return Err(SpecErrors(vec![SpecError {
            path: "(top level)".into(),
            position: None,
            message: format!(
                "an app is a JSON object ({{\"name\": …, \"tasks\": […]}}), and this file holds {what}"
            ),
        }]));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let result: Result<AppSpec, _> = serde_path_to_error::deserialize(&mut de);
    match result {
        Ok(mut app) => match de.end() {
            Ok(()) => {
                refuse_duplicate_keys(text)?;
                crate::user_stage::name_program_functions(&mut app);
                // Stateful functions run as one replica: fixed here, so neither the
                // planner nor the live scaler adds one (validation refuses more).
                for t in &mut app.tasks {
                    if crate::functions::is_stateful(&t.function) {
                        t.replicas.get_or_insert(1);
                    }
                }
                Ok(app)
            }
            Err(e) => Err(SpecErrors(vec![json_error("(top level)".into(), &e)])),
        },
        Err(err) => Err(located_error(&err)),
    }
}

/// A deserialisation error at its field path ("(top level)" for the root) and position.
fn located_error(err: &serde_path_to_error::Error<serde_json::Error>) -> SpecErrors {
    let path = err.path().to_string();
    let path = if path == "." {
        "(top level)".into()
    } else {
        path
    };
    SpecErrors(vec![json_error(path, err.inner())])
}

/// A key written twice in one object (JSON keeps the last one silently), named with its
/// object's place and its line.
fn refuse_duplicate_keys(text: &str) -> Result<(), SpecErrors> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, crate::json_keys::UniqueKeys>(&mut de)
        .map(|_| ())
        .map_err(|err| located_error(&err))
}

fn json_error(path: String, inner: &serde_json::Error) -> SpecError {
    let position = (inner.line() > 0).then(|| (inner.line(), inner.column()));
    let kind = if inner.is_syntax() || inner.is_eof() {
        "invalid JSON"
    } else {
        "invalid app"
    };
    // serde_json appends " at line L column C"; the position is printed in front instead.
    let mut message = inner.to_string();
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    SpecError {
        path,
        position,
        message: format!("{kind}: {message}"),
    }
}
