//! The denoiser `D(x; σ)` the samplers call, on any runtime: libtorch (eager, CPU/CUDA),
//! ONNX Runtime (CPU/CUDA EP) or tract. Sampler state is f64; the network runs in f32.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tiw_converters::Json;
use tiw_models::config::{NetConfig, Precond};
use tiw_models::edm::precond::iddpm_u;
use tiw_models::edm::EdmDenoiser;
use tiw_models::tch_ops::{TchOps, TchTensor};

use crate::device::{self, DeviceSpec};
use crate::onnx_export::{self, ExportOpts, OnnxRuntime, WhatGraph};
use crate::runtime::{NamedArray, OnnxGraph};

/// What a sampler needs to know about a network.
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

/// A network evaluated at one scalar σ for a batch.
pub trait Denoiser {
    /// Network facts.
    fn info(&self) -> &NetInfo;
    /// `D(x; σ)` for `x` = `n` images (row-major f64), optional one-hot labels `[n, L]`.
    fn denoise(&mut self, x: &[f64], n: usize, sigma: f64, class_labels: Option<&[f32]>) -> Result<Vec<f64>>;
    /// `D(x_b; σ_b)` with one σ per image (`sigmas.len() == n`), as DG's sampler calls the
    /// network in its Euler step. Default: one [`Denoiser::denoise`] call per distinct σ.
    fn denoise_each(
        &mut self,
        x: &[f64],
        n: usize,
        sigmas: &[f64],
        class_labels: Option<&[f32]>,
    ) -> Result<Vec<f64>> {
        if sigmas.len() != n || n == 0 || x.len() % n != 0 {
            bail!("denoise: {} σ values for {n} images", sigmas.len());
        }
        if sigmas.iter().all(|&s| s == sigmas[0]) {
            return self.denoise(x, n, sigmas[0], class_labels);
        }
        let per = x.len() / n;
        let ld = self.info().label_dim;
        let mut out = vec![0f64; x.len()];
        let mut done = vec![false; n];
        for b0 in 0..n {
            if done[b0] {
                continue;
            }
            let group: Vec<usize> = (b0..n).filter(|&b| !done[b] && sigmas[b] == sigmas[b0]).collect();
            let xs: Vec<f64> = group
                .iter()
                .flat_map(|&b| x[b * per..(b + 1) * per].iter().copied())
                .collect();
            let ls: Option<Vec<f32>> = class_labels.map(|l| {
                group
                    .iter()
                    .flat_map(|&b| l[b * ld..(b + 1) * ld].iter().copied())
                    .collect()
            });
            let d = self.denoise(&xs, group.len(), sigmas[b0], ls.as_deref())?;
            for (j, &b) in group.iter().enumerate() {
                out[b * per..(b + 1) * per].copy_from_slice(&d[j * per..(j + 1) * per]);
                done[b] = true;
            }
        }
        Ok(out)
    }
    /// Runtime description.
    fn describe(&self) -> String;
}

/// libtorch runtime.
pub struct TchDenoiser {
    net: EdmDenoiser<TchOps>,
    ops: TchOps,
    info: NetInfo,
}

/// `denoise_each` takes one σ per image.
fn check_each(sigmas: &[f64], n: usize) -> Result<()> {
    if sigmas.len() != n {
        bail!("denoise: {} σ values for {n} images", sigmas.len());
    }
    Ok(())
}

fn info_of(cfg: &NetConfig) -> NetInfo {
    NetInfo {
        channels: cfg.img_channels,
        resolution: cfg.img_resolution,
        label_dim: cfg.label_dim,
        augment_dim: cfg.augment_dim(),
        precond: cfg.precond,
    }
}

impl TchDenoiser {
    /// Loads a network file (.pkl/.pt/.safetensors) on `device`.
    pub fn load(path: &Path, device: DeviceSpec) -> Result<Self> {
        let dev = device::select(device)?;
        let ops = TchOps::new(dev);
        let net = tiw_models::load::edm_denoiser(&ops, path)?;
        let info = info_of(&net.cfg);
        Ok(TchDenoiser { net, ops, info })
    }

    /// Applies a precision policy to the network (`use_fp16` networks in f16 on CUDA unless
    /// forced to f32; see [`crate::precision::TchPrecision`]); returns whether it runs in f16.
    pub fn set_precision(&mut self, p: &crate::precision::TchPrecision) -> bool {
        p.configure(&mut self.net, self.ops.device)
    }
}

impl Denoiser for TchDenoiser {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn denoise(&mut self, x: &[f64], n: usize, sigma: f64, class_labels: Option<&[f32]>) -> Result<Vec<f64>> {
        self.run(x, n, &[sigma], class_labels)
    }

    fn denoise_each(
        &mut self,
        x: &[f64],
        n: usize,
        sigmas: &[f64],
        class_labels: Option<&[f32]>,
    ) -> Result<Vec<f64>> {
        check_each(sigmas, n)?;
        self.run(x, n, sigmas, class_labels)
    }

    fn describe(&self) -> String {
        format!("tch ({:?})", self.ops.device)
    }
}

impl TchDenoiser {
    /// `D(x; σ)` with `sigmas` of length 1 (one σ for the batch, a 0-dim σ in PyTorch terms)
    /// or n (one per image).
    fn run(&mut self, x: &[f64], n: usize, sigmas: &[f64], class_labels: Option<&[f32]>) -> Result<Vec<f64>> {
        let i = &self.info;
        let dev = self.ops.device;
        let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let xt = TchTensor(
            tch::Tensor::f_from_slice(&xs)?
                .f_reshape([
                    n as i64,
                    i.channels as i64,
                    i.resolution as i64,
                    i.resolution as i64,
                ])?
                .f_to_device(dev)?,
        );
        let s32: Vec<f32> = sigmas.iter().map(|&v| v as f32).collect();
        let st = TchTensor(tch::Tensor::f_from_slice(&s32)?.f_to_device(dev)?);
        let lt = match class_labels {
            Some(l) => Some(TchTensor(
                tch::Tensor::f_from_slice(l)?
                    .f_reshape([n as i64, i.label_dim as i64])?
                    .f_to_device(dev)?,
            )),
            None => None,
        };
        let out = tch::no_grad(|| self.net.forward(&self.ops, &xt, &st, lt.as_ref(), None, false))?;
        let d = out
            .d
            .0
            .f_to_kind(tch::Kind::Double)?
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?;
        Ok(Vec::<f64>::try_from(&d)?)
    }
}

/// ONNX Runtime or tract runtime.
pub struct OnnxDenoiser {
    graph: Box<dyn OnnxGraph>,
    info: NetInfo,
}

impl OnnxDenoiser {
    /// Loads an `.onnx` denoiser, or exports one in memory from a checkpoint.
    pub fn load(path: &Path, rt: OnnxRuntime, device: DeviceSpec) -> Result<Self> {
        let is_onnx = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let (bytes, model) = if is_onnx {
            onnx_export::read_model(path)?
        } else {
            let (m, _) = onnx_export::export(
                path,
                &ExportOpts {
                    what: Some(WhatGraph::Denoiser),
                    opset: 17,
                    extractor: None,
                    img_resolution: None,
                },
            )?;
            (m.to_bytes()?, m.skeleton().clone())
        };
        let meta = |k: &str| {
            model
                .metadata_props
                .iter()
                .find(|p| p.key == k)
                .map(|p| p.value.clone())
        };
        if meta("tiw.kind").as_deref() != Some("denoiser") {
            bail!(
                "{}: not a denoiser graph exported by tiw (metadata tiw.kind = {:?})",
                path.display(),
                meta("tiw.kind")
            );
        }
        let cfg = Json::parse(&meta("tiw.config").context("no tiw.config metadata")?)
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
                    other => bail!(
                        "tiw.config lacks the network configuration needed for {other:?} preconditioning"
                    ),
                }
            }
        };
        let info = NetInfo {
            channels: int("img_channels")?,
            resolution: int("img_resolution")?,
            label_dim: int("label_dim")?,
            augment_dim: int("augment_dim")?,
            precond,
        };
        let graph = onnx_export::load(&bytes, rt, device)?;
        Ok(OnnxDenoiser { graph, info })
    }
}

impl Denoiser for OnnxDenoiser {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn denoise(&mut self, x: &[f64], n: usize, sigma: f64, class_labels: Option<&[f32]>) -> Result<Vec<f64>> {
        self.run(x, n, &vec![sigma; n], class_labels)
    }

    fn denoise_each(
        &mut self,
        x: &[f64],
        n: usize,
        sigmas: &[f64],
        class_labels: Option<&[f32]>,
    ) -> Result<Vec<f64>> {
        check_each(sigmas, n)?;
        self.run(x, n, sigmas, class_labels)
    }

    fn describe(&self) -> String {
        self.graph.describe()
    }
}

impl OnnxDenoiser {
    fn run(&mut self, x: &[f64], n: usize, sigmas: &[f64], class_labels: Option<&[f32]>) -> Result<Vec<f64>> {
        let i = self.info.clone();
        let mut ins = vec![
            NamedArray {
                name: "x".into(),
                shape: vec![n, i.channels, i.resolution, i.resolution],
                data: x.iter().map(|&v| v as f32).collect(),
            },
            NamedArray {
                name: "sigma".into(),
                shape: vec![n],
                data: sigmas.iter().map(|&v| v as f32).collect(),
            },
        ];
        if i.label_dim > 0 {
            let data = match class_labels {
                Some(l) => l.to_vec(),
                None => vec![0.0; n * i.label_dim],
            };
            ins.push(NamedArray {
                name: "class_labels".into(),
                shape: vec![n, i.label_dim],
                data,
            });
        }
        if i.augment_dim > 0 {
            ins.push(NamedArray {
                name: "augment_labels".into(),
                shape: vec![n, i.augment_dim],
                data: vec![0.0; n * i.augment_dim],
            });
        }
        let out = self.graph.run(&ins)?;
        Ok(out[0].data.iter().map(|&v| v as f64).collect())
    }
}
