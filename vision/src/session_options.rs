//! The settings of an ONNX Runtime session ([`SessionOptions`]): threads, graph rewrites,
//! memory pattern, profiling and the CUDA provider's options, read from the environment
//! where a user tunes them.

use std::path::PathBuf;

use crate::error::{Result, VisionError};

/// Session settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Intra-op threads (0 = ORT's default).
    pub intra_threads: usize,
    /// Run the model once on zeros after loading.
    pub warm_up: bool,
    /// Let idle intra-op threads spin before they sleep (ORT's default). Off where the session
    /// shares its cores with other busy processes: a spinning thread takes a core they need.
    pub intra_spinning: bool,
    /// How the CUDA provider picks each convolution's cuDNN algorithm (ignored on the CPU).
    pub conv_search: ConvSearch,
    /// ORT's memory-pattern planning (preallocating one block per input shape seen).
    pub memory_pattern: bool,
    /// Write ORT's per-node profile (JSON, ORT appends a timestamp) under this prefix.
    pub profile_prefix: Option<PathBuf>,
    /// Further CUDA provider options by ORT's names (`cudnn_conv_use_max_workspace`, …).
    pub cuda_options: Vec<(String, String)>,
    /// Apply [`crate::onnx_graph::rewrite`] to the model before ORT loads it.
    pub graph_rewrites: bool,
    /// With `graph_rewrites`, on the CPU at one intra-op thread: wide 3×3 convolutions by
    /// Winograd's F(4×4, 3×3) ([`crate::onnx_graph::winograd_convs`]). Set per model (the
    /// manifest's `winograd`, on by default); [`winograd_override`] reads the environment's
    /// say for all.
    pub winograd: bool,
    /// On the CPU: allocate from the process's one shared arena ([`crate::shared_arena`])
    /// instead of an arena of the session's own.
    pub shared_arena: bool,
    /// Append [`crate::onnx_graph::top1_head`] to the model's outputs: each output's last axis
    /// becomes `[best class index, its score]`. Set per model (the manifest's `output_head`);
    /// a model it cannot be added to fails to load.
    pub top1_outputs: bool,
    /// Cut the graph at the heads this decoder reads and decode them natively
    /// ([`crate::native_tail`]). Set per model (the manifest's `native_tail`); a graph
    /// without those heads fails to load.
    pub native_tail: Option<crate::native_tail::NativeTail>,
    /// The outputs wanted (empty: all). With `graph_rewrites`, a graph that has others is cut
    /// to these before ONNX Runtime loads it, so the nodes only the others need never run
    /// (the agent passes the manifest's declared outputs; [`crate::Model::keep_outputs`] then
    /// checks the names).
    pub outputs: Vec<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            intra_threads: 1,
            warm_up: false,
            intra_spinning: true,
            conv_search: ConvSearch::Default,
            memory_pattern: true,
            profile_prefix: None,
            cuda_options: Vec::new(),
            graph_rewrites: true,
            winograd: true,
            shared_arena: false,
            top1_outputs: false,
            native_tail: None,
            outputs: Vec::new(),
        }
    }
}

impl SessionOptions {
    /// The tuning and diagnostic settings from the environment: `SMARTPIPE_CUDNN_CONV_SEARCH`
    /// ([`ConvSearch`]), `SMARTPIPE_ORT_MEM_PATTERN=0|1` (memory pattern off or on),
    /// `SMARTPIPE_ORT_WARM_UP=0|1` (a run on zeros after each load, or none),
    /// `SMARTPIPE_ORT_PROFILE=PREFIX` (per-node profile files),
    /// `SMARTPIPE_CUDA_OPTIONS=key=value,…` (CUDA provider options by ORT's names),
    /// `SMARTPIPE_GRAPH_REWRITES=0` (load models as their files are, without the rewrites),
    /// and `SMARTPIPE_ORT_SHARED_ARENA=0|1` (an arena per session, or one for all).
    pub fn with_env(mut self) -> Result<SessionOptions> {
        self.conv_search = ConvSearch::from_env()?;
        self.shared_arena = env_switch("SMARTPIPE_ORT_SHARED_ARENA", self.shared_arena)?;
        self.memory_pattern = env_switch("SMARTPIPE_ORT_MEM_PATTERN", self.memory_pattern)?;
        self.warm_up = env_switch("SMARTPIPE_ORT_WARM_UP", self.warm_up)?;
        self.graph_rewrites = env_switch("SMARTPIPE_GRAPH_REWRITES", self.graph_rewrites)?;
        if let Some(p) = std::env::var_os("SMARTPIPE_ORT_PROFILE").filter(|p| !p.is_empty()) {
            self.profile_prefix = Some(PathBuf::from(p));
        }
        if let Ok(list) = std::env::var("SMARTPIPE_CUDA_OPTIONS") {
            self.cuda_options = parse_options(&list)?;
        }
        Ok(self)
    }
}

/// `SMARTPIPE_ORT_WINOGRAD=0|1`: Winograd's convolutions off, or on, for every model whatever
/// its manifest entry says (for comparisons); `None` when unset.
pub fn winograd_override() -> Result<Option<bool>> {
    match std::env::var_os("SMARTPIPE_ORT_WINOGRAD") {
        None => Ok(None),
        Some(_) => env_switch("SMARTPIPE_ORT_WINOGRAD", false).map(Some),
    }
}

/// An on/off setting from the environment (`0` or `1`), else `default`.
fn env_switch(name: &'static str, default: bool) -> Result<bool> {
    match std::env::var(name).as_deref() {
        Err(_) => Ok(default),
        Ok("1") => Ok(true),
        Ok("0") => Ok(false),
        Ok(v) => Err(VisionError::Setting {
            name,
            value: v.into(),
            msg: "expected 0 or 1",
        }),
    }
}

/// `key=value,key=value` (`SMARTPIPE_CUDA_OPTIONS`) as pairs.
fn parse_options(list: &str) -> Result<Vec<(String, String)>> {
    list.split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
            _ => Err(VisionError::Setting {
                name: "SMARTPIPE_CUDA_OPTIONS",
                value: list.into(),
                msg: "expected key=value pairs separated by commas",
            }),
        })
        .collect()
}

/// cuDNN convolution algorithm choice on the CUDA provider. ORT's default, `Exhaustive`,
/// times every algorithm the first time a convolution sees an input shape, and MTCNN's
/// image pyramid and candidate batches change the shapes call after call: on an H200 the
/// faces loop ran 6.4× slower with it, and 1.8× slower with `Heuristic`, than with
/// `Default` (cuDNN's default algorithm, no search; BENCHMARKS.md, "CUDA"). Models with
/// fixed shapes may gain from a search: set `SMARTPIPE_CUDNN_CONV_SEARCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvSearch {
    Heuristic,
    Exhaustive,
    /// cuDNN's default algorithm, no search.
    Default,
}

impl ConvSearch {
    /// Environment variable that chooses it for the agent and the in-process loops.
    pub const ENV: &'static str = "SMARTPIPE_CUDNN_CONV_SEARCH";

    /// `$SMARTPIPE_CUDNN_CONV_SEARCH` (`heuristic`, `exhaustive` or `default`), else `Default`.
    pub fn from_env() -> Result<ConvSearch> {
        match std::env::var(Self::ENV) {
            Err(_) => Ok(ConvSearch::Default),
            Ok(v) => v.parse(),
        }
    }
}

impl std::str::FromStr for ConvSearch {
    type Err = VisionError;
    fn from_str(s: &str) -> Result<ConvSearch> {
        match s.to_ascii_lowercase().as_str() {
            "heuristic" => Ok(ConvSearch::Heuristic),
            "exhaustive" => Ok(ConvSearch::Exhaustive),
            "default" => Ok(ConvSearch::Default),
            _ => Err(VisionError::Setting {
                name: ConvSearch::ENV,
                value: s.into(),
                msg: "expected heuristic, exhaustive or default",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_options_parse_as_pairs_and_bad_ones_name_the_variable() {
        assert_eq!(
            parse_options("cudnn_conv_use_max_workspace=0, prefer_nhwc=1,").unwrap(),
            vec![
                ("cudnn_conv_use_max_workspace".to_string(), "0".to_string()),
                ("prefer_nhwc".to_string(), "1".to_string())
            ]
        );
        assert!(parse_options("").unwrap().is_empty());
        let e = parse_options("prefer_nhwc").unwrap_err().to_string();
        assert!(
            e.contains("SMARTPIPE_CUDA_OPTIONS") && e.contains("key=value"),
            "{e}"
        );
    }
}
