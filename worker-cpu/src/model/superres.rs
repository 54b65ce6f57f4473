//! Super-resolution (family `superres`): pre-processing cuts the frame into tiles with the
//! model's border (vision::superres), post-processing stitches the upscaled tiles into a new,
//! larger frame written to this stage's pool, which flows on like any frame (image functions,
//! `image.show`, an MP4). The original frame is released there.

use super::{from_json, to_json, vision_err, Output, Parts, Step};
use crate::StageError;
use protocol::messages::{Envelope, LossReason};
use stage::{Body, Emit, Item};
use vision::manifest::{Manifest, TensorSpec};
use vision::superres::{self, SuperresParams, Tiling};
use vision::{RgbImage, RgbView, TensorF32};

struct SuperresStep {
    pre: bool,
    model: String,
    params: SuperresParams,
    /// The model's fixed input (height, width) when its manifest entry declares one.
    fixed: (Option<usize>, Option<usize>),
}

/// A declared [N,3,H,W] shape (any dimension may be dynamic), else what is wrong with it.
fn nchw3(spec: &TensorSpec) -> Result<(Option<usize>, Option<usize>), String> {
    match spec.shape.as_slice() {
        [_, c, h, w] if *c == 3 || *c == -1 => {
            let fixed = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
            Ok((fixed(*h), fixed(*w)))
        }
        other => Err(format!(
            "`{}` is declared {other:?}, a super-resolution model takes and gives [N,3,H,W]",
            spec.name
        )),
    }
}

pub fn step(manifest: &Manifest, model: &str, pre: bool) -> Result<Box<dyn Step>, StageError> {
    let entry = manifest.model(model).map_err(vision_err)?;
    let params = entry.superres_params().map_err(vision_err)?;
    let unfit = |msg: String| {
        StageError::Input(format!(
            "model `{model}` (family superres): {msg}: not a super-resolution model"
        ))
    };
    let mut fixed = (None, None);
    if let Some(input) = entry.inputs.first() {
        fixed = nchw3(input).map_err(unfit)?;
    }
    if let Some(output) = entry.outputs.first() {
        nchw3(output).map_err(unfit)?;
    }
    if entry.inputs.len() > 1 || entry.outputs.len() > 1 {
        return Err(unfit(format!(
            "it declares {} inputs and {} outputs, one of each expected",
            entry.inputs.len(),
            entry.outputs.len()
        )));
    }
    Ok(Box::new(SuperresStep {
        pre,
        model: model.to_string(),
        params,
        fixed,
    }))
}

impl Step for SuperresStep {
    fn run(
        &mut self,
        img: RgbView<'_>,
        parts: &Parts,
        outputs: Vec<TensorF32>,
        _env: &Envelope,
    ) -> Result<Output, StageError> {
        if self.pre {
            let t = superres::tiling(&self.model, img.width, img.height, &self.params, self.fixed)
                .map_err(vision_err)?;
            let tensor = superres::preprocess(img, &t, &self.params).map_err(vision_err)?;
            return Ok(Output::Tensors {
                state: Some(to_json(&t)?),
                tensors: vec![tensor],
            });
        }
        let t: Tiling = from_json(parts)?;
        if (t.width, t.height) != (img.width, img.height) {
            return Err(StageError::Input(format!(
                "model `{}`: tiles planned for {}×{}, the frame is {}×{}",
                self.model, t.width, t.height, img.width, img.height
            )));
        }
        let out = outputs.first().ok_or_else(|| {
            StageError::Input(format!("model `{}` returned no output", self.model))
        })?;
        let frame =
            superres::postprocess(&self.model, out, &t, &self.params).map_err(vision_err)?;
        Ok(Output::Frame(frame))
    }
}

/// Sends `img` on as the item's frame, in place of the frame and tensors it came with (whose
/// holds are given back). A frame larger than this stage's slots is counted as bad input,
/// naming the task and model; in a best-effort app with no free slot the item is shed.
pub fn send_frame(body: &mut Body<'_>, item: Item, img: RgbImage) -> Result<(), StageError> {
    let task = body.task_name().to_string();
    let model = body
        .params()
        .get("model")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    let pool = body.node().output_pool().map_err(|e| {
        StageError::Unsupported(format!(
            "task '{task}', model `{model}`: no pool for the upscaled frames ({e}): the model's scale was not known when the app was read (is the manifest where `start` looks for it?)"
        ))
    })?;
    let len = img.data.len();
    if len as u64 > pool.slot_size() {
        tracing::warn!(
            source = %item.source(),
            seq = item.seq(),
            "task '{task}', model `{model}`: the upscaled frame {}×{} needs {len} bytes, more than the {}-byte slots planned for this stage; item skipped",
            img.width,
            img.height,
            pool.slot_size()
        );
        return body.lose(item, LossReason::BadInput);
    }
    let written = body.write_frame(img.width as u32, img.height as u32, |out| {
        if out.len() != img.data.len() {
            return Err(stage::StageError::Failed(format!(
                "an upscaled frame of {} bytes for a {}-byte slot",
                img.data.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&img.data);
        Ok(())
    })?;
    let Ok(written) = written else {
        return body.lose(item, LossReason::Shed);
    };
    let Some(frame) = written.frame_payload() else {
        return Err(StageError::Input(format!(
            "task '{task}': the upscaled frame lost its size"
        )));
    };
    // The input is left out of the payload: the send releases it.
    body.send(Emit::of(item).payload(frame).written(written))
}
