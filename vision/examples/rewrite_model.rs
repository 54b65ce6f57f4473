//! Writes an ONNX model as the GPU agent on `cpu:0` loads it, after
//! `vision::onnx_graph::rewrite_for_cpu` (float16 widened to float32, the rewrites, Winograd's
//! convolutions), so that other tools can run the same graph (tools/bench/models.sh and zoo.sh
//! give it to the Python references as context) or a person can open it in a viewer. Prints what was rewritten as one JSON line.
//!
//! ```text
//! rewrite_model IN.onnx OUT.onnx [--winograd-min N]
//! ```
//! OUT is a copy of IN when nothing matched. `--winograd-min N` rewrites 3×3 convolutions with
//! `Cin·Cout / (Cin + Cout) ≥ N` by Winograd (default: the agent's own threshold,
//! `MIN_CHANNEL_BALANCE`; tools/bench/winograd_layers.py uses 1 to show narrower layers too).

use std::process::ExitCode;

use vision::onnx_graph::{rewrite_for_cpu, OnnxModel, MIN_CHANNEL_BALANCE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        eprintln!("usage: rewrite_model IN.onnx OUT.onnx [--winograd-min N]");
        ExitCode::from(2)
    };
    let (input, output, min_product) = match args.as_slice() {
        [i, o] => (i, o, MIN_CHANNEL_BALANCE),
        [i, o, flag, n] if flag == "--winograd-min" => match n.parse() {
            Ok(n) => (i, o, n),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let result = std::fs::read(input)
        .map_err(|e| format!("{input}: {e}"))
        .and_then(|bytes| {
            let mut model = OnnxModel::parse(&bytes).map_err(|e| format!("{input}: {e}"))?;
            let report = rewrite_for_cpu(&mut model, Some(min_product));
            let out = if report.total() == 0 {
                bytes
            } else {
                model.encode()
            };
            std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))?;
            Ok(report)
        });
    match result {
        Ok(report) => {
            let r = report;
            println!(
                "{{\"model\": {input:?}, \"affine_into_conv\": {}, \"hard_swish\": {}, \"affine_into_pointwise\": {}, \"transposes_moved\": {}, \"affine_as_depthwise\": {}, \"prelu_as_relu\": {}, \"winograd\": {}, \"fp16_widened\": {}}}",
                r.affine_into_conv,
                r.hard_swish,
                r.affine_into_pointwise,
                r.transposes_moved,
                r.affine_as_depthwise,
                r.prelu_as_relu,
                r.winograd,
                r.fp16_widened
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rewrite_model: {e}");
            ExitCode::FAILURE
        }
    }
}
