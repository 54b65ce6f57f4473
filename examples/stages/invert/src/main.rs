//! `stage-invert`: an example user stage written on the `stage` SDK. It takes frames
//! and makes frames: each pixel's channels become `255 - value` (params.`every`: invert
//! only every n-th item and pass the others on untouched, default 1).

use stage::{Kind, Output, Stage, StageError};
use std::process::ExitCode;

fn main() -> ExitCode {
    Stage::new("stage-invert")
        .takes(Kind::Frame)
        .makes(Kind::Frame)
        .run_body(|ctx, item| {
            let every: u64 = ctx.param("every")?.unwrap_or(1).max(1);
            if item.seq() % every != 0 {
                return Ok(Output::Forward(item));
            }
            let frame = item
                .frame()
                .ok_or_else(|| StageError::BadInput("stage-invert takes frames".into()))?;
            ctx.frame(frame.width, frame.height, |out| {
                for (o, i) in out.iter_mut().zip(frame.data) {
                    *o = 255 - i;
                }
                Ok(())
            })
        })
}
