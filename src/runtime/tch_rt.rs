//! libtorch (eager, CPU or CUDA) behind [`OnnxGraph`]: the four networks take and return
//! the same named arrays as their ONNX graphs, plus what only the eager networks give.
//!
//! * denoiser: `x`, `sigma` (`(N,)` or a scalar, passed as given), optional `class_labels`,
//!   `augment_labels` (omitted = `None`, as the official network) → `D`, `F_x`;
//! * feature extractor: `x`, `t` → `features`, `fe_logits` (the extractor's own head);
//! * discriminator: `features`, `t`, optional `condition` (one-hot) → `logits`, `sigmoid`;
//! * Inception: `x` → `features`.
//!
//! Every call runs under `no_grad`; outputs come back as f32 on the host.

use anyhow::{anyhow, bail, Context, Result};
use tch::{Kind, Tensor};
use tiw_models::adm::EncoderUNet;
use tiw_models::edm::EdmDenoiser;
use tiw_models::inception::FidInception;
use tiw_models::tch_ops::{TchOps, TchTensor};

use super::{NamedArray, OnnxGraph};
use crate::precision::TchPrecision;

/// A libtorch network of one of the four kinds.
pub enum TchNet {
    /// EDM denoiser.
    Denoiser(Box<EdmDenoiser<TchOps>>),
    /// ADM feature extractor (with its head).
    Extractor(Box<EncoderUNet<TchOps>>),
    /// Time-dependent discriminator on extractor features.
    Discriminator(Box<EncoderUNet<TchOps>>),
    /// FID Inception-v3 (pool3 features).
    Inception(Box<FidInception<TchTensor>>),
}

/// A libtorch network on one device.
pub struct TchGraph {
    ops: TchOps,
    net: TchNet,
    /// Whether the denoiser also returns `F_x` (the sampler only needs `D`).
    pub with_fx: bool,
}

/// A named array as a tensor on `dev` (shape `[]` becomes `[1]`).
pub fn to_tensor(a: &NamedArray, dev: tch::Device) -> Result<TchTensor> {
    let shape: Vec<i64> = if a.shape.is_empty() {
        vec![1]
    } else {
        a.shape.iter().map(|&d| d as i64).collect()
    };
    Ok(TchTensor(
        Tensor::f_from_slice(&a.data)?
            .f_reshape(shape)?
            .f_to_device(dev)?,
    ))
}

/// A tensor as a named f32 array on the host.
pub fn to_named(name: &str, t: &Tensor) -> Result<NamedArray> {
    let shape = t.size().iter().map(|&d| d as usize).collect();
    let v = t
        .f_to_kind(Kind::Float)?
        .f_to_device(tch::Device::Cpu)?
        .f_contiguous()?
        .f_view([-1])?;
    Ok(NamedArray::new(name, shape, Vec::<f32>::try_from(&v)?))
}

impl TchGraph {
    /// `net` on the device of `ops`.
    pub fn new(ops: TchOps, net: TchNet) -> Self {
        TchGraph {
            ops,
            net,
            with_fx: true,
        }
    }

    /// The libtorch device.
    pub fn device(&self) -> tch::Device {
        self.ops.device
    }

    /// The network.
    pub fn net(&self) -> &TchNet {
        &self.net
    }

    /// Applies a precision policy to a denoiser (see [`TchPrecision::configure`]); returns
    /// whether it runs in f16 (None for the other kinds).
    pub fn set_precision(&mut self, p: &TchPrecision) -> Option<bool> {
        match &mut self.net {
            TchNet::Denoiser(n) => Some(p.configure(n, self.ops.device)),
            _ => None,
        }
    }

    fn names(&self) -> &'static [&'static str] {
        match self.net {
            TchNet::Denoiser(_) => &["x", "sigma", "class_labels", "augment_labels"],
            TchNet::Extractor(_) => &["x", "t"],
            TchNet::Discriminator(_) => &["features", "t", "condition"],
            TchNet::Inception(_) => &["x"],
        }
    }

    fn run_net(&self, get: &dyn Fn(&str) -> Result<Option<TchTensor>>) -> Result<Vec<NamedArray>> {
        let need = |k: &str| get(k)?.with_context(|| format!("missing input {k:?}"));
        let o = &self.ops;
        Ok(match &self.net {
            TchNet::Denoiser(net) => {
                let (l, g) = (get("class_labels")?, get("augment_labels")?);
                let out = net.forward(o, &need("x")?, &need("sigma")?, l.as_ref(), g.as_ref(), false)?;
                let mut v = vec![to_named("D", &out.d.0)?];
                if self.with_fx {
                    v.push(to_named("F_x", &out.f.0)?);
                }
                v
            }
            TchNet::Extractor(fe) => {
                let out = fe.forward(o, &need("x")?, &need("t")?, None, true)?;
                let logits = out.logits.context("the feature extractor has no head")?;
                vec![
                    to_named("features", &out.features.0)?,
                    to_named("fe_logits", &logits.0)?,
                ]
            }
            TchNet::Discriminator(d) => {
                let c = get("condition")?;
                let out = d.forward(o, &need("features")?, &need("t")?, c.as_ref(), true)?;
                let logits = out.logits.context("the discriminator has no head")?.0;
                vec![
                    to_named("logits", &logits)?,
                    to_named("sigmoid", &logits.f_sigmoid()?)?,
                ]
            }
            TchNet::Inception(net) => {
                let y = net.forward(o, &need("x")?).map_err(|e| anyhow!("{e}"))?;
                vec![to_named("features", &y.0)?]
            }
        })
    }
}

impl OnnxGraph for TchGraph {
    fn input_names(&self) -> Vec<String> {
        self.names().iter().map(|s| s.to_string()).collect()
    }

    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>> {
        let names = self.names();
        if let Some(a) = inputs.iter().find(|a| !names.contains(&a.name.as_str())) {
            bail!(
                "input {:?} is not an input of this graph (inputs: {})",
                a.name,
                names.join(", ")
            );
        }
        let dev = self.ops.device;
        let get = |k: &str| -> Result<Option<TchTensor>> {
            inputs
                .iter()
                .find(|a| a.name == k)
                .map(|a| to_tensor(a, dev))
                .transpose()
        };
        let _g = tch::no_grad_guard();
        self.run_net(&get)
    }

    fn describe(&self) -> String {
        format!("tch ({:?})", self.ops.device)
    }
}
