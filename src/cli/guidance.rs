//! `tiw guidance`: discriminator-guidance and TIW weight terms for inputs from an `.npz`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use tch::Tensor;
use tiw_models::guidance::{Discriminator, GuidanceOpts};
use tiw_models::tch_ops::TchOps;

use super::forward::{condition, tensor, values};
use tiw::device::{self, DeviceSpec};
use tiw::npz;

/// Arguments of `tiw guidance`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// ADM feature extractor (.pt).
    #[arg(long)]
    extractor: PathBuf,
    /// Time-dependent discriminator (.pt).
    #[arg(long)]
    discriminator: PathBuf,
    /// Inputs: `unnormalized_input` (N,C,H,W) = y + σ·n in VE space, `std_wve_t` (N,) = σ.
    #[arg(long)]
    inputs: PathBuf,
    /// Outputs: `grad_log_ratio` (−σ²α∇log(d/(1−d))), `log_ratio`, `prediction` (clipped d),
    /// `weight_correction` (−σ²α∇d), `weight_correction_prediction`.
    #[arg(long)]
    out: PathBuf,
    /// 64 converts VP time to cosine-schedule time (the ADM-64 extractor); 32 (default) or
    /// anything else uses linear VP time. (TIW's training loss passes 3 here: SPEC §9.3.)
    #[arg(long, default_value_t = 32)]
    img_resolution: usize,
    /// Smallest VP time the discriminator accepts (smaller σ gives the zero branch).
    #[arg(long, default_value_t = 1e-5)]
    time_min: f64,
    /// Largest VP time the discriminator accepts.
    #[arg(long, default_value_t = 1.0)]
    time_max: f64,
    /// Key of the class condition in the inputs, for conditional discriminators.
    #[arg(long)]
    condition_key: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

/// Runs `tiw guidance`.
pub fn run(a: Args) -> Result<()> {
    let dev = device::select(a.device)?;
    let o = TchOps::new(dev);
    let fe = tiw_models::load::encoder(&o, &a.extractor, None)?;
    let dis = tiw_models::load::encoder(&o, &a.discriminator, None)?;
    let inputs = npz::read(&a.inputs)?;
    let x = npz::get(&inputs, "unnormalized_input", &a.inputs)?;
    let s = npz::get(&inputs, "std_wve_t", &a.inputs)?;
    let n = x.shape.first().copied().unwrap_or(0);
    if x.shape.len() != 4 || x.shape[1] != fe.cfg.in_channels {
        bail!(
            "{}: unnormalized_input has shape {:?}; expected (N, {}, H, W)",
            a.inputs.display(),
            x.shape,
            fe.cfg.in_channels
        );
    }
    if s.shape != [n] {
        bail!(
            "{}: std_wve_t has shape {:?}; expected ({n},)",
            a.inputs.display(),
            s.shape
        );
    }
    let cond = match (&a.condition_key, dis.cfg.num_class) {
        (Some(k), Some(c)) => Some(condition(npz::get(&inputs, k, &a.inputs)?, c, dev)?.0),
        (Some(_), None) => bail!("--condition-key given but the discriminator is unconditional"),
        (None, Some(_)) => bail!("the discriminator is class-conditional: pass --condition-key"),
        (None, None) => None,
    };
    let g = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &dis,
    };
    let opts = GuidanceOpts {
        img_resolution: a.img_resolution,
        time_min: a.time_min,
        time_max: a.time_max,
    };
    let (xt, st) = (tensor(x, dev)?.0, tensor(s, dev)?.0);
    let r = g.grad_log_ratio(&xt, &st, &opts, cond.as_ref())?;
    let (c, p) = g.weight_correction(&xt, &st, &opts, cond.as_ref())?;
    let shape = |t: &Tensor| t.size().iter().map(|&d| d as usize).collect::<Vec<_>>();
    let mut out = Vec::new();
    for (name, t) in [
        ("grad_log_ratio", &r.grad),
        ("log_ratio", &r.log_ratio),
        ("prediction", &r.prediction),
        ("weight_correction", &c),
        ("weight_correction_prediction", &p),
    ] {
        out.push((name.to_string(), shape(t), values(t)?));
    }
    npz::write_f32(&a.out, &out)?;
    eprintln!("wrote {} ({} samples)", a.out.display(), n);
    Ok(())
}
