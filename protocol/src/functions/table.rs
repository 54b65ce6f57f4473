//! The registry's table: one entry per built-in function (see [`super::FunctionDef`]).

use super::params;
use super::{Arity, FunctionDef, Hints, ParamDef, ParamType, SlotSize};
use crate::spec::TaskKind;

const fn p(name: &'static str, ty: ParamType, required: bool, doc: &'static str) -> ParamDef {
    ParamDef {
        name,
        ty,
        required,
        doc,
    }
}

const fn hints(writes_payloads: bool, slot: SlotSize, stateful: bool) -> Hints {
    Hints {
        writes_payloads,
        slot,
        stateful,
        model: false,
    }
}

/// The hints of a model step: it names a model of the manifest in `params.model`.
const fn model_hints(writes_payloads: bool, slot: SlotSize) -> Hints {
    Hints {
        model: true,
        ..hints(writes_payloads, slot, false)
    }
}

const NONE: Arity = Arity { min: 0, max: 0 };
const ONE: Arity = Arity { min: 1, max: 1 };
const ONE_OR_TWO: Arity = Arity { min: 1, max: 2 };
const MANY: Arity = Arity {
    min: 1,
    max: usize::MAX,
};

use super::Builtin::*;
use super::PayloadKind::*;
use ParamType::*;
use TaskKind::*;

/// Image patterns `image.gen` can draw.
pub const GEN_PATTERNS: &[&str] = &["gradient", "checker", "noise", "solid"];
/// Output formats of `table.print`.
pub const TABLE_FORMATS: &[&str] = &["pretty", "csv", "jsonl", "parquet"];

/// Every function, in the order `--help` and the schema list them.
pub const FUNCTIONS: &[FunctionDef] = &[
    FunctionDef {
        id: SourceImages,
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
        one_of: &[],
        takes: &[],
        makes: &[Frame],
        hints: hints(true, SlotSize::SourceFrames, false),
        check: params::check::<params::SourceImages>,
        summary: "reads still images, one item per file, in file-name order",
    },
    FunctionDef {
        id: SourceVideo,
        name: "source.video",
        kinds: &[Head],
        inputs: NONE,
        params: &[
            p("path", PathOrUrl, true, "a file or URL ffmpeg can open"),
            p("limit", Count, false, "stop after this many frames"),
            p(
                "fps",
                NonNegative,
                false,
                "frames per second to emit; 0 = as fast as decoded (default)",
            ),
            p(
                "read_timeout_s",
                NonNegative,
                false,
                "seconds to wait for the next frame before the stream is taken for ended (a camera or server that stopped sending); 0 = for ever; default 30",
            ),
            p(
                "reconnect",
                Bool,
                false,
                "open a stream that ended or went silent again, with a growing pause, until the app is stopped; default: for live protocols (rtsp, rtmp, rtp, srt, udp, tcp URLs)",
            ),
            p(
                "start_s",
                NonNegative,
                false,
                "seconds into the video to start from (its first frame is the one shown at that time; `limit` counts from there); default 0",
            ),
        ],
        one_of: &[],
        takes: &[],
        makes: &[Frame],
        hints: hints(true, SlotSize::SourceFrames, false),
        check: params::check_source_video,
        summary: "decodes a video with an ffmpeg child process straight into shared memory",
    },
    FunctionDef {
        id: ImageGen,
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
        one_of: &[],
        takes: &[],
        makes: &[Frame],
        hints: hints(true, SlotSize::ParamFrames, false),
        check: params::check::<params::ImageGen>,
        summary: "synthetic RGB frames of a given size, count and rate",
    },
    FunctionDef {
        id: ImageResize,
        name: "image.resize",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("width", PositiveInt, true, "output width"),
            p("height", PositiveInt, true, "output height"),
        ],
        one_of: &[],
        takes: &[Frame],
        makes: &[Frame],
        hints: hints(true, SlotSize::ParamFrames, false),
        check: params::check::<params::ImageResize>,
        summary: "resizes frames (bilinear, SIMD)",
    },
    FunctionDef {
        id: ImageCrop,
        name: "image.crop",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("x", Count, true, "left edge"),
            p("y", Count, true, "top edge"),
            p("width", PositiveInt, true, "crop width"),
            p("height", PositiveInt, true, "crop height"),
        ],
        one_of: &[],
        takes: &[Frame],
        makes: &[Frame],
        hints: hints(true, SlotSize::ParamFrames, false),
        check: params::check::<params::ImageCrop>,
        summary: "cuts a rectangle out of each frame (clipped to the frame)",
    },
    FunctionDef {
        id: ImageShow,
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
                PathOrUrl,
                false,
                "write an MP4 (or any container ffmpeg knows by extension), or stream H.264 to an rtmp, rtsp, srt, udp, tcp or rtp URL",
            ),
            p(
                "fps",
                NonNegative,
                false,
                "frame rate of the video (default: its source's rate, else 25)",
            ),
            p(
                "mask",
                OneOf(&["blend", "cutout", "none"]),
                false,
                "a segmentation mask the item carries: blend it over the frame (default), cut the foreground out (RGBA PNG, needs `dir`) or ignore it",
            ),
        ],
        one_of: &["dir", "path"],
        takes: &[Frame, Table],
        makes: &[],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check_image_show,
        summary: "writes frames as image files or a video",
    },
    FunctionDef {
        id: TablePrint,
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
            p(
                "formulas",
                OneOf(&[params::FORMULAS_KEEP, params::FORMULAS_ESCAPE]),
                false,
                "csv: keep (default) or escape text cells a spreadsheet would run as formulas (a ' before =, +, -, @)",
            ),
        ],
        one_of: &[],
        takes: &[Any],
        makes: &[],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check_table_print,
        summary: "writes one row per frame (or per detection) as a table",
    },
    FunctionDef {
        id: TableFilter,
        name: "table.filter",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[p(
            "where",
            Text,
            true,
            "a predicate such as `score > 0.9 and class == 'face'`",
        )],
        one_of: &[],
        takes: &[Table],
        makes: &[Table],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check::<params::TableFilter>,
        summary: "keeps the rows of a table that match a predicate",
    },
    FunctionDef {
        id: TableSelect,
        name: "table.select",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[p(
            "columns",
            TextList,
            true,
            "the columns to keep, in order",
        )],
        one_of: &[],
        takes: &[Table],
        makes: &[Table],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check_table_select,
        summary: "keeps some columns of a table",
    },
    FunctionDef {
        id: TableMerge,
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
        one_of: &["on", "how"],
        takes: &[Any],
        makes: &[Table, Any],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check::<params::TableMerge>,
        summary: "joins or concatenates the tables of several inputs by source and seq",
    },
    FunctionDef {
        id: TrackDeepsort,
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
        one_of: &[],
        takes: &[Table],
        makes: &[Table],
        hints: hints(false, SlotSize::InputFrames, true),
        check: params::check::<params::TrackDeepsort>,
        summary: "DeepSORT: adds a `track_id` column to a detection table with embeddings",
    },
    FunctionDef {
        id: ModelPreprocess,
        name: "model.preprocess",
        kinds: &[Cpu],
        inputs: ONE_OR_TWO,
        params: &[p(
            "model",
            Text,
            true,
            "a model name from the manifest (apps/models.json)",
        )],
        one_of: &[],
        takes: &[Frame, Table],
        makes: &[Tensor],
        hints: model_hints(true, SlotSize::ModelInput),
        check: params::check::<params::ModelPreprocess>,
        summary: "turns frames into the model's input tensors",
    },
    FunctionDef {
        id: ModelInference,
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
        one_of: &[],
        takes: &[Tensor],
        makes: &[Tensor],
        hints: model_hints(true, SlotSize::ModelOutput),
        check: params::check::<params::ModelInference>,
        summary: "runs the model on its device's GPU agent",
    },
    FunctionDef {
        id: ModelPostprocess,
        name: "model.postprocess",
        kinds: &[Cpu],
        inputs: ONE_OR_TWO,
        params: &[
            p(
                "model",
                Text,
                true,
                "a model name from the manifest (apps/models.json)",
            ),
            p(
                "scale",
                PositiveInt,
                false,
                "a super-resolution model's factor (taken from the manifest; a different one is refused)",
            ),
        ],
        one_of: &[],
        takes: &[Tensor],
        makes: &[Table, Frame],
        hints: model_hints(false, SlotSize::InputFrames),
        check: params::check::<params::ModelPostprocess>,
        summary: "turns the model's output tensors into a detection table",
    },
    FunctionDef {
        id: CoreForward,
        name: "core.forward",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[],
        one_of: &[],
        takes: &[Any],
        makes: &[Any],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check::<params::NoParams>,
        summary:
            "forwards its input untouched (passes the shared-memory reference on, copies nothing)",
    },
    FunctionDef {
        id: BenchBlob,
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
        one_of: &[],
        takes: &[],
        makes: &[Tensor],
        hints: hints(true, SlotSize::ParamBytes, false),
        check: params::check::<params::BenchBlob>,
        summary: "emits opaque byte payloads of a given size (for transport benchmarks)",
    },
    FunctionDef {
        id: BenchSink,
        name: "bench.sink",
        kinds: &[Tail],
        inputs: ONE,
        params: &[],
        one_of: &[],
        takes: &[Tensor],
        makes: &[],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check::<params::NoParams>,
        summary: "receives `bench.blob` payloads and checks every byte (for transport benchmarks)",
    },
    FunctionDef {
        id: TestFault,
        name: "test.fault",
        kinds: &[Cpu],
        inputs: ONE,
        params: &[
            p("mode", OneOf(FAULT_MODES), true, "crash (abort), crash-on-start, garbage (send the supervisor bytes that decode as no message, once: the first process only), hang (SIGSTOP itself), ignore-stop (ignore SIGTERM and the inbox) or stall (sleep `stall_ms` once, heartbeats going on)"),
            p("after", Count, false, "items forwarded before the fault (default 0)"),
            p("stall_ms", Count, false, "stall: how long (default 1000)"),
        ],
        one_of: &[],
        takes: &[Any],
        makes: &[Any],
        hints: hints(false, SlotSize::InputFrames, false),
        check: params::check::<params::TestFault>,
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
