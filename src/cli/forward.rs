//! `tiw forward`: run a network on inputs from an `.npz` and write its outputs, for parity
//! checks against PyTorch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};
use tiw_models::tch_ops::{TchOps, TchTensor};

use crate::device::{self, DeviceSpec};
use crate::npz::{self, Array};

/// Which runtime evaluates the network.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum Runtime {
    /// libtorch, eager (CPU or CUDA).
    Tch,
    /// ONNX Runtime (arrives with ONNX export).
    Ort,
    /// tract (arrives with ONNX export).
    Tract,
}

/// Arguments of `tiw forward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// EDM network: snapshot .pkl, training-state .pt or .safetensors made by `tiw convert`.
    /// Inputs: `x` (N,C,H,W) f32, `sigma` (N,) or 0-d, optional `class_labels` (N,L) and
    /// `augment_labels` (N,9). Outputs: `D` (denoiser) and `F_x` (inner network).
    #[arg(long, conflicts_with = "extractor", required_unless_present = "extractor")]
    network: Option<PathBuf>,
    /// ADM feature extractor (.pt). Inputs `x`, `t`; outputs `features`, `fe_logits`, and with
    /// --discriminator also `dis_logits`, `dis_sigmoid`.
    #[arg(long)]
    extractor: Option<PathBuf>,
    /// Time-dependent discriminator (.pt) applied to the extractor's features.
    #[arg(long, requires = "extractor")]
    discriminator: Option<PathBuf>,
    /// Input arrays (.npz).
    #[arg(long)]
    inputs: PathBuf,
    /// Output arrays (.npz).
    #[arg(long)]
    out: PathBuf,
    /// Runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Tch)]
    runtime: Runtime,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Evaluate at most this many samples at a time.
    #[arg(long)]
    batch: Option<usize>,
    /// Extractor image resolution, if its layout is ambiguous from the weights.
    #[arg(long)]
    img_resolution: Option<usize>,
    /// Key of the discriminator's class condition in the inputs (int64 (N,) or one-hot (N,K)).
    #[arg(long)]
    condition_key: Option<String>,
}

/// An npz array as a tch tensor (f32) on `dev`.
pub fn tensor(a: &Array, dev: tch::Device) -> Result<TchTensor> {
    let shape: Vec<i64> = if a.shape.is_empty() { vec![1] } else { a.shape.iter().map(|&d| d as i64).collect() };
    Ok(TchTensor(Tensor::f_from_slice(&a.to_f32())?.f_reshape(shape)?.f_to_device(dev)?))
}

/// Flattened f32 values of a tensor.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(&t.f_to_kind(Kind::Float)?.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?)?)
}

fn shape_of(t: &Tensor) -> Vec<usize> {
    t.size().iter().map(|&d| d as usize).collect()
}

/// One-hot `[N, classes]` from int labels (N,) or argmax of a (N,K) array.
pub fn condition(a: &Array, classes: usize, dev: tch::Device) -> Result<TchTensor> {
    let n = a.shape.first().copied().unwrap_or(0);
    let labels: Vec<usize> = match a.shape.len() {
        1 => a.to_f64().iter().map(|&x| x as usize).collect(),
        2 => a
            .to_f32()
            .chunks(a.shape[1].max(1))
            .map(|r| r.iter().enumerate().fold(0, |b, (i, v)| if *v > r[b] { i } else { b }))
            .collect(),
        _ => bail!("condition {:?} must be (N,) labels or (N,K) one-hot", a.name),
    };
    let mut v = vec![0f32; n * classes];
    for (i, &l) in labels.iter().enumerate() {
        if l >= classes {
            bail!("condition label {l} out of range for {classes} classes");
        }
        v[i * classes + l] = 1.0;
    }
    Ok(TchTensor(Tensor::f_from_slice(&v)?.f_reshape([n as i64, classes as i64])?.f_to_device(dev)?))
}

/// Splits `0..n` into chunks of `batch`.
pub fn chunks(n: usize, batch: Option<usize>) -> Vec<(i64, i64)> {
    let b = batch.unwrap_or(n).max(1);
    (0..n).step_by(b).map(|s| (s as i64, (b.min(n - s)) as i64)).collect()
}

/// Concatenates per-chunk outputs along dim 0.
fn cat(parts: &[Tensor]) -> Result<Tensor> {
    Ok(Tensor::f_cat(parts, 0)?)
}

/// Runs `tiw forward`.
pub fn run(a: Args) -> Result<()> {
    if a.runtime != Runtime::Tch {
        bail!("--runtime {:?}: only tch is available in this version (ONNX Runtime and tract come with ONNX export)", a.runtime);
    }
    let dev = device::select(a.device)?;
    let o = TchOps::new(dev);
    let inputs = npz::read(&a.inputs)?;
    let get = |k: &str| npz::get(&inputs, k, &a.inputs);
    let opt = |k: &str| inputs.iter().find(|x| x.name == k);
    let mut outputs: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let _guard = tch::no_grad_guard();
    if let Some(net_path) = &a.network {
        let net = tiw_models::load::edm_denoiser(&o, net_path)?;
        let cfg = net.cfg.clone();
        let x = get("x")?;
        if x.shape.len() != 4 || x.shape[1] != cfg.img_channels || x.shape[2] != cfg.img_resolution || x.shape[3] != cfg.img_resolution {
            bail!(
                "{}: x has shape {:?}; this network takes (N, {}, {}, {})",
                a.inputs.display(),
                x.shape,
                cfg.img_channels,
                cfg.img_resolution,
                cfg.img_resolution
            );
        }
        let n = x.shape[0];
        let sigma = get("sigma")?;
        if !(sigma.shape.is_empty() || sigma.shape == [n] || sigma.shape == [1]) {
            bail!("{}: sigma has shape {:?}; expected (N,) or a scalar", a.inputs.display(), sigma.shape);
        }
        let labels = opt("class_labels");
        if let Some(l) = labels {
            if l.shape != [n, cfg.label_dim] {
                bail!("{}: class_labels has shape {:?}; expected ({n}, {})", a.inputs.display(), l.shape, cfg.label_dim);
            }
        }
        let aug = opt("augment_labels");
        if let Some(g) = aug {
            if g.shape != [n, cfg.augment_dim()] {
                bail!("{}: augment_labels has shape {:?}; expected ({n}, {})", a.inputs.display(), g.shape, cfg.augment_dim());
            }
        }
        let (xt, st) = (tensor(x, dev)?, tensor(sigma, dev)?);
        let lt = labels.map(|l| tensor(l, dev)).transpose()?;
        let at = aug.map(|g| tensor(g, dev)).transpose()?;
        let per_sample_sigma = sigma.shape == [n] && n > 1;
        let (mut d, mut f) = (Vec::new(), Vec::new());
        for (s, len) in chunks(n, a.batch) {
            let nar = |t: &TchTensor| -> Result<TchTensor> { Ok(TchTensor(t.f_narrow(0, s, len)?)) };
            let sig = if per_sample_sigma { nar(&st)? } else { st.clone() };
            let l = lt.as_ref().map(nar).transpose()?;
            let g = at.as_ref().map(nar).transpose()?;
            let out = net.forward(&o, &nar(&xt)?, &sig, l.as_ref(), g.as_ref(), false)?;
            d.push(out.d.0);
            f.push(out.f.0);
        }
        for (name, parts) in [("D", d), ("F_x", f)] {
            let t = cat(&parts)?;
            outputs.push((name.into(), shape_of(&t), values(&t)?));
        }
    } else {
        let fe_path = a.extractor.as_ref().context("--network or --extractor is required")?;
        let fe = tiw_models::load::encoder(&o, fe_path, a.img_resolution)?;
        let dis = a.discriminator.as_ref().map(|p| tiw_models::load::encoder(&o, p, None)).transpose()?;
        let x = get("x")?;
        let t = get("t")?;
        let n = x.shape.first().copied().unwrap_or(0);
        if x.shape.len() != 4 || x.shape[1] != fe.cfg.in_channels {
            bail!("{}: x has shape {:?}; the extractor takes (N, {}, H, W)", a.inputs.display(), x.shape, fe.cfg.in_channels);
        }
        if t.shape != [n] {
            bail!("{}: t has shape {:?}; expected ({n},)", a.inputs.display(), t.shape);
        }
        let cond = match (&a.condition_key, dis.as_ref().and_then(|d| d.cfg.num_class)) {
            (Some(k), Some(classes)) => Some(condition(get(k)?, classes, dev)?),
            (Some(_), None) => bail!("--condition-key given but the discriminator is unconditional"),
            (None, Some(_)) => bail!("the discriminator is class-conditional: pass --condition-key"),
            (None, None) => None,
        };
        let (xt, tt) = (tensor(x, dev)?, tensor(t, dev)?);
        let (mut feats, mut logits, mut dl) = (Vec::new(), Vec::new(), Vec::new());
        for (s, len) in chunks(n, a.batch) {
            let nar = |t: &TchTensor| -> Result<TchTensor> { Ok(TchTensor(t.f_narrow(0, s, len)?)) };
            let (xb, tb) = (nar(&xt)?, nar(&tt)?);
            let out = fe.forward(&o, &xb, &tb, None, true)?;
            if let Some(d) = &dis {
                let c = cond.as_ref().map(nar).transpose()?;
                dl.push(d.forward(&o, &out.features, &tb, c.as_ref(), true)?.logits.expect("head").0);
            }
            feats.push(out.features.0);
            logits.push(out.logits.expect("head").0);
        }
        let mut push = |name: &str, t: Tensor| -> Result<()> {
            outputs.push((name.into(), shape_of(&t), values(&t)?));
            Ok(())
        };
        push("features", cat(&feats)?)?;
        push("fe_logits", cat(&logits)?)?;
        if dis.is_some() {
            let d = cat(&dl)?;
            push("dis_sigmoid", d.f_sigmoid()?)?;
            push("dis_logits", d)?;
        }
    }
    npz::write_f32(&a.out, &outputs)?;
    eprintln!(
        "wrote {} ({})",
        a.out.display(),
        outputs.iter().map(|(n, s, _)| format!("{n} {s:?}")).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
