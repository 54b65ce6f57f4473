//! ONNX files read and rewritten without a protobuf library: [`wire`] splits protobuf messages
//! into fields, `model` reads the parts of `ModelProto` the rewrites touch and keeps every other
//! field as the file had it, and [`rewrite()`] folds the element-wise chains of PP-OCR-style
//! backbones into the convolutions around them before ONNX Runtime loads the model;
//! [`top1_head`] shrinks a classifier's outputs to the best class and its score.

mod cut;
mod depthwise;
mod fp16;
mod head;
mod model;
mod prelu;
mod rewrite;
mod tensor;
mod transpose;
mod winograd;
pub mod wire;

pub use cut::cut_at;
pub use fp16::fp16_to_fp32;
pub use head::{add_top1_head, top1_head};
pub use model::{Attribute, Graph, GraphError, Node, OnnxModel, Tensor};
pub use rewrite::{rewrite, rewrite_for_cpu, rewrite_model, RewriteReport};
pub use winograd::{winograd_convs, MIN_CHANNEL_BALANCE};
