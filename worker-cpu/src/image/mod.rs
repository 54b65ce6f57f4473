//! The image family: CPU bodies on frames (`image.resize`, `image.crop`, and the
//! pass-through `core.forward`), the frame sinks (`image.show`, and `bench.sink`) and
//! the drawing of a segmentation mask over a frame.

pub mod bodies;
pub mod mask_show;
pub mod sinks;
pub mod video_out;
pub mod video_segments;
