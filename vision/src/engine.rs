//! A thin wrapper over `ort`: one process-wide ONNX Runtime environment ([`Runtime`]) and sessions
//! ([`Model`]) that take and return [`TensorF32`]s, with input shapes checked before ORT sees them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::{Result, VisionError};
use crate::model_bytes::edited;
use crate::native_tail::NativeTail;
use crate::onnx_graph::RewriteReport;
pub use crate::provider::Provider;
pub use crate::session_options::{ConvSearch, SessionOptions};
use crate::strips::Strips;
use crate::tensor::{TensorF32, TensorView};

/// Name of the environment variable that points at the ONNX Runtime shared library.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

// ORT allows one environment per process, and `ort` loads the library once: keep it here.
static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// The process's ONNX Runtime (library + environment) and the provider new sessions use.
#[derive(Debug, Clone)]
pub struct Runtime {
    env: Environment,
    lib: PathBuf,
    provider: Provider,
}

impl Runtime {
    /// Loads ONNX Runtime from `lib` and creates the process-wide environment, or returns the existing one
    /// (an error if it was loaded from another file).
    pub fn init(lib: &Path, provider: Provider) -> Result<Runtime> {
        check_provider(provider)?;
        if !lib.is_file() {
            return Err(VisionError::RuntimeMissing {
                path: lib.to_path_buf(),
            });
        }
        let mut guard = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((loaded, env)) = guard.as_ref() {
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if canon(loaded) != canon(lib) {
                return Err(VisionError::RuntimeInit {
                    path: lib.to_path_buf(),
                    msg: format!(
                        "ONNX Runtime is already loaded from {} in this process",
                        loaded.display()
                    ),
                });
            }
            return Ok(Runtime {
                env: env.clone(),
                lib: loaded.clone(),
                provider,
            });
        }
        let init_err = |msg: String| VisionError::RuntimeInit {
            path: lib.to_path_buf(),
            msg,
        };
        let builder = ort::init_from(lib).map_err(|e| init_err(e.to_string()))?;
        let env = builder
            .with_name("smartpipe")
            .build()
            .map_err(|e| init_err(e.to_string()))?;
        *guard = Some((lib.to_path_buf(), env.clone()));
        Ok(Runtime {
            env,
            lib: lib.to_path_buf(),
            provider,
        })
    }

    /// [`Runtime::init`] with the library named by `ORT_DYLIB_PATH`.
    pub fn from_env(provider: Provider) -> Result<Runtime> {
        match std::env::var_os(ORT_DYLIB_ENV) {
            Some(p) if !p.is_empty() => Self::init(Path::new(&p), provider),
            _ => Err(VisionError::RuntimeMissing {
                path: PathBuf::from(format!("${ORT_DYLIB_ENV} (unset)")),
            }),
        }
    }

    /// The same runtime, creating sessions on another provider.
    pub fn with_provider(&self, provider: Provider) -> Result<Runtime> {
        check_provider(provider)?;
        Ok(Runtime {
            provider,
            ..self.clone()
        })
    }

    /// The provider new sessions use.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The shared library in use.
    pub fn library(&self) -> &Path {
        &self.lib
    }

    /// The ORT environment, for callers that build sessions themselves.
    pub fn environment(&self) -> &Environment {
        &self.env
    }
}

fn check_provider(provider: Provider) -> Result<()> {
    match provider {
        Provider::Cpu => Ok(()),
        Provider::Cuda { .. } if cfg!(feature = "cuda") => Ok(()),
        Provider::Cuda { .. } => Err(VisionError::Provider {
            provider: provider.to_string(),
            msg: "vision was built without the `cuda` feature".into(),
        }),
    }
}

/// Name and shape (-1 = dynamic) of a model input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct IoInfo {
    pub name: String,
    pub shape: Vec<i64>,
    pub is_f32: bool,
}

/// A loaded model: an ORT session plus what it expects.
pub struct Model {
    pub(crate) name: String,
    path: PathBuf,
    provider: Provider,
    session: Session,
    inputs: Vec<IoInfo>,
    pub(crate) outputs: Vec<IoInfo>,
    rewrites: RewriteReport,
    /// Size of the `.onnx` file, and of the graph ORT loaded: the file's, or the edited bytes'
    /// (Winograd's transformed weights are 4× the layer's).
    file_bytes: u64,
    loaded_bytes: u64,
    /// Most batch rows per run (`None`: any); see [`crate::chunked`].
    max_rows: Option<usize>,
    /// Most input values per run: a bigger batch runs a few whole rows at a time.
    max_run_values: Option<usize>,
    /// Large inputs run in strips ([`crate::strips`]); `None`: always whole.
    strips: Option<Strips>,
    /// When only some outputs are wanted and the graph could not be cut to them at load
    /// ([`Model::keep_outputs`]): a run that leaves the others out, so nothing copies them
    /// (ONNX Runtime still runs every node).
    pub(crate) selected: Option<ort::session::RunOptions<ort::session::HasSelectedOutputs>>,
    /// The graph was cut at its heads and this decodes them ([`crate::native_tail`]); the
    /// outputs above are the decoder's.
    pub(crate) tail: Option<NativeTail>,
    /// Nodes of the file's graph the session does not run ([`Model::nodes_pruned`]).
    nodes_pruned: usize,
    /// The session allocates from the process's shared CPU arena ([`crate::shared_arena`]).
    shared_arena: bool,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("provider", &self.provider)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

fn io_info(outlets: &[ort::value::Outlet]) -> Vec<IoInfo> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => IoInfo {
                name: o.name().to_string(),
                shape: shape.to_vec(),
                is_f32: *ty == TensorElementType::Float32,
            },
            _ => IoInfo {
                name: o.name().to_string(),
                shape: vec![],
                is_f32: false,
            },
        })
        .collect()
}

/// Tensors as the (shape, values) views the session runs take.
fn views(inputs: &[TensorF32]) -> Vec<(&[usize], &[f32])> {
    inputs
        .iter()
        .map(|t| (t.shape.as_slice(), t.data.as_slice()))
        .collect()
}

impl Model {
    /// Creates a session for the `.onnx` file at `path`; `name` is used in every error message.
    pub fn load(rt: &Runtime, name: &str, path: &Path, opts: &SessionOptions) -> Result<Model> {
        if !path.is_file() {
            return Err(VisionError::ModelMissing {
                model: name.to_string(),
                path: path.to_path_buf(),
            });
        }
        let load_err = |msg: String| VisionError::ModelLoad {
            model: name.to_string(),
            path: path.to_path_buf(),
            msg,
        };
        let mut b = Session::builder(&rt.env).map_err(|e| load_err(e.to_string()))?;
        if opts.intra_threads > 0 {
            b = b
                .with_intra_threads(opts.intra_threads)
                .map_err(|e| load_err(e.to_string()))?;
        }
        if !opts.intra_spinning {
            b = b
                .with_intra_op_spinning(false)
                .map_err(|e| load_err(e.to_string()))?;
        }
        if opts.shared_arena && rt.provider == Provider::Cpu {
            crate::shared_arena::ensure_registered(&rt.env)
                .map_err(|e| load_err(format!("the shared CPU arena: {e}")))?;
            b = b
                .with_env_allocators()
                .map_err(|e| load_err(e.to_string()))?;
        }
        if !opts.memory_pattern {
            b = b
                .with_memory_pattern(false)
                .map_err(|e| load_err(e.to_string()))?;
        }
        if let Some(prefix) = &opts.profile_prefix {
            let mut p = prefix.clone().into_os_string();
            p.push(format!("-{name}"));
            b = b.with_profiling(p).map_err(|e| load_err(e.to_string()))?;
        }
        #[cfg(feature = "cuda")]
        if let Provider::Cuda { device_id } = rt.provider {
            use ort::ep::cuda::ConvAlgorithmSearch as Search;
            let search = match opts.conv_search {
                ConvSearch::Heuristic => Search::Heuristic,
                ConvSearch::Exhaustive => Search::Exhaustive,
                ConvSearch::Default => Search::Default,
            };
            use ort::ep::ArbitrarilyConfigurableExecutionProvider;
            let mut cuda = ort::ep::CUDA::default()
                .with_device_id(device_id)
                .with_conv_algorithm_search(search);
            for (k, v) in &opts.cuda_options {
                cuda = cuda.with_arbitrary_config(k, v);
            }
            b = b
                .with_execution_providers([cuda.build().error_on_failure()])
                .map_err(|e| VisionError::Provider {
                    provider: rt.provider.to_string(),
                    msg: e.to_string(),
                })?;
        }
        let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        let (session, rewrites, loaded_bytes, tail, nodes_pruned) =
            match edited(path, opts, rt.provider).map_err(load_err)? {
                Some(e) => (
                    b.commit_from_memory(&e.bytes),
                    e.report,
                    e.bytes.len() as u64,
                    e.tail,
                    e.nodes_pruned,
                ),
                None => (
                    b.commit_from_file(path),
                    RewriteReport::default(),
                    file_bytes,
                    None,
                    0,
                ),
            };
        let session = session.map_err(|e| load_err(e.to_string()))?;
        let inputs = io_info(session.inputs());
        let mut outputs = io_info(session.outputs());
        for io in inputs.iter().chain(&outputs) {
            if !io.is_f32 {
                return Err(load_err(format!(
                    "`{}` is not a float32 tensor; only float32 is supported",
                    io.name
                )));
            }
        }
        if let Some(cut) = &tail {
            outputs = cut
                .outputs
                .iter()
                .zip(cut.tail.output_shapes())
                .map(|(name, shape)| IoInfo {
                    name: name.clone(),
                    shape,
                    is_f32: true,
                })
                .collect();
        }
        let mut model = Model {
            name: name.to_string(),
            path: path.to_path_buf(),
            provider: rt.provider,
            session,
            inputs,
            outputs,
            rewrites,
            file_bytes,
            loaded_bytes,
            max_rows: None,
            max_run_values: None,
            strips: None,
            selected: None,
            tail: tail.map(|cut| cut.tail),
            nodes_pruned,
            shared_arena: opts.shared_arena && rt.provider == Provider::Cpu,
        };
        if opts.warm_up {
            model.warm_up()?;
        }
        Ok(model)
    }

    /// Nodes of the file's graph the session does not have: only outputs that are not wanted
    /// need them (`SessionOptions::outputs`), or a native tail decodes them.
    pub fn nodes_pruned(&self) -> usize {
        self.nodes_pruned
    }

    /// Whether the session allocates from the process's shared CPU arena
    /// ([`crate::shared_arena`]) rather than an arena of its own.
    pub fn shared_arena(&self) -> bool {
        self.shared_arena
    }

    /// The decoder that replaced the graph's tail, if one did ([`crate::native_tail`]).
    pub fn native_tail(&self) -> Option<NativeTail> {
        self.tail
    }

    /// The model's name (as given to [`Model::load`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `.onnx` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the graph the session was made from (the file's size, or the rewritten
    /// graph's when the rewrites changed it).
    pub fn loaded_bytes(&self) -> u64 {
        self.loaded_bytes
    }

    /// Bytes of the `.onnx` file.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// What the graph rewrites changed before the session was made (all zero when off or
    /// when nothing matched).
    pub fn rewrites(&self) -> RewriteReport {
        self.rewrites
    }

    /// The execution provider the session runs on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Inputs as declared by the model.
    pub fn inputs(&self) -> &[IoInfo] {
        &self.inputs
    }

    /// Outputs as declared by the model.
    pub fn outputs(&self) -> &[IoInfo] {
        &self.outputs
    }

    /// A custom metadata value of the model (e.g. the recogniser's `character` dictionary).
    pub fn metadata(&self, key: &str) -> Result<Option<String>> {
        let meta = self.session.metadata().map_err(|e| VisionError::Metadata {
            model: self.name.clone(),
            msg: e.to_string(),
        })?;
        Ok(meta.custom(key))
    }

    /// Runs the model once on zeros: dynamic dimensions become 1 for the batch axis and 32 elsewhere.
    pub fn warm_up(&mut self) -> Result<()> {
        let inputs: Vec<TensorF32> = self
            .inputs
            .iter()
            .map(|io| {
                let shape = io
                    .shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| match (i, d) {
                        (_, d) if d > 0 => d as usize,
                        (0, _) => 1,
                        _ => 32,
                    })
                    .collect();
                TensorF32::zeros(shape)
            })
            .collect();
        self.run(&inputs).map(drop)
    }

    /// Checks `inputs` (positional, one per model input) against the declared shapes.
    pub fn check_inputs(&self, inputs: &[TensorF32]) -> Result<()> {
        self.check_views(&views(inputs))
    }

    /// [`Model::check_inputs`] of inputs given as (shape, values).
    fn check_views(&self, inputs: &[(&[usize], &[f32])]) -> Result<()> {
        if inputs.len() != self.inputs.len() {
            return Err(VisionError::InputCount {
                model: self.name.clone(),
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        for ((shape, data), io) in inputs.iter().zip(&self.inputs) {
            let ok = shape.len() == io.shape.len()
                && shape
                    .iter()
                    .zip(&io.shape)
                    .all(|(&g, &e)| g > 0 && (e < 0 || g as i64 == e))
                && data.len() == shape.iter().product::<usize>();
            if !ok {
                return Err(VisionError::InputShape {
                    model: self.name.clone(),
                    input: io.name.clone(),
                    expected: io.shape.clone(),
                    got: shape.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// Lets a large single input run in strips along one axis ([`crate::strips`]);
    /// `None`: always whole.
    pub fn set_strips(&mut self, strips: Option<Strips>) {
        self.strips = strips;
    }

    /// Caps the batch rows of one run: a bigger single-input batch runs in parts.
    pub fn set_max_rows(&mut self, max_rows: Option<usize>) {
        self.max_rows = max_rows.filter(|&k| k > 0);
    }

    /// Caps the input values of one run: a bigger single-input batch runs a whole number
    /// of rows at a time (at least one), so its activations stay in cache
    /// ([`crate::chunked::rows_for`]).
    pub fn set_max_run_values(&mut self, max_values: Option<usize>) {
        self.max_run_values = max_values.filter(|&v| v > 0);
    }

    /// The most rows one run of a single-input model takes: the cap set with
    /// [`Model::set_max_rows`], and a fixed batch axis of the model itself (MoveNet's
    /// `[1, H, W, 3]`), so that a stage batching several items still runs such a model.
    pub fn rows_per_run(&self) -> Option<usize> {
        let fixed = match self.inputs.as_slice() {
            [one] => one.shape.first().filter(|&&d| d > 0).map(|&d| d as usize),
            _ => None,
        };
        match (self.max_rows, fixed) {
            (Some(cap), Some(fixed)) => Some(cap.min(fixed)),
            (cap, fixed) => cap.or(fixed),
        }
    }

    /// The most rows of a single input of `shape` one run takes: [`Model::rows_per_run`] and
    /// the value cap of [`Model::set_max_run_values`]; `None`: the whole batch at once.
    pub fn rows_per_run_for(&self, shape: &[usize]) -> Option<usize> {
        crate::chunked::rows_for(self.rows_per_run(), self.max_run_values, shape)
    }

    /// Runs the model: one tensor per input, in the model's input order; returns the outputs in order.
    pub fn run(&mut self, inputs: &[TensorF32]) -> Result<Vec<TensorF32>> {
        match inputs {
            [one] => self.run_one(one.view()),
            _ => self.run_whole(inputs),
        }
    }

    /// Runs a single-input model on `input` read where it lies (in caps of rows, in
    /// strips, as the model's settings say; a whole run reads it in place, copied nowhere).
    pub fn run_one(&mut self, input: TensorView<'_>) -> Result<Vec<TensorF32>> {
        input.check(&format!("input of model '{}'", self.name))?;
        let cap = self.rows_per_run_for(input.shape);
        if let Some(k) = cap.filter(|&k| input.shape.first().is_some_and(|&n| n > k)) {
            return crate::chunked::run_rows(self, input, k);
        }
        self.run_part(input)
    }

    /// Runs rows of a single input, already within the row caps: in strips when the model
    /// has them (they cut a tensor of their own), else as a view of the caller's values.
    pub(crate) fn run_part(&mut self, input: TensorView<'_>) -> Result<Vec<TensorF32>> {
        if let Some(plan) = self.strips {
            let name = self.name.clone();
            return crate::strips::run_in_strips(&name, &plan, input, |part| {
                self.run_views(&[(part.shape, part.data)])
            });
        }
        self.run_views(&[(input.shape, input.data)])
    }

    /// One run of the whole inputs.
    fn run_whole(&mut self, inputs: &[TensorF32]) -> Result<Vec<TensorF32>> {
        self.run_views(&views(inputs))
    }

    /// One run of inputs given as (shape, values).
    fn run_views(&mut self, inputs: &[(&[usize], &[f32])]) -> Result<Vec<TensorF32>> {
        self.check_views(inputs)?;
        let run_err = |msg: String| VisionError::Run {
            model: self.name.clone(),
            msg,
        };
        let mut values = Vec::with_capacity(inputs.len());
        for ((shape, data), io) in inputs.iter().zip(&self.inputs) {
            let v = TensorRef::from_array_view((shape.to_vec(), *data))
                .map_err(|e| run_err(format!("input `{}`: {e}", io.name)))?;
            values.push((io.name.clone(), v));
        }
        let outputs = match &self.selected {
            Some(options) => self.session.run_with_options(values, options),
            None => self.session.run(values),
        }
        .map_err(|e| run_err(e.to_string()))?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for (name, value) in outputs.iter() {
            let (shape, data) =
                value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| VisionError::Output {
                        model: self.name.clone(),
                        output: name.to_string(),
                        msg: e.to_string(),
                    })?;
            let shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            result.push(TensorF32::new(shape, data.to_vec())?);
        }
        match self.tail {
            Some(tail) => tail.decode(&self.name, &result),
            None => Ok(result),
        }
    }
}
