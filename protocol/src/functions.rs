//! The function registry: every function a task may name, the task kinds it may run
//! as, and its parameters. Validation and the JSON Schema are both derived from this
//! table, so they cannot disagree.

use crate::spec::TaskKind;

/// The type of one parameter.
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
    /// One of a fixed set of strings.
    OneOf(&'static [&'static str]),
    /// A list of strings.
    TextList,
    /// A string or a list of strings.
    TextOrList,
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

/// One function a task may run.
#[derive(Debug, Clone, Copy)]
pub struct FunctionDef {
    pub name: &'static str,
    pub kinds: &'static [TaskKind],
    pub inputs: Arity,
    pub params: &'static [ParamDef],
    /// Parameters beyond `params` are allowed (model functions pass them to the family).
    pub open_params: bool,
    /// At least one of these parameters must be given (e.g. `image.show` dir or path).
    pub one_of: &'static [&'static str],
    pub summary: &'static str,
}

const fn p(name: &'static str, ty: ParamType, required: bool, doc: &'static str) -> ParamDef {
    ParamDef {
        name,
        ty,
        required,
        doc,
    }
}

const NONE: Arity = Arity { min: 0, max: 0 };
const ONE: Arity = Arity { min: 1, max: 1 };
const ONE_OR_TWO: Arity = Arity { min: 1, max: 2 };
const MANY: Arity = Arity {
    min: 1,
    max: usize::MAX,
};

use ParamType::*;
use TaskKind::*;

/// Image patterns `image.gen` can draw.
pub const GEN_PATTERNS: &[&str] = &["gradient", "checker", "noise", "solid"];
/// Output formats of `table.print`.
pub const TABLE_FORMATS: &[&str] = &["pretty", "csv", "jsonl", "parquet"];

/// Functions that keep state per source across items: they run as one replica, so
/// every item of a source reaches the same process in order.
pub const STATEFUL: &[&str] = &["track.deepsort"];

/// Every function, in the order `--help` and the schema list them.
pub const FUNCTIONS: &[FunctionDef] = &[
    FunctionDef {
        name: "source.images",
        kinds: &[Head],
        inputs: NONE,
        params: &[
            p(
                "path",
                Path,
                true,
                "a folder of PNG/JPEG files, or a glob such as `media/*.png`",
            ),
            p(
                "fps",
                NonNegative,
                false,
                "items per second; 0 = as fast as possible (default)",
            ),
        ],
        open_params: false,
        one_of: &[],
        summary: "reads still images, one item per file, in file-name order",
    },
    FunctionDef {
        name: "source.video",
        kinds: &[Head],
        inputs: NONE,
        params: &[
            p("path", Text, true, "a file or URL ffmpeg can open"),
            p("limit", Count, false, "stop after this many frames"),
            p(
                "fps",
                NonNegative,
                false,
                "frames per second to emit; 0 = as fast as decoded (default)",
            ),
        ],
        open_params: false,
        one_of: &[],
        summary: "decodes a video with an ffmpeg child process straight into shared memory",
    },
    FunctionDef {
        name: "image.gen",
        kinds: &[Head],
        inputs: NONE,
        params: &[
            p("width", PositiveInt, true, "frame width in pixels"),
            p("height", PositiveInt, true, "frame height in pixels"),
            p("count", Count, false, "number of frames (default 100)"),
            p(
                "fps",
                NonNegative,
                false,
                "frames per second; 0 = as fast as possible (default)",
            ),
            p(
                "pattern",
                OneOf(GEN_PATTERNS),
                false,
                "what to draw (default gradient)",
            ),
        ],
        open_params: false,
        one_of: &[],
        summary: "synthetic RGB frames of a given size, count and rate",
    },
    FunctionDef {
        name: "image.resize",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("width", PositiveInt, true, "output width"),
            p("height", PositiveInt, true, "output height"),
        ],
        open_params: false,
        one_of: &[],
        summary: "resizes frames (bilinear, SIMD)",
    },
    FunctionDef {
        name: "image.crop",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("x", Count, true, "left edge"),
            p("y", Count, true, "top edge"),
            p("width", PositiveInt, true, "crop width"),
            p("height", PositiveInt, true, "crop height"),
        ],
        open_params: false,
        one_of: &[],
        summary: "cuts a rectangle out of each frame (clipped to the frame)",
    },
    FunctionDef {
        name: "image.show",
        kinds: &[Tail],
        inputs: ONE_OR_TWO,
        params: &[
            p(
                "dir",
                Path,
                false,
                "write one PNG per frame, named `<source>-<seq>.png`",
            ),
            p(
                "path",
                Path,
                false,
                "write an MP4 (or any container ffmpeg knows by extension)",
            ),
            p(
                "fps",
                NonNegative,
                false,
                "frame rate of the video (default 25)",
            ),
            p(
                "mask",
                OneOf(&["blend", "cutout", "none"]),
                false,
                "a segmentation mask the item carries: blend it over the frame (default), cut the foreground out (RGBA PNG, needs `dir`) or ignore it",
            ),
        ],
        open_params: false,
        one_of: &["dir", "path"],
        summary: "writes frames as image files or a video",
    },
    FunctionDef {
        name: "table.print",
        kinds: &[Tail],
        inputs: MANY,
        params: &[
            p(
                "format",
                OneOf(TABLE_FORMATS),
                false,
                "pretty (default), csv, jsonl or parquet",
            ),
            p("path", Path, false, "output file; stdout when absent"),
        ],
        open_params: false,
        one_of: &[],
        summary: "writes one row per frame (or per detection) as a table",
    },
    FunctionDef {
        name: "table.filter",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[p(
            "where",
            Text,
            true,
            "a predicate such as `score > 0.9 and class == 'face'`",
        )],
        open_params: false,
        one_of: &[],
        summary: "keeps the rows of a table that match a predicate",
    },
    FunctionDef {
        name: "table.select",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[p(
            "columns",
            TextList,
            true,
            "the columns to keep, in order",
        )],
        open_params: false,
        one_of: &[],
        summary: "keeps some columns of a table",
    },
    FunctionDef {
        name: "table.merge",
        kinds: &[Cpu],
        inputs: Arity {
            min: 2,
            max: usize::MAX,
        },
        params: &[
            p(
                "on",
                TextOrList,
                false,
                "join key columns (source and seq are always part of it)",
            ),
            p(
                "how",
                OneOf(&["join", "concat"]),
                false,
                "join (default) or concat",
            ),
        ],
        open_params: false,
        one_of: &["on", "how"],
        summary: "joins or concatenates the tables of several inputs by source and seq",
    },
    FunctionDef {
        name: "track.deepsort",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("max_age", Count, false, "frames a confirmed track may go unseen (default 30)"),
            p("n_init", PositiveInt, false, "hits before a track is confirmed (default 3)"),
            p("max_cosine_distance", NonNegative, false, "appearance gate (default 0.2)"),
            p("max_iou_distance", NonNegative, false, "IoU gate, 1 − IoU (default 0.7)"),
            p("nn_budget", PositiveInt, false, "features kept per track (default: all)"),
            p("embedding", Text, false, "the column of appearance vectors (default `embedding`)"),
        ],
        open_params: false,
        one_of: &[],
        summary: "DeepSORT: adds a `track_id` column to a detection table with embeddings",
    },
    FunctionDef {
        name: "model.preprocess",
        kinds: &[Cpu],
        inputs: ONE_OR_TWO,
        params: &[p(
            "model",
            Text,
            true,
            "a model name from the manifest (apps/models.json)",
        )],
        open_params: true,
        one_of: &[],
        summary: "turns frames into the model's input tensors",
    },
    FunctionDef {
        name: "model.inference",
        kinds: &[Gpu],
        inputs: ONE,
        params: &[
            p(
                "model",
                Text,
                true,
                "a model name from the manifest (apps/models.json)",
            ),
            p(
                "output_slot_mb",
                PositiveInt,
                false,
                "shared memory for one batch's outputs, MiB (default 64; a batch whose outputs need more is split)",
            ),
        ],
        open_params: true,
        one_of: &[],
        summary: "runs the model on its device's GPU agent",
    },
    FunctionDef {
        name: "model.postprocess",
        kinds: &[Cpu],
        inputs: ONE_OR_TWO,
        params: &[p(
            "model",
            Text,
            true,
            "a model name from the manifest (apps/models.json)",
        )],
        open_params: true,
        one_of: &[],
        summary: "turns the model's output tensors into a detection table",
    },
    FunctionDef {
        name: "core.forward",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[],
        open_params: false,
        one_of: &[],
        summary:
            "forwards its input untouched (passes the shared-memory reference on, copies nothing)",
    },
    FunctionDef {
        name: "bench.blob",
        kinds: &[Head],
        inputs: NONE,
        params: &[
            p("bytes", PositiveInt, true, "payload size"),
            p("count", Count, true, "number of items"),
            p(
                "fps",
                NonNegative,
                false,
                "items per second; 0 = as fast as possible (default)",
            ),
        ],
        open_params: false,
        one_of: &[],
        summary: "emits opaque byte payloads of a given size (for transport benchmarks)",
    },
    FunctionDef {
        name: "bench.sink",
        kinds: &[Tail],
        inputs: ONE,
        params: &[],
        open_params: false,
        one_of: &[],
        summary: "receives `bench.blob` payloads and checks every byte (for transport benchmarks)",
    },
    FunctionDef {
        name: "test.fault",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("mode", OneOf(FAULT_MODES), true, "crash (abort), crash-on-start, garbage (send the supervisor bytes that decode as no message, once: the first process only), hang (SIGSTOP itself), ignore-stop (ignore SIGTERM and the inbox) or stall (sleep `stall_ms` once, heartbeats going on)"),
            p("after", Count, false, "items forwarded before the fault (default 0)"),
            p("stall_ms", Count, false, "stall: how long (default 1000)"),
        ],
        open_params: false,
        one_of: &[],
        summary: "TEST ONLY (needs SMARTPIPE_TEST_FAULTS=1): forwards items, then misbehaves",
    },
];

/// Misbehaviours `test.fault` can inject.
pub const FAULT_MODES: &[&str] = &[
    "crash",
    "crash-on-start",
    "garbage",
    "hang",
    "ignore-stop",
    "stall",
];

/// Look a function up by name.
pub fn find(name: &str) -> Option<&'static FunctionDef> {
    FUNCTIONS.iter().find(|f| f.name == name)
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
