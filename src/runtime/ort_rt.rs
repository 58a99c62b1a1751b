//! ONNX Runtime through `ort` (load-dynamic: the library from `ORT_DYLIB_PATH`, else the
//! path recorded at build time).

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::session::{builder::GraphOptimizationLevel, Session};

use super::{ordered, NamedArray, OnnxGraph};
use crate::device::DeviceSpec;

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// The ONNX Runtime library recorded at build time (`ORT_DYLIB_PATH` of the build's setup,
/// see build.rs), if any.
pub const BUILD_DYLIB: Option<&str> = option_env!("TIW_ORT_DYLIB_DEFAULT");

/// Where the ONNX Runtime library is taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DylibSource {
    /// `ORT_DYLIB_PATH` at run time.
    Env,
    /// The path recorded when the binary was built.
    Build,
}

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH` if set (it overrides), else the one
/// recorded at build time. Errors name both when neither gives an existing file.
pub fn dylib_path() -> Result<(std::path::PathBuf, DylibSource)> {
    let build = BUILD_DYLIB
        .map(|p| format!("the build-time default {p}"))
        .unwrap_or_else(|| "no build-time default (the binary was built without ORT_DYLIB_PATH)".into());
    let (p, src) = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => (std::path::PathBuf::from(p), DylibSource::Env),
        None => match BUILD_DYLIB {
            Some(p) => (std::path::PathBuf::from(p), DylibSource::Build),
            None => bail!(
                "no ONNX Runtime library: ORT_DYLIB_PATH is not set and there is {build}; \
                 set ORT_DYLIB_PATH to libonnxruntime.so (scripts/env.sh does)"
            ),
        },
    };
    if !p.is_file() {
        let which = match src {
            DylibSource::Env => format!("ORT_DYLIB_PATH={} (overriding {build})", p.display()),
            DylibSource::Build => format!("{build} (ORT_DYLIB_PATH is not set)"),
        };
        bail!("the ONNX Runtime library does not exist: {which}; run `make setup` or point ORT_DYLIB_PATH at libonnxruntime.so");
    }
    Ok((p, src))
}

/// The process-wide ONNX Runtime environment, loading the library of [`dylib_path`].
pub fn environment() -> Result<&'static ort::environment::Environment> {
    ENV.get_or_init(|| {
        let (lib, _) = dylib_path().map_err(|e| format!("{e:#}"))?;
        let b = ort::init_from(&lib)
            .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?;
        b.build()
            .map_err(|e| format!("cannot initialise ONNX Runtime: {e}"))
    })
    .as_ref()
    .map_err(|e| anyhow!("{e}"))
}

/// A session on the CPU or a CUDA device.
pub struct OrtGraph {
    session: Session,
    inputs: Vec<String>,
    outputs: Vec<String>,
    device: DeviceSpec,
    /// CUDA and [`OnnxGraph::repeated_calls`] only: the I/O binding (see [`CudaIo`]).
    io: Option<CudaIo>,
    /// Whether [`OnnxGraph::repeated_calls`] asked for the I/O binding.
    repeated: bool,
}

/// Device-resident inputs and outputs for the CUDA execution provider (ONNX Runtime's
/// IoBinding), for repeated calls such as a sampler's: an input is copied to the device only
/// when its shape or values differ from the previous call's (labels, augment labels and a
/// repeated σ stay on the device; `x` changes every step), and outputs are written by the
/// device straight into pinned host memory. Never used on the CPU.
struct CudaIo {
    binding: ort::session::IoBinding,
    /// The inputs bound now: (name, shape, values).
    bound: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl CudaIo {
    fn new(session: &Session, outputs: &[String], device_id: i32) -> Result<Self> {
        use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
        let mut binding = session
            .create_binding()
            .map_err(|e| anyhow!("ONNX Runtime: cannot create an I/O binding: {e}"))?;
        let pinned = MemoryInfo::new(
            AllocationDevice::CUDA_PINNED,
            device_id,
            AllocatorType::Device,
            MemoryType::CPUOutput,
        )
        .map_err(|e| anyhow!("ONNX Runtime: pinned host memory: {e}"))?;
        for o in outputs {
            binding
                .bind_output_to_device(o.as_str(), &pinned)
                .map_err(|e| anyhow!("ONNX Runtime: cannot bind output {o}: {e}"))?;
        }
        Ok(CudaIo {
            binding,
            bound: Vec::new(),
        })
    }

    /// Binds the inputs that changed since the previous call.
    fn bind(&mut self, ins: &[&NamedArray]) -> Result<()> {
        for i in ins {
            let same = self
                .bound
                .iter()
                .any(|(n, s, d)| n == &i.name && s == &i.shape && d == &i.data);
            if same {
                continue;
            }
            let shape: Vec<i64> = i.shape.iter().map(|&d| d as i64).collect();
            let t = ort::value::Tensor::from_array((shape, i.data.clone()))
                .map_err(|e| anyhow!("input {}: {e}", i.name))?;
            self.binding
                .bind_input(i.name.as_str(), &t)
                .map_err(|e| anyhow!("input {}: {e}", i.name))?;
            self.bound.retain(|(n, _, _)| n != &i.name);
            self.bound.push((i.name.clone(), i.shape.clone(), i.data.clone()));
        }
        Ok(())
    }
}

/// Named f32 arrays of a run's outputs.
fn collect_outputs(out: &ort::session::SessionOutputs<'_>) -> Result<Vec<NamedArray>> {
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
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(OrtGraph {
            session,
            inputs,
            outputs,
            device,
            io: None,
            repeated: false,
        })
    }

    /// CUDA: runs through the I/O binding (created on the first call).
    fn run_bound(&mut self, ins: &[&NamedArray], device_id: usize) -> Result<Vec<NamedArray>> {
        if self.io.is_none() {
            self.io = Some(CudaIo::new(&self.session, &self.outputs, device_id as i32)?);
        }
        let io = self.io.as_mut().expect("created above");
        io.bind(ins)?;
        let out = self
            .session
            .run_binding(&io.binding)
            .map_err(|e| anyhow!("ONNX Runtime: {e}"))?;
        collect_outputs(&out)
    }
}

impl OnnxGraph for OrtGraph {
    fn input_names(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>> {
        let ins = ordered(&self.inputs, inputs)?;
        if let (DeviceSpec::Cuda(n), true) = (self.device, self.repeated) {
            return self.run_bound(&ins, n);
        }
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
        collect_outputs(&out)
    }

    fn repeated_calls(&mut self) {
        self.repeated = true;
    }

    fn describe(&self) -> String {
        match self.device {
            DeviceSpec::Cpu => "ort (CPU)".into(),
            DeviceSpec::Cuda(n) => format!("ort (CUDA:{n})"),
        }
    }
}
