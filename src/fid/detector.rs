//! The FID detector: the Inception-v3 network of [`tiw_models::inception`] loaded from a
//! state-dict weight file (`.pth`/`.pt` zip or legacy, `.safetensors`) through the
//! converters, then either exported to ONNX in memory and run on ONNX Runtime (CPU or the
//! CUDA execution provider; the default) or run eagerly on libtorch. An `.onnx` file made by
//! `tiw` (input `x [N,3,299,299]`, output `features [N,2048]`) is accepted for ort.
//!
//! The network takes the *preprocessed* input (see [`super::preprocess`]); resizing and
//! normalisation happen on the host.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tiw_models::inception::{self, FidInception, FEATURE_DIM, INPUT_SIZE};
use tiw_models::tch_ops::{TchOps, TchTensor};

use crate::device::{self, DeviceSpec};
use crate::runtime::ort_rt::OrtGraph;
use crate::runtime::{NamedArray, OnnxGraph};

/// Environment variable naming the default detector weights.
pub const DETECTOR_ENV: &str = "TIW_FID_DETECTOR";

/// Which runtime evaluates the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DetectorRuntime {
    /// ONNX Runtime (CPU or CUDA execution provider) on an in-memory ONNX export.
    Ort,
    /// libtorch, eager (CPU or CUDA).
    Tch,
}

enum Engine {
    Ort(Box<OrtGraph>),
    Tch {
        ops: TchOps,
        net: Box<FidInception<TchTensor>>,
    },
}

/// A loaded detector: preprocessed images in, 2048-d pool3 features out.
pub struct Detector {
    engine: Engine,
    describe: String,
}

/// The detector path: `explicit`, else `$TIW_FID_DETECTOR`, else an error saying what to pass.
pub fn resolve_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    match std::env::var_os(DETECTOR_ENV) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!(
            "no FID detector: pass --detector FILE (the Inception-v3 FID weights pt_inception-2015-12-05-6726825d.pth of \
             pytorch-fid / torch-fidelity, or an .onnx made from them) or set {DETECTOR_ENV}"
        ),
    }
}

impl Detector {
    /// Loads the detector weights at `path` for `runtime` on `device`.
    pub fn load(path: &Path, runtime: DetectorRuntime, dev: DeviceSpec) -> Result<Self> {
        let is_onnx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let describe_src = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_onnx {
            if runtime != DetectorRuntime::Ort {
                bail!("{}: an .onnx detector runs on --runtime ort only", path.display());
            }
            let (bytes, _) = crate::onnx_export::read_model(path)?;
            let g =
                OrtGraph::new(&bytes, dev).with_context(|| format!("{}: ONNX Runtime", path.display()))?;
            let names = g.input_names();
            if names != ["x"] {
                bail!(
                    "{}: not a FID detector graph (inputs {:?}; expected x [N,3,299,299])",
                    path.display(),
                    names
                );
            }
            let describe = format!("{describe_src} on {}", g.describe());
            return Ok(Detector {
                engine: Engine::Ort(Box::new(g)),
                describe,
            });
        }
        let (store, _) = tiw_models::load::read(path)
            .with_context(|| format!("cannot read the detector weights {}", path.display()))?;
        let engine = match runtime {
            DetectorRuntime::Ort => {
                let meta = vec![
                    ("tiw.source".to_string(), describe_src.clone()),
                    (
                        "tiw.exporter".to_string(),
                        format!("tiw {}", env!("CARGO_PKG_VERSION")),
                    ),
                ];
                let model = inception::export_onnx(&store, 17, &meta)
                    .with_context(|| format!("{}", path.display()))?;
                drop(store);
                let bytes = model.to_bytes().with_context(|| format!("{}", path.display()))?;
                drop(model);
                let g = OrtGraph::new(&bytes, dev)?;
                Engine::Ort(Box::new(g))
            }
            DetectorRuntime::Tch => {
                let d = device::select(dev)?;
                let ops = TchOps::new(d);
                let net =
                    FidInception::from_store(&ops, &store).with_context(|| format!("{}", path.display()))?;
                Engine::Tch {
                    ops,
                    net: Box::new(net),
                }
            }
        };
        let describe = match &engine {
            Engine::Ort(g) => format!("{describe_src} on {}", g.describe()),
            Engine::Tch { ops, .. } => format!("{describe_src} on libtorch ({:?})", ops.device),
        };
        Ok(Detector { engine, describe })
    }

    /// Runtime and device, for messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Features `[n, 2048]` (row-major) of `n` preprocessed images `x [n, 3, 299, 299]`.
    pub fn features(&mut self, x: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let shape = vec![n, 3, INPUT_SIZE, INPUT_SIZE];
        if x.len() != shape.iter().product::<usize>() {
            bail!(
                "detector input has {} values, expected {n}×3×{INPUT_SIZE}×{INPUT_SIZE}",
                x.len()
            );
        }
        let out = match &mut self.engine {
            Engine::Ort(g) => {
                let mut outs = g.run(&[NamedArray {
                    name: "x".into(),
                    shape,
                    data: x,
                }])?;
                let o = outs.swap_remove(0);
                if o.shape != [n, FEATURE_DIM] {
                    bail!(
                        "detector output has shape {:?}, expected [{n}, {FEATURE_DIM}]",
                        o.shape
                    );
                }
                o.data
            }
            Engine::Tch { ops, net } => {
                let _g = tch::no_grad_guard();
                let t = tch::Tensor::f_from_slice(&x)?
                    .f_reshape([n as i64, 3, INPUT_SIZE as i64, INPUT_SIZE as i64])?
                    .f_to_device(ops.device)?;
                let y = net.forward(ops, &TchTensor(t)).map_err(|e| anyhow!("{e}"))?;
                let y = y.0.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?;
                Vec::<f32>::try_from(&y)?
            }
        };
        Ok(out)
    }
}
