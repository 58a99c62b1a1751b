//! ONNX runtimes behind one interface: ONNX Runtime (`ort`, CPU or CUDA execution
//! provider) and tract (pure Rust, CPU). Inputs and outputs are named f32 arrays.

pub mod ort_rt;
pub mod tract_rt;

use anyhow::Result;

/// A named f32 array.
#[derive(Debug, Clone)]
pub struct NamedArray {
    /// Name of the graph input/output.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A loaded ONNX graph ready to run.
pub trait OnnxGraph {
    /// Declared input names, in graph order.
    fn input_names(&self) -> Vec<String>;
    /// Runs the graph; `inputs` must name every graph input.
    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>>;
    /// Human name of the runtime/device.
    fn describe(&self) -> String;
}

/// Orders `inputs` as the graph declares them, failing on a missing or unknown input.
pub fn ordered<'a>(declared: &[String], inputs: &'a [NamedArray]) -> Result<Vec<&'a NamedArray>> {
    for i in inputs {
        if !declared.contains(&i.name) {
            anyhow::bail!(
                "input {:?} is not an input of this graph (inputs: {})",
                i.name,
                declared.join(", ")
            );
        }
    }
    declared
        .iter()
        .map(|d| {
            inputs
                .iter()
                .find(|i| &i.name == d)
                .ok_or_else(|| anyhow::anyhow!("missing graph input {d:?} (inputs: {})", declared.join(", ")))
        })
        .collect()
}
