//! The FID detector: the Inception-v3 network of [`tiw_models::inception`] loaded from a
//! state-dict weight file (`.pth`/`.pt` zip or legacy, `.safetensors`) through the
//! converters, then either exported to ONNX in memory and run on ONNX Runtime (CPU or the
//! CUDA execution provider; the default) or run eagerly on libtorch. An `.onnx` file made by
//! `tiw` (input `x [N,3,299,299]`, output `features [N,2048]`) is accepted for ort.
//!
//! The network takes the *preprocessed* input (see [`super::preprocess`]); resizing and
//! normalisation happen on the host.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tiw_models::inception::{self, FidInception, FEATURE_DIM, INPUT_SIZE};
use tiw_models::tch_ops::TchOps;

use crate::device::{self, DeviceSpec};
use crate::runtime::network::OnnxHead;
use crate::runtime::tch_rt::{TchGraph, TchNet};
use crate::runtime::{Backend, NamedArray, NetKind, Network, Runtime};

/// Environment variable naming the default detector weights.
pub const DETECTOR_ENV: &str = "TIW_FID_DETECTOR";

/// Which runtime evaluates the detector (the `--runtime` choices of `tiw fid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DetectorRuntime {
    /// ONNX Runtime (CPU or CUDA execution provider) on an in-memory ONNX export.
    Ort,
    /// libtorch, eager (CPU or CUDA).
    Tch,
}

impl From<DetectorRuntime> for Runtime {
    fn from(r: DetectorRuntime) -> Runtime {
        match r {
            DetectorRuntime::Ort => Runtime::Ort,
            DetectorRuntime::Tch => Runtime::Tch,
        }
    }
}

/// A loaded detector: preprocessed images in, 2048-d pool3 features out.
pub struct Detector {
    net: Network,
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
        let src = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let backend = Backend::new(runtime.into(), dev);
        let net = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
            if runtime != DetectorRuntime::Ort {
                bail!("{}: an .onnx detector runs on --runtime ort only", path.display());
            }
            Self::load_onnx_file(path, backend)?
        } else {
            Self::load_weights(path, &src, backend)?
        };
        let describe = match runtime {
            DetectorRuntime::Tch => format!("{src} on libtorch ({:?})", device::select(dev)?),
            DetectorRuntime::Ort => format!("{src} on {}", net.describe()),
        };
        Ok(Detector { net, describe })
    }

    /// An `.onnx` detector made by tiw (input `x` only).
    fn load_onnx_file(path: &Path, backend: Backend) -> Result<Network> {
        let (bytes, model) = crate::onnx_export::read_model(path)?;
        let head = OnnxHead::of_model(&model);
        let names: Vec<&str> = head.inputs.iter().map(|i| i.name.as_str()).collect();
        let label = path.display().to_string();
        let net = Network::from_onnx(NetKind::Inception, &bytes, &head, backend, &label)
            .with_context(|| format!("{}: ONNX Runtime", path.display()))?;
        if names != ["x"] {
            bail!(
                "{}: not a FID detector graph (inputs {:?}; expected x [N,3,299,299])",
                path.display(),
                names
            );
        }
        Ok(net)
    }

    /// State-dict weights: exported to ONNX in memory (ort) or built on libtorch.
    fn load_weights(path: &Path, src: &str, backend: Backend) -> Result<Network> {
        let (store, _) = tiw_models::load::read(path)
            .with_context(|| format!("cannot read the detector weights {}", path.display()))?;
        if backend.runtime == Runtime::Tch {
            let ops = TchOps::new(device::select(backend.device)?);
            let net =
                FidInception::from_store(&ops, &store).with_context(|| format!("{}", path.display()))?;
            return Ok(Network::from_tch(TchGraph::new(
                ops,
                TchNet::Inception(Box::new(net)),
            )));
        }
        let meta = vec![
            ("tiw.source".to_string(), src.to_string()),
            (
                "tiw.exporter".to_string(),
                format!("tiw {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        let model =
            inception::export_onnx(&store, 17, &meta).with_context(|| format!("{}", path.display()))?;
        drop(store);
        let bytes = model.to_bytes().with_context(|| format!("{}", path.display()))?;
        let label = path.display().to_string();
        Network::from_onnx(
            NetKind::Inception,
            &bytes,
            &OnnxHead::of_recorded(&model),
            backend,
            &label,
        )
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
        let mut outs = self
            .net
            .run(vec![NamedArray::new("x", shape, x)], "detector input", None)?;
        if outs.is_empty() {
            bail!("the detector produced no output");
        }
        let o = outs.swap_remove(0);
        if o.shape != [n, FEATURE_DIM] {
            bail!(
                "detector output has shape {:?}, expected [{n}, {FEATURE_DIM}]",
                o.shape
            );
        }
        Ok(o.data)
    }
}
