//! Which outputs a [`Model`]'s runs return: [`Model::keep_outputs`] checks the names a manifest
//! declares and has ONNX Runtime leave the others out, where the graph was not already cut to
//! them when it loaded (`SessionOptions::outputs`).

use crate::engine::Model;
use crate::error::{Result, VisionError};

impl Model {
    /// Runs return only the outputs named in `wanted` (in the model's order); every
    /// output when `wanted` names them all or is empty. A name that is not an output of
    /// the model is an error naming it.
    pub fn keep_outputs(&mut self, wanted: &[String]) -> Result<()> {
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !self.outputs.iter().any(|o| &o.name == *w))
        {
            return Err(VisionError::Output {
                model: self.name.clone(),
                output: unknown.clone(),
                msg: format!(
                    "declared but not an output of the model (it has {})",
                    self.outputs
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if self.tail.is_some() {
            // The session's outputs are the heads, all of which the decoder reads; it gives
            // every output it decodes (one, for the tails there are).
            return Ok(());
        }
        let left_out: Vec<String> = self
            .outputs
            .iter()
            .filter(|o| !wanted.is_empty() && !wanted.contains(&o.name))
            .map(|o| o.name.clone())
            .collect();
        if left_out.is_empty() {
            self.selected = None;
            return Ok(());
        }
        let selector = left_out
            .iter()
            .fold(ort::session::OutputSelector::default(), |s, name| {
                s.without(name.clone())
            });
        let options = ort::session::RunOptions::new()
            .map_err(|e| VisionError::Run {
                model: self.name.clone(),
                msg: e.to_string(),
            })?
            .with_outputs(selector);
        self.outputs.retain(|o| !left_out.contains(&o.name));
        self.selected = Some(options);
        Ok(())
    }
}
