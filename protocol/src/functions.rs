//! The function registry: every built-in function a task may name, defined in one
//! place — its name, the task kinds it may run as, its inputs, its parameters (docs
//! for the schema and a typed struct in [`params`]), the payload kinds it takes and
//! makes, and its planning hints. Validation, the JSON Schema, the edge type check and
//! the planner all read this table; the workers bind each [`Builtin`] to their run
//! function with an exhaustive `match`, so a registered function always has one.

mod outputs;
pub mod params;
mod table;

use crate::spec::TaskKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

pub use outputs::{
    output_journal, prints_pretty_table, resumable_video, stdout_table_journal, streamed_video,
    streams_to_url, table_journal_suffix, url_scheme, OutputJournal, ResumableVideo,
    PARQUET_JOURNAL_SUFFIX, PRETTY_JOURNAL_SUFFIX, STDOUT_TABLE_JOURNAL_SUFFIX,
    VIDEO_SEGMENTS_SUFFIX,
};
pub use table::{FAULT_MODES, FUNCTIONS, GEN_PATTERNS, TABLE_FORMATS};

/// The function of a device's GPU agent: the supervisor's own task, never in an app
/// file (so not in the registry).
pub const AGENT_FUNCTION: &str = "gpu.agent";

/// Every built-in function, as the workers dispatch on it (the registry's entry for
/// each is [`def`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    SourceImages,
    SourceVideo,
    ImageGen,
    ImageResize,
    ImageCrop,
    ImageShow,
    TablePrint,
    TableFilter,
    TableSelect,
    TableMerge,
    TrackDeepsort,
    ModelPreprocess,
    ModelInference,
    ModelPostprocess,
    CoreForward,
    BenchBlob,
    BenchSink,
    TestFault,
}

/// What travels on an edge (the same vocabulary user stages declare).
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

/// The type of one parameter (for the schema and the located checks of `validate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// An integer ≥ 1.
    PositiveInt,
    /// An integer ≥ 0.
    Count,
    /// Any number ≥ 0.
    NonNegative,
    /// Any string.
    Text,
    /// A path; relative paths resolve against the app file's folder.
    Path,
    /// A path or a URL (relative paths resolve against the app file's folder).
    PathOrUrl,
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// A list of strings.
    TextList,
    /// A string or a list of strings.
    TextOrList,
    /// `true` or `false`.
    Bool,
}

impl ParamType {
    /// Whether a relative value is resolved against the app file's folder.
    pub fn is_path(self) -> bool {
        matches!(self, ParamType::Path | ParamType::PathOrUrl)
    }
}

/// One parameter of a function.
#[derive(Debug, Clone, Copy)]
pub struct ParamDef {
    pub name: &'static str,
    pub ty: ParamType,
    pub required: bool,
    pub doc: &'static str,
}

/// How many inputs a function takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arity {
    pub min: usize,
    pub max: usize,
}

/// How big one slot of a function's output pool is, and where its frame size comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotSize {
    /// RGB8 frames of `width` × `height` from the params.
    ParamFrames,
    /// `bytes` from the params.
    ParamBytes,
    /// RGB8 frames as large as the largest its source (files, video) holds.
    SourceFrames,
    /// RGB8 frames as large as its inputs' (times a model's scale).
    InputFrames,
    /// f32 tensors of its input frames (≥ 16 MiB).
    ModelInput,
    /// A batch of model outputs (`output_slot_mb`, default 64 MiB).
    ModelOutput,
}

/// What the planner needs to know about a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    /// Writes payloads of its own (the planner gives it a pool); otherwise it forwards
    /// its inputs' shared memory or writes none.
    pub writes_payloads: bool,
    /// The size of its payloads (and so of its pool's slots).
    pub slot: SlotSize,
    /// Keeps state per source across items: runs as one replica.
    pub stateful: bool,
    /// Names a model of the manifest in `params.model` (the supervisor locates it and
    /// starts its device's agent).
    pub model: bool,
}

/// One function a task may run.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDef {
    pub id: Builtin,
    pub name: &'static str,
    pub kinds: &'static [TaskKind],
    pub inputs: Arity,
    pub params: &'static [ParamDef],
    /// At least one of these parameters must be given (e.g. `image.show` dir or path).
    pub one_of: &'static [&'static str],
    /// The payload kinds it takes on its inputs (empty for a head).
    pub takes: &'static [PayloadKind],
    /// The payload kinds it makes (empty for a tail; `any` = what its input makes).
    pub makes: &'static [PayloadKind],
    pub hints: Hints,
    /// Parse a task's params into the function's typed struct ([`params`]).
    pub check: fn(&Map<String, Value>) -> Result<(), String>,
    pub summary: &'static str,
}

/// Look a function up by name.
pub fn find(name: &str) -> Option<&'static FunctionDef> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// The built-in a task names, if it names one.
pub fn builtin(name: &str) -> Option<Builtin> {
    find(name).map(|f| f.id)
}

/// The registry's entry of a built-in.
pub fn def(id: Builtin) -> Option<&'static FunctionDef> {
    FUNCTIONS.iter().find(|f| f.id == id)
}

/// The planning hints of a function, if it is a built-in.
pub fn hints(name: &str) -> Option<Hints> {
    find(name).map(|f| f.hints)
}

/// The function that joins the parts of one item (same source and seq) that come
/// through several inputs.
pub const TABLE_MERGE: &str = "table.merge";

/// Whether a function pairs the parts of one item arriving through its inputs: every
/// producer must send an item's parts to the same replica ([`crate::messages::OutputRoute::by_item`]),
/// its replicas are not scaled live, and in a request-guarantee app it is told what the
/// tails acknowledged (a replayed part of a delivered item has no partner to wait for).
pub fn pairs_parts(name: &str) -> bool {
    name == TABLE_MERGE
}

/// Whether a function keeps state per source (runs as one replica).
pub fn is_stateful(name: &str) -> bool {
    hints(name).is_some_and(|h| h.stateful)
}

/// Whether a function runs a step of a model named in `params.model`.
pub fn uses_model(name: &str) -> bool {
    hints(name).is_some_and(|h| h.model)
}

/// Names of all functions, for error messages.
pub fn names() -> Vec<&'static str> {
    FUNCTIONS.iter().map(|f| f.name).collect()
}

/// The closest known function name, for "did you mean" hints.
pub fn closest(name: &str) -> Option<&'static str> {
    FUNCTIONS
        .iter()
        .map(|f| (edit_distance(name, f.name), f.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
