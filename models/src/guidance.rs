//! Discriminator guidance (DG) and TIW importance-weight terms with autograd (SPEC §3,
//! classifier_lib): `d(x_vp, t) = sigmoid(disc(extractor(x_vp, t), t))`, the log density
//! ratio, its gradient, and the TIW weight correction — all from a VE-space noisy input
//! `x = y + σn` and per-sample σ. libtorch-only (needs autograd).

use tch::{Kind, Tensor};

use crate::adm::EncoderUNet;
use crate::tch_ops::{TchOps, TchTensor};
use crate::vpsde::VpSde;
use crate::Result;

/// Clip range of the discriminator output.
pub const CLIP: f64 = 1e-5;

/// The composite time-dependent discriminator.
pub struct Discriminator<'a> {
    /// Ops (device).
    pub ops: TchOps,
    /// Frozen feature extractor.
    pub extractor: &'a EncoderUNet<TchOps>,
    /// Discriminator head network.
    pub discriminator: &'a EncoderUNet<TchOps>,
}

/// Settings of the guidance helpers.
#[derive(Debug, Clone, Copy)]
pub struct GuidanceOpts {
    /// 64 switches to cosine-schedule time (ADM-64 extractor); anything else uses linear
    /// VP time. TIW_EDMLoss passes the channel count (3) here (SPEC §9.3).
    pub img_resolution: usize,
    /// Lower end of the discriminator's time range.
    pub time_min: f64,
    /// Upper end.
    pub time_max: f64,
}

/// Result of [`Discriminator::grad_log_ratio`].
pub struct GradLogRatio {
    /// `−σ²·α·∇_{x_vp} Σ log(d/(1−d))`, image-shaped.
    pub grad: Tensor,
    /// `log(d/(1−d))` per sample (1e7 in the out-of-range branch).
    pub log_ratio: Tensor,
    /// Clipped `d` per sample (image-shaped zeros in the out-of-range branch, as the
    /// official code returns).
    pub prediction: Tensor,
}

impl Discriminator<'_> {
    /// `d(x_vp, t)` per sample, unclipped, `[N]`. `condition`: one-hot `[N, classes]`.
    pub fn predict(&self, x_vp: &Tensor, t: &Tensor, condition: Option<&Tensor>) -> Result<Tensor> {
        let o = &self.ops;
        let x = TchTensor(x_vp.shallow_clone());
        let t = TchTensor(t.shallow_clone());
        let c = condition.map(|c| TchTensor(c.shallow_clone()));
        let feats = self.extractor.forward(o, &x, &t, None, false)?.features;
        let logits = self
            .discriminator
            .forward(o, &feats, &t, c.as_ref(), true)?
            .logits
            .expect("head");
        Ok(logits.0.f_sigmoid()?.f_view([-1])?)
    }

    /// `(α(τ), τ)` of each σ, evaluated with libtorch in f32 in classifier_lib's operation
    /// order (the discriminator sees `999·τ` inside, so τ must round exactly as there).
    fn vp(&self, std: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
        let sde = VpSde::default();
        let (b0, b1) = (sde.beta_0, sde.beta_1);
        let s = std.f_to_kind(Kind::Float)?.f_view([-1])?;
        let l = s.f_square()?.f_add_scalar(1.0)?.f_log()?;
        let tau = l
            .f_mul_scalar(2.0 * (b1 - b0))?
            .f_add_scalar(b0 * b0)?
            .f_sqrt()?
            .f_add_scalar(-b0)?
            .f_div_scalar(b1 - b0)?;
        let lmc = tau
            .f_square()?
            .f_mul_scalar(-0.25)?
            .f_mul_scalar(b1 - b0)?
            .f_sub(&tau.f_mul_scalar(0.5)?.f_mul_scalar(b0)?)?;
        let alpha = lmc.f_exp()?;
        let v = |t: &Tensor| -> Result<Vec<f32>> { Ok(Vec::<f32>::try_from(&t.f_contiguous()?)?) };
        Ok((v(&alpha)?, v(&tau)?))
    }

    /// Cosine-schedule time of linear VP times, in classifier_lib's operation order.
    fn t_cos(tau: &[f32]) -> Result<Vec<f32>> {
        let sde = VpSde::default();
        let t = Tensor::f_from_slice(tau)?;
        let f0 = ((sde.s / (1.0 + sde.s)) * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2);
        let lmc = t
            .f_square()?
            .f_mul_scalar(-0.25)?
            .f_mul_scalar(sde.beta_1 - sde.beta_0)?
            .f_sub(&t.f_mul_scalar(0.5)?.f_mul_scalar(sde.beta_0)?)?;
        let time = lmc.f_exp()?.f_mul_scalar(f0.sqrt())?.f_arccos()?;
        let tc = time
            .f_mul_scalar((1.0 + sde.s) * 2.0 / std::f64::consts::PI)?
            .f_add_scalar(-sde.s)?
            .f_mul_scalar(sde.t_end)?;
        Ok(Vec::<f32>::try_from(&tc)?)
    }

    fn in_range(tau: &[f32], opts: &GuidanceOpts) -> bool {
        let m = tau.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
        !(m > opts.time_max || m < opts.time_min)
    }

    /// Gradient of `f(clip(d))` w.r.t. the VP input, scaled by `−σ²·α`; returns
    /// (scaled gradient, f values, clipped d).
    #[allow(clippy::too_many_arguments)]
    fn grad_of(
        &self,
        x: &Tensor,
        std: &Tensor,
        alpha: &[f32],
        tau: &[f32],
        opts: &GuidanceOpts,
        condition: Option<&Tensor>,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = x.device();
        let n = alpha.len() as i64;
        let a = Tensor::f_from_slice(alpha)?
            .f_to_device(dev)?
            .f_view([n, 1, 1, 1])?;
        let t: Vec<f32> = if opts.img_resolution == 64 {
            Self::t_cos(tau)?
        } else {
            tau.to_vec()
        };
        let t = Tensor::f_from_slice(&t)?.f_to_device(dev)?;
        let x_vp = a
            .f_mul(x)?
            .f_to_kind(Kind::Float)?
            .f_detach()?
            .f_set_requires_grad(true)?;
        let d = tch::with_grad(|| -> Result<Tensor> {
            Ok(self.predict(&x_vp, &t, condition)?.f_clamp(CLIP, 1.0 - CLIP)?)
        })?;
        let y = tch::with_grad(|| f(&d))?;
        let g = Tensor::f_run_backward(&[y.f_sum(Kind::Float)?], &[&x_vp], false, false)?.remove(0);
        let s = std.f_to_kind(Kind::Float)?.f_view([n, 1, 1, 1])?;
        let scale = s.f_square()?.f_mul(&a)?.f_neg()?;
        Ok((g.f_mul(&scale)?, y.f_detach()?, d.f_detach()?))
    }

    /// DG's `get_grad_log_ratio(..., log=true)`.
    pub fn grad_log_ratio(
        &self,
        x: &Tensor,
        std: &Tensor,
        opts: &GuidanceOpts,
        condition: Option<&Tensor>,
    ) -> Result<GradLogRatio> {
        let (alpha, tau) = self.vp(std)?;
        if !Self::in_range(&tau, opts) {
            let n = alpha.len() as i64;
            return Ok(GradLogRatio {
                grad: x.f_zeros_like()?,
                log_ratio: Tensor::f_ones([n], (Kind::Float, x.device()))?.f_mul_scalar(1e7)?,
                prediction: x.f_zeros_like()?,
            });
        }
        let (grad, log_ratio, prediction) = self.grad_of(x, std, &alpha, &tau, opts, condition, |d| {
            Ok(d.f_div(&d.f_neg()?.f_add_scalar(1.0)?)?.f_log()?)
        })?;
        Ok(GradLogRatio {
            grad,
            log_ratio,
            prediction,
        })
    }

    /// DG's `get_grad_log_ratio(..., log=false)`: only the gradient (zeros out of range).
    pub fn grad_log_ratio_nolog(
        &self,
        x: &Tensor,
        std: &Tensor,
        opts: &GuidanceOpts,
        condition: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (_, tau) = self.vp(std)?;
        if !Self::in_range(&tau, opts) {
            return Ok(x.f_zeros_like()?);
        }
        Ok(self.grad_log_ratio(x, std, opts, condition)?.grad)
    }

    /// TIW's `get_weight_correction`: `(−σ²·α·∇_{x_vp} Σ d, d)` with `d` clipped.
    pub fn weight_correction(
        &self,
        x: &Tensor,
        std: &Tensor,
        opts: &GuidanceOpts,
        condition: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (alpha, tau) = self.vp(std)?;
        if !Self::in_range(&tau, opts) {
            let n = alpha.len() as i64;
            return Ok((
                x.f_zeros_like()?,
                Tensor::f_ones([n], (Kind::Float, x.device()))?.f_mul_scalar(1e7)?,
            ));
        }
        let (g, _, d) = self.grad_of(x, std, &alpha, &tau, opts, condition, |d| Ok(d.shallow_clone()))?;
        Ok((g, d))
    }

    /// TIW's `get_prediction`: clipped `d` (zeros out of range).
    pub fn prediction(
        &self,
        x: &Tensor,
        std: &Tensor,
        opts: &GuidanceOpts,
        condition: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (alpha, tau) = self.vp(std)?;
        let n = alpha.len() as i64;
        if !Self::in_range(&tau, opts) {
            return Ok(Tensor::f_zeros([n], (Kind::Float, x.device()))?);
        }
        let dev = x.device();
        let a = Tensor::f_from_slice(&alpha)?
            .f_to_device(dev)?
            .f_view([n, 1, 1, 1])?;
        let t: Vec<f32> = if opts.img_resolution == 64 {
            Self::t_cos(&tau)?
        } else {
            tau
        };
        let t = Tensor::f_from_slice(&t)?.f_to_device(dev)?;
        let x_vp = a.f_mul(x)?;
        Ok(tch::no_grad(|| self.predict(&x_vp, &t, condition))?.f_clamp(CLIP, 1.0 - CLIP)?)
    }
}

/// `log(p/(1−p))` of the clipped prediction, and the clipped prediction (DG's
/// `get_log_ratio` on an already evaluated `d`).
pub fn log_ratio(d: &Tensor) -> Result<(Tensor, Tensor)> {
    let p = d.f_clamp(CLIP, 1.0 - CLIP)?;
    Ok((p.f_div(&p.f_neg()?.f_add_scalar(1.0)?)?.f_log()?, p))
}
