//! One optimisation step of EDM's training loop (SPEC §5.1): learning-rate ramp-up,
//! gradient sanitising, Adam (PyTorch's single-tensor algorithm, L2 weight decay added to
//! the gradient), and the EMA with half-life ramp-up.

use anyhow::Result;
use tch::Tensor;

/// `lr = base · min(cur_nimg / (rampup_kimg·1000), 1)` with the pre-increment image count
/// (so the first step has lr 0 — SPEC §9.7).
pub fn learning_rate(base: f64, cur_nimg: u64, rampup_kimg: f64) -> f64 {
    if rampup_kimg > 0.0 {
        base * (cur_nimg as f64 / (rampup_kimg * 1000.0)).min(1.0)
    } else {
        base
    }
}

/// EMA decay per step: half-life `h = halflife_kimg·1000` images, limited to
/// `cur_nimg·rampup_ratio` when ramping up; `β = 0.5^(batch / max(h, 1e-8))`.
pub fn ema_beta(batch: usize, cur_nimg: u64, halflife_kimg: f64, rampup_ratio: Option<f64>) -> f64 {
    let mut h = halflife_kimg * 1000.0;
    if let Some(r) = rampup_ratio {
        h = h.min(cur_nimg as f64 * r);
    }
    0.5f64.powf(batch as f64 / h.max(1e-8))
}

/// `nan → 0, +inf → 1e5, −inf → −1e5` in place on every gradient.
pub fn sanitize_grads(params: &[Tensor]) -> Result<()> {
    for p in params {
        let g = p.grad();
        if g.defined() {
            let mut g = g;
            let _ = g.f_nan_to_num_(0.0, 1e5, -1e5)?;
        }
    }
    Ok(())
}

/// Zeroes the defined gradients of `params` in place (never resets them to undefined, so
/// gradients that are views into a flat buffer stay views).
pub fn zero_grads(params: &[Tensor]) -> Result<()> {
    for p in params {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.f_zero_()?;
        }
    }
    Ok(())
}

/// Adam with PyTorch's defaults for EDM (β = (0.9, 0.999), ε = 1e-8) and optional L2 weight
/// decay (`grad + wd·param`, as `torch.optim.Adam(weight_decay=…)` does).
pub struct Adam {
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε.
    pub eps: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Per-parameter (exp_avg, exp_avg_sq, step); `None` until the parameter first has a gradient.
    pub state: Vec<Option<(Tensor, Tensor, u64)>>,
}

impl Adam {
    /// Fresh state for `n` parameters.
    pub fn new(n: usize, weight_decay: f64) -> Self {
        Adam {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            state: (0..n).map(|_| None).collect(),
        }
    }

    /// One step at learning rate `lr`; parameters without a gradient are skipped.
    pub fn step(&mut self, params: &[Tensor], lr: f64) -> Result<()> {
        let (b1, b2) = self.betas;
        let _guard = tch::no_grad_guard();
        for (p, st) in params.iter().zip(self.state.iter_mut()) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let g = if self.weight_decay != 0.0 {
                g.f_add(&p.f_mul_scalar(self.weight_decay)?)?
            } else {
                g
            };
            let (m, v, step) = st.get_or_insert_with(|| (p.zeros_like(), p.zeros_like(), 0));
            *step += 1;
            // exp_avg.lerp_(g, 1 − β₁); exp_avg_sq = exp_avg_sq·β₂ + ((1 − β₂)·g)·g
            // (in place: three temporaries per parameter instead of seven; the same operations
            // in the same order, up to FMA contraction inside libtorch's fused kernels)
            let _ = m.f_lerp_(&g, 1.0 - b1)?;
            let _ = v.f_mul_scalar_(b2)?;
            let _ = v.f_addcmul_(&g.f_mul_scalar(1.0 - b2)?, &g)?;
            let bc1 = 1.0 - b1.powi(*step as i32);
            let bc2 = 1.0 - b2.powi(*step as i32);
            let step_size = lr / bc1;
            // denom = √v / √bc₂ + ε
            let mut denom = v.f_sqrt()?;
            let _ = denom.f_div_scalar_(bc2.sqrt())?;
            let _ = denom.f_add_scalar_(self.eps)?;
            // param += (−step_size·exp_avg) / denom
            let mut pm = p.shallow_clone();
            let _ = pm.f_addcdiv_(&m.f_mul_scalar(-step_size)?, &denom)?;
        }
        Ok(())
    }
}
