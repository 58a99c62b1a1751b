//! The one runtime layer: every network (EDM denoiser, ADM feature extractor,
//! discriminator, FID Inception) runs through a [`Network`] handle on one of three runtimes
//! ([`Runtime`]: libtorch eager on the CPU or CUDA, ONNX Runtime with its CPU or CUDA
//! execution provider, tract on the CPU), chosen together with a device as a [`Backend`].
//!
//! Inputs and outputs are named row-major f32 arrays ([`NamedArray`]). A network declares
//! its inputs ([`batch::InputSpec`]); [`batch`] checks given arrays against them (one error
//! style), fills omitted optional inputs and splits the leading (batch) dimension into
//! chunks. The engines behind it: [`ort_rt`] and [`tract_rt`] (ONNX graphs) and [`tch_rt`]
//! (the libtorch networks), all behind [`OnnxGraph`].

pub mod batch;
pub mod network;
pub mod ort_rt;
pub mod tch_rt;
pub mod tract_rt;

use anyhow::{bail, Result};

pub use network::{NetInfo, NetKind, Network};

use crate::device::DeviceSpec;

/// Which runtime evaluates a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// libtorch, eager (CPU or CUDA).
    Tch,
    /// ONNX Runtime (CPU or CUDA execution provider), on an .onnx file or an in-memory export.
    Ort,
    /// tract (pure Rust, CPU).
    Tract,
}

impl Runtime {
    /// Lower-case name as on the command line (`tch`, `ort`, `tract`).
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Tch => "tch",
            Runtime::Ort => "ort",
            Runtime::Tract => "tract",
        }
    }
}

/// A runtime on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// The runtime.
    pub runtime: Runtime,
    /// The device (tract: the CPU only).
    pub device: DeviceSpec,
}

impl Backend {
    /// `runtime` on `device`.
    pub fn new(runtime: Runtime, device: DeviceSpec) -> Self {
        Backend { runtime, device }
    }
}

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

impl NamedArray {
    /// An array named `name`.
    pub fn new(name: &str, shape: Vec<usize>, data: Vec<f32>) -> Self {
        NamedArray {
            name: name.into(),
            shape,
            data,
        }
    }
}

/// A loaded graph ready to run: an ONNX graph on ort or tract, or a libtorch network.
pub trait OnnxGraph {
    /// Declared input names, in graph order.
    fn input_names(&self) -> Vec<String>;
    /// Runs the graph; `inputs` must name every graph input.
    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>>;
    /// Human name of the runtime/device.
    fn describe(&self) -> String;
    /// Hint: the graph will be called many times with mostly unchanged inputs (a sampler's
    /// denoiser). ONNX Runtime on CUDA then keeps inputs and outputs bound to device memory
    /// (IoBinding); elsewhere nothing changes.
    fn repeated_calls(&mut self) {}
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

/// Loads ONNX model bytes on ONNX Runtime (CPU or CUDA EP) or tract (CPU only). libtorch
/// runs checkpoints, not ONNX graphs: [`Runtime::Tch`] is an error.
pub fn load_onnx(bytes: &[u8], backend: Backend) -> Result<Box<dyn OnnxGraph>> {
    Ok(match backend.runtime {
        Runtime::Ort => Box::new(ort_rt::OrtGraph::new(bytes, backend.device)?),
        Runtime::Tract => {
            if backend.device != DeviceSpec::Cpu {
                bail!("tract runs on the CPU only; use --runtime ort or tch for CUDA");
            }
            Box::new(tract_rt::TractGraph::new(bytes)?)
        }
        Runtime::Tch => bail!("libtorch runs checkpoints, not .onnx graphs"),
    })
}
