//! Writes an ONNX model as the GPU agent loads it, after vision::onnx_graph's rewrites, so that
//! other tools can run the same graph (tools/bench/models.sh gives it to the rapidocr reference
//! as context) or a person can open it in a viewer. Prints what was rewritten as one JSON line.
//!
//! ```text
//! rewrite_model IN.onnx OUT.onnx
//! ```
//! OUT is a copy of IN when nothing matched.

use std::process::ExitCode;

use vision::onnx_graph::rewrite;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: rewrite_model IN.onnx OUT.onnx");
        return ExitCode::from(2);
    };
    let result = std::fs::read(input)
        .map_err(|e| format!("{input}: {e}"))
        .and_then(|bytes| {
            let rewritten = rewrite(&bytes).map_err(|e| format!("{input}: {e}"))?;
            let (out, report) = match rewritten {
                Some((out, report)) => (out, Some(report)),
                None => (bytes, None),
            };
            std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))?;
            Ok(report)
        });
    match result {
        Ok(report) => {
            let r = report.unwrap_or_default();
            println!(
                "{{\"model\": {input:?}, \"affine_into_conv\": {}, \"hard_swish\": {}, \"affine_into_pointwise\": {}}}",
                r.affine_into_conv, r.hard_swish, r.affine_into_pointwise
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rewrite_model: {e}");
            ExitCode::FAILURE
        }
    }
}
