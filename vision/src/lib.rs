//! `vision`: the model side of SmartPipe, independent of the pipeline crates.
//!
//! - [`manifest`]: the model manifest (`apps/models.json`) and its per-family default parameters;
//! - [`device`]: the CUDA device to run on (feature `cuda`), else `cpu:0` with the reason;
//! - [`engine`]: ONNX Runtime (via `ort`, loaded dynamically) sessions that take and return [`TensorF32`],
//!   with the graph rewrites of [`onnx_graph`] applied as a model loads;
//! - pre/post-processing as pure functions per model family: [`mtcnn`] (faces + landmarks),
//!   [`ppocr`] (PP-OCRv4 text detection, angle classification, recognition) and [`yolo`] (YOLOX, YOLOv5,
//!   YOLOv8 layouts) and [`segment`] (alpha masks and multi-class logits) and [`superres`]
//!   (tiled super-resolution) and [`pose`] (MoveNet MultiPose keypoints; [`centernet`] is a YOLO
//!   layout), with shared helpers in [`geometry`], [`imgproc`] and [`tf_resize`];
//! - [`tracking`]: DeepSORT (Kalman filter, appearance + IoU matching, track life cycle);
//! - [`pipelines`]: in-process end-to-end loops over those steps (the reference the pipeline is checked
//!   and benchmarked against).

pub mod centernet;
pub mod chunked;
pub mod device;
pub mod embedder;
pub mod engine;
pub mod error;
pub mod geometry;
pub mod imgproc;
pub mod manifest;
mod manifest_params;
mod model_bytes;
mod model_outputs;
pub mod mtcnn;
pub mod native_tail;
pub mod onnx_graph;
pub mod pipelines;
pub mod pose;
pub mod pose_decode;
pub mod ppocr;
pub mod provider;
pub mod pyramid;
pub mod resize;
pub mod segment;
pub mod segment_mask;
pub mod session_options;
pub mod shared_arena;
pub mod strips;
pub mod superres;
pub mod tensor;
pub mod tf_resize;
pub mod tracking;
pub mod yolo;

pub use engine::{ConvSearch, Model, Provider, Runtime, SessionOptions};
pub use error::{Result, VisionError};
pub use geometry::{BBox, Detection};
pub use tensor::{f32s_of_le, AsTensorView, RgbImage, RgbView, TensorF32, TensorView};
