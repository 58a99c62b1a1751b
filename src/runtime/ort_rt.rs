//! ONNX Runtime through `ort` (load-dynamic: the library from `ORT_DYLIB_PATH`).

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::{builder::GraphOptimizationLevel, Session};

use super::{ordered, NamedArray, OnnxGraph};
use crate::device::DeviceSpec;

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library named by `ORT_DYLIB_PATH`.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    ENV.get_or_init(|| {
        let lib = std::env::var("ORT_DYLIB_PATH")
            .map_err(|_| "ORT_DYLIB_PATH is not set: source scripts/env.sh (it points at the onnxruntime library of the setup venv)".to_string())?;
        if !std::path::Path::new(&lib).exists() {
            return Err(format!("ORT_DYLIB_PATH={lib} does not exist (run `make setup`)"));
        }
        let b = ort::init_from(&lib).map_err(|e| format!("cannot load ONNX Runtime from {lib}: {e}"))?;
        b.build().map_err(|e| format!("cannot initialise ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// A session on the CPU or a CUDA device.
pub struct OrtGraph {
    session: Session,
    inputs: Vec<String>,
    device: DeviceSpec,
}

impl OrtGraph {
    /// Creates a session from model bytes. CPU: intra-op threads = cores, all graph
    /// optimisations. CUDA: the CUDA execution provider with error-on-failure, so a missing
    /// driver or library stops here with ONNX Runtime's message instead of running on CPU.
    pub fn new(model: &[u8], device: DeviceSpec) -> Result<Self> {
        let env = environment()?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let e = |x: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{x}");
        let mut b = Session::builder(env)
            .map_err(|x| anyhow!("{x}"))?
            .with_intra_threads(threads)
            .map_err(e)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(e)?;
        if let DeviceSpec::Cuda(n) = device {
            let ep = ort::ep::CUDA::default()
                .with_device_id(n as i32)
                .build()
                .error_on_failure();
            b = b.with_execution_providers([ep]).map_err(|x| {
                anyhow!("--device cuda:{n}: ONNX Runtime's CUDA execution provider cannot be used: {x}")
            })?;
        }
        let session = b
            .commit_from_memory(model)
            .context("ONNX Runtime rejected the model")?;
        let inputs = session.inputs().iter().map(|i| i.name().to_string()).collect();
        Ok(OrtGraph {
            session,
            inputs,
            device,
        })
    }
}

impl OnnxGraph for OrtGraph {
    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>> {
        let ins = ordered(&self.inputs, inputs)?;
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::new();
        for i in &ins {
            let shape: Vec<i64> = i.shape.iter().map(|&d| d as i64).collect();
            let t = ort::value::TensorRef::from_array_view((shape, i.data.as_slice()))
                .map_err(|e| anyhow!("input {}: {e}", i.name))?;
            values.push((i.name.clone(), t.into()));
        }
        let out = self
            .session
            .run(values)
            .map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
        let mut res = Vec::new();
        for (name, v) in out.iter() {
            let a = v
                .try_extract_array::<f32>()
                .map_err(|e| anyhow!("output {name}: {e}"))?;
            res.push(NamedArray {
                name: name.to_string(),
                shape: a.shape().to_vec(),
                data: a.iter().copied().collect(),
            });
        }
        if res.is_empty() {
            bail!("the graph produced no outputs");
        }
        Ok(res)
    }

    fn describe(&self) -> String {
        match self.device {
            DeviceSpec::Cpu => "ort (CPU)".into(),
            DeviceSpec::Cuda(n) => format!("ort (CUDA:{n})"),
        }
    }
}
