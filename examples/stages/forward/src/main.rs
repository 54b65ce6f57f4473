//! `stage-forward`: the smallest user stage on the `stage` SDK. It takes anything and
//! passes every item on untouched (its shared memory travels on, nothing is copied):
//! what `supervisor bench stages` measures beside the built-in `core.forward`.

use stage::{Kind, Output, Stage};
use std::process::ExitCode;

fn main() -> ExitCode {
    Stage::new("stage-forward")
        .takes(Kind::Any)
        .makes(Kind::Any)
        .run_body(|_, item| Ok(Output::Forward(item)))
}
