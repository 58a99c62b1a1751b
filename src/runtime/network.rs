//! [`Network`]: one handle for the four network kinds on any [`Backend`].
//!
//! Loading: a checkpoint (`.pkl`, `.pt`, `.safetensors`) runs on libtorch as is, or is
//! exported to ONNX in memory for ONNX Runtime and tract; an `.onnx` file runs on ONNX
//! Runtime or tract. The network's inputs are declared once ([`InputSpec`]): from the
//! configuration for libtorch, from the graph's inputs for ONNX. [`Network::run`] is the one
//! entry point: it checks the inputs, completes them for the ONNX graphs (zeros for omitted
//! labels, scalars expanded) and runs them in batches ([`super::batch`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use tiw_converters::Json;
use tiw_models::config::{NetConfig, Precond};
use tiw_models::edm::precond::iddpm_u;
use tiw_models::tch_ops::TchOps;
use tract_onnx::pb::{tensor_shape_proto::dimension::Value as DimValue, type_proto, ValueInfoProto};

use super::batch::{self, Dim, InputSpec};
use super::tch_rt::{TchGraph, TchNet};
use super::{load_onnx, Backend, NamedArray, OnnxGraph, Runtime};
use crate::onnx_export::{self, ExportOpts, WhatGraph};
use crate::precision::TchPrecision;

/// The four network kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// Preconditioned EDM denoiser `D(x; σ)` (and `F_x` on libtorch).
    Denoiser,
    /// ADM feature extractor `(x, t) → features`.
    Extractor,
    /// Time-dependent discriminator `(features, t[, condition]) → logits`.
    Discriminator,
    /// FID Inception-v3 `x [N,3,299,299] → features [N,2048]`.
    Inception,
}

impl NetKind {
    fn what(self) -> Result<WhatGraph> {
        Ok(match self {
            NetKind::Denoiser => WhatGraph::Denoiser,
            NetKind::Extractor => WhatGraph::Extractor,
            NetKind::Discriminator => WhatGraph::Discriminator,
            NetKind::Inception => bail!("the FID detector is exported by tiw::fid::detector"),
        })
    }
}

/// What a sampler needs to know about a denoiser.
#[derive(Debug, Clone)]
pub struct NetInfo {
    /// Image channels.
    pub channels: usize,
    /// Image resolution.
    pub resolution: usize,
    /// Class-label dimension (0 = unconditional).
    pub label_dim: usize,
    /// Augmentation-label dimension of the graph (fed zeros).
    pub augment_dim: usize,
    /// Preconditioning (σ range, iDDPM table).
    pub precond: Precond,
}

impl NetInfo {
    /// The facts of a network configuration.
    pub fn of(cfg: &NetConfig) -> Self {
        NetInfo {
            channels: cfg.img_channels,
            resolution: cfg.img_resolution,
            label_dim: cfg.label_dim,
            augment_dim: cfg.augment_dim(),
            precond: cfg.precond,
        }
    }
    /// Smallest σ of the network.
    pub fn sigma_min(&self) -> f64 {
        self.precond.sigma_min()
    }
    /// Largest σ of the network.
    pub fn sigma_max(&self) -> f64 {
        self.precond.sigma_max()
    }
    /// `round_sigma`: the identity, except iDDPM (nearest entry of its σ table, in f32).
    pub fn round_sigma(&self, s: f64) -> f64 {
        match self.precond {
            Precond::IDdpm { c1, c2, m } => {
                let u = iddpm_u(m, c1, c2);
                let s32 = s as f32;
                let mut best = 0;
                for (j, &v) in u.iter().enumerate() {
                    if (s32 - v).abs() < (s32 - u[best]).abs() {
                        best = j;
                    }
                }
                u[best] as f64
            }
            _ => s,
        }
    }
}

enum Engine {
    Tch(TchGraph),
    Onnx(Box<dyn OnnxGraph>),
}

/// A loaded network on a runtime and device.
pub struct Network {
    kind: NetKind,
    engine: Engine,
    specs: Vec<InputSpec>,
    info: Option<NetInfo>,
}

/// Whether `path` names an `.onnx` file.
pub fn is_onnx_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// The parts of an ONNX model a [`Network`] reads: metadata and declared inputs.
pub struct OnnxHead<'a> {
    /// `metadata_props` as (key, value).
    pub meta: Vec<(&'a str, &'a str)>,
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<&'a ValueInfoProto>,
}

impl<'a> OnnxHead<'a> {
    /// The head of a decoded model.
    pub fn of_model(m: &'a tract_onnx::pb::ModelProto) -> Self {
        let inputs = match &m.graph {
            Some(g) => g
                .input
                .iter()
                .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
                .collect(),
            None => Vec::new(),
        };
        OnnxHead {
            meta: m
                .metadata_props
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str()))
                .collect(),
            inputs,
        }
    }

    /// The head of a model recorded in memory.
    pub fn of_recorded(m: &'a tiw_models::onnx_model::OnnxModel) -> Self {
        OnnxHead {
            meta: m
                .metadata()
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str()))
                .collect(),
            inputs: m.graph().input.iter().collect(),
        }
    }

    fn get(&self, k: &str) -> Option<&'a str> {
        self.meta.iter().find(|p| p.0 == k).map(|p| p.1)
    }
}

/// Declared shape of a graph input: symbolic leading dim = the batch.
fn onnx_dims(v: &ValueInfoProto) -> Vec<Dim> {
    let dims = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default(),
        _ => Vec::new(),
    };
    dims.iter()
        .enumerate()
        .map(|(i, d)| match (i, d.value.as_ref()) {
            (_, Some(DimValue::DimValue(v))) if *v >= 0 && i > 0 => Dim::Fixed(*v as usize),
            (0, _) => Dim::Batch,
            _ => Dim::Any,
        })
        .collect()
}

/// Input declarations of an ONNX graph of `kind`: the denoiser's labels may be omitted
/// (zeros) and its σ may be a scalar.
fn onnx_specs(kind: NetKind, head: &OnnxHead) -> Vec<InputSpec> {
    head.inputs
        .iter()
        .map(|v| {
            let dims = onnx_dims(v);
            match (kind, v.name.as_str()) {
                (NetKind::Denoiser, "class_labels" | "augment_labels") => InputSpec::optional(&v.name, dims),
                (NetKind::Denoiser, "sigma") => InputSpec::required(&v.name, dims).or_scalar(),
                _ => InputSpec::required(&v.name, dims),
            }
        })
        .collect()
}

/// Input declarations of a libtorch network (from its configuration).
fn tch_specs(net: &TchNet) -> Vec<InputSpec> {
    use Dim::{Any, Batch, Fixed};
    match net {
        TchNet::Denoiser(n) => {
            let i = NetInfo::of(&n.cfg);
            let mut v = vec![
                InputSpec::required(
                    "x",
                    vec![Batch, Fixed(i.channels), Fixed(i.resolution), Fixed(i.resolution)],
                ),
                InputSpec::required("sigma", vec![Batch]).or_scalar(),
            ];
            if i.label_dim > 0 {
                v.push(InputSpec::optional(
                    "class_labels",
                    vec![Batch, Fixed(i.label_dim)],
                ));
            }
            if i.augment_dim > 0 {
                v.push(InputSpec::optional(
                    "augment_labels",
                    vec![Batch, Fixed(i.augment_dim)],
                ));
            }
            v
        }
        TchNet::Extractor(fe) => vec![
            InputSpec::required("x", vec![Batch, Fixed(fe.cfg.in_channels), Any, Any]),
            InputSpec::required("t", vec![Batch]),
        ],
        TchNet::Discriminator(d) => {
            let mut v = vec![
                InputSpec::required("features", vec![Batch, Fixed(d.cfg.in_channels), Any, Any]),
                InputSpec::required("t", vec![Batch]),
            ];
            if let Some(k) = d.cfg.num_class {
                v.push(InputSpec::required("condition", vec![Batch, Fixed(k)]));
            }
            v
        }
        TchNet::Inception(_) => {
            let s = tiw_models::inception::INPUT_SIZE;
            vec![InputSpec::required(
                "x",
                vec![Batch, Fixed(3), Fixed(s), Fixed(s)],
            )]
        }
    }
}

/// The sampler facts of a denoiser graph exported by tiw (metadata `tiw.kind`, `tiw.config`).
fn onnx_denoiser_info(head: &OnnxHead, label: &str) -> Result<NetInfo> {
    if head.get("tiw.kind") != Some("denoiser") {
        bail!(
            "{label}: not a denoiser graph exported by tiw (metadata tiw.kind = {:?})",
            head.get("tiw.kind")
        );
    }
    let cfg = Json::parse(head.get("tiw.config").context("no tiw.config metadata")?)
        .map_err(|e| anyhow::anyhow!("tiw.config: {e}"))?;
    let int = |k: &str| {
        cfg.get(k)
            .and_then(Json::as_i64)
            .map(|v| v as usize)
            .with_context(|| format!("tiw.config has no {k}"))
    };
    let precond = match cfg.get("network") {
        Some(n) => NetConfig::from_json(n)?.precond,
        None => {
            let f = |k: &str| cfg.get(k).and_then(Json::as_f64).unwrap_or(0.0);
            match cfg.get("precond").and_then(Json::as_str) {
                Some("edm") => Precond::Edm {
                    sigma_min: f("sigma_min"),
                    sigma_max: f("sigma_max"),
                    sigma_data: f("sigma_data"),
                },
                Some("ve") => Precond::Ve {
                    sigma_min: f("sigma_min"),
                    sigma_max: f("sigma_max"),
                },
                other => {
                    bail!("tiw.config lacks the network configuration needed for {other:?} preconditioning")
                }
            }
        }
    };
    Ok(NetInfo {
        channels: int("img_channels")?,
        resolution: int("img_resolution")?,
        label_dim: int("label_dim")?,
        augment_dim: int("augment_dim")?,
        precond,
    })
}

impl Network {
    /// Loads the network of `kind` at `path` on `backend`: a checkpoint on libtorch, an
    /// `.onnx` file or a checkpoint exported in memory on ONNX Runtime / tract.
    /// `img_resolution`: the extractor's resolution where its layout is ambiguous.
    pub fn load(kind: NetKind, path: &Path, backend: Backend, img_resolution: Option<usize>) -> Result<Self> {
        if backend.runtime == Runtime::Tch {
            if is_onnx_path(path) {
                bail!("{}: libtorch runs checkpoints, not .onnx graphs", path.display());
            }
            return Self::load_tch(kind, path, backend, img_resolution);
        }
        let label = path.display().to_string();
        if is_onnx_path(path) {
            let (bytes, model) = onnx_export::read_model(path)?;
            return Self::from_onnx(kind, &bytes, &OnnxHead::of_model(&model), backend, &label);
        }
        let opts = ExportOpts {
            what: Some(kind.what()?),
            opset: 17,
            extractor: None,
            img_resolution,
        };
        let (m, _) = onnx_export::export(path, &opts)?;
        let bytes = m.to_bytes()?;
        Self::from_onnx(kind, &bytes, &OnnxHead::of_recorded(&m), backend, &label)
    }

    fn load_tch(kind: NetKind, path: &Path, backend: Backend, img_resolution: Option<usize>) -> Result<Self> {
        let ops = TchOps::new(crate::device::select(backend.device)?);
        let net = match kind {
            NetKind::Denoiser => TchNet::Denoiser(Box::new(tiw_models::load::edm_denoiser(&ops, path)?)),
            NetKind::Extractor => {
                TchNet::Extractor(Box::new(tiw_models::load::encoder(&ops, path, img_resolution)?))
            }
            NetKind::Discriminator => {
                TchNet::Discriminator(Box::new(tiw_models::load::encoder(&ops, path, None)?))
            }
            NetKind::Inception => {
                let (store, _) = tiw_models::load::read(path)?;
                let net = tiw_models::inception::FidInception::from_store(&ops, &store)?;
                TchNet::Inception(Box::new(net))
            }
        };
        Ok(Self::from_tch(TchGraph::new(ops, net)))
    }

    /// A libtorch network.
    pub fn from_tch(graph: TchGraph) -> Self {
        let (kind, info) = match graph.net() {
            TchNet::Denoiser(n) => (NetKind::Denoiser, Some(NetInfo::of(&n.cfg))),
            TchNet::Extractor(_) => (NetKind::Extractor, None),
            TchNet::Discriminator(_) => (NetKind::Discriminator, None),
            TchNet::Inception(_) => (NetKind::Inception, None),
        };
        Network {
            kind,
            specs: tch_specs(graph.net()),
            engine: Engine::Tch(graph),
            info,
        }
    }

    /// ONNX model `bytes` (with its `head`) on ONNX Runtime or tract; `label` names the
    /// model in messages.
    pub fn from_onnx(
        kind: NetKind,
        bytes: &[u8],
        head: &OnnxHead,
        backend: Backend,
        label: &str,
    ) -> Result<Self> {
        let info = match kind {
            NetKind::Denoiser => Some(onnx_denoiser_info(head, label)?),
            _ => None,
        };
        let specs = onnx_specs(kind, head);
        let graph = load_onnx(bytes, backend)?;
        Ok(Network {
            kind,
            engine: Engine::Onnx(graph),
            specs,
            info,
        })
    }

    /// The kind.
    pub fn kind(&self) -> NetKind {
        self.kind
    }

    /// Whether it runs on libtorch.
    pub fn is_tch(&self) -> bool {
        matches!(self.engine, Engine::Tch(_))
    }

    /// The denoiser facts (denoisers only).
    pub fn info(&self) -> Option<&NetInfo> {
        self.info.as_ref()
    }

    /// Declared inputs.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.specs
    }

    /// The declaration of input `name`, if the network has it.
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// Runtime and device, e.g. `tch (Cpu)`, `ort (CUDA:0)`, `tract (CPU)`.
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Tch(g) => g.describe(),
            Engine::Onnx(g) => g.describe(),
        }
    }

    /// libtorch: the device and the precision policy applied to a denoiser (whether it runs
    /// in f16); None elsewhere.
    pub fn set_precision(&mut self, p: &TchPrecision) -> Option<(tch::Device, bool)> {
        match &mut self.engine {
            Engine::Tch(g) => g.set_precision(p).map(|f| (g.device(), f)),
            Engine::Onnx(_) => None,
        }
    }

    /// Prepares a denoiser for a sampler's repeated calls: libtorch returns only `D` (no
    /// `F_x`); ONNX Runtime on CUDA binds inputs and outputs to device memory
    /// ([`OnnxGraph::repeated_calls`]).
    pub fn for_sampler(&mut self) {
        match &mut self.engine {
            Engine::Tch(g) => g.with_fx = false,
            Engine::Onnx(g) => g.repeated_calls(),
        }
    }

    /// Runs the network: checks `inputs` against the declarations (`source` labels the
    /// messages), completes them for ONNX graphs and evaluates them in chunks of at most
    /// `batch` samples; outputs are concatenated along the batch dimension.
    pub fn run(
        &mut self,
        inputs: Vec<NamedArray>,
        source: &str,
        batch: Option<usize>,
    ) -> Result<Vec<NamedArray>> {
        let n = batch::check(&self.specs, &inputs, source)?;
        match &mut self.engine {
            Engine::Tch(g) => batch::run_batched(g, &inputs, n, batch),
            Engine::Onnx(g) => {
                let full = batch::complete(&self.specs, inputs, n);
                batch::run_batched(g.as_mut(), &full, n, batch)
            }
        }
    }
}
