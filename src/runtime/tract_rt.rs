//! tract (pure Rust, CPU), batch dimension kept symbolic.

use anyhow::{anyhow, Result};
use tract_onnx::prelude::*;

use super::{ordered, NamedArray, OnnxGraph};

/// An optimised, runnable tract plan.
pub struct TractGraph {
    plan: std::sync::Arc<TypedRunnableModel>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl TractGraph {
    /// Loads, optimises and plans a model from bytes.
    pub fn new(model: &[u8]) -> Result<Self> {
        let m = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(model))
            .map_err(|e| anyhow!("tract cannot read the model: {e}"))?;
        let inputs = m
            .input_outlets()?
            .iter()
            .map(|o| m.node(o.node).name.clone())
            .collect();
        let outputs = m
            .output_outlets()?
            .iter()
            .map(|o| {
                m.outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| m.node(o.node).name.clone())
            })
            .collect();
        let plan = m
            .into_optimized()
            .map_err(|e| anyhow!("tract cannot optimise the model: {e}"))?
            .into_runnable()
            .map_err(|e| anyhow!("tract cannot plan the model: {e}"))?;
        Ok(TractGraph {
            plan,
            inputs,
            outputs,
        })
    }
}

impl OnnxGraph for TractGraph {
    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>> {
        let ins = ordered(&self.inputs, inputs)?;
        let mut tv = TVec::new();
        for i in ins {
            let t = Tensor::from_shape(&i.shape, &i.data).map_err(|e| anyhow!("input {}: {e}", i.name))?;
            tv.push(t.into_tvalue());
        }
        let out = self.plan.run(tv).map_err(|e| anyhow!("tract: {e}"))?;
        out.iter()
            .zip(&self.outputs)
            .map(|(t, name)| {
                let v = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| anyhow!("output {name}: {e}"))?;
                Ok(NamedArray {
                    name: name.clone(),
                    shape: v.shape().to_vec(),
                    data: v.iter().copied().collect(),
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        "tract (CPU)".into()
    }
}
