//! The score-matching losses of EDM and TIW-DSM (SPEC §4), per element, unreduced.
//!
//! | loss | σ draw | weight λ(σ) |
//! |---|---|---|
//! | EDM | `ln σ ~ N(P_mean, P_std²)` | `(σ² + σ_d²)/(σ·σ_d)²` |
//! | VP | `u ~ U(0,1)`, `t = 1 + u(ε_t − 1)`, `σ = sqrt(exp(½β_d t² + β_min t) − 1)` | `1/σ²` |
//! | VE | `σ = σ_min (σ_max/σ_min)^u` | `1/σ²` |
//!
//! Common: `n = σ·ε`, `D = net(y + n, σ, labels)`, loss `= λ·(D − y)²`. TIW-EDM adds the
//! time-dependent discriminator `d` and its gradient (TIW's weight correction `corr =
//! −σ²·∇ₓd`): target `ỹ` and importance weight `2d`, in two independent switchable forms —
//! [`TiwWeighting`] and [`TiwCorrection`] — whose defaults reproduce the official code.

use anyhow::Result;
use tch::{Kind, Tensor};
use tiw_models::edm::EdmDenoiser;
use tiw_models::guidance::{Discriminator, GuidanceOpts};
use tiw_models::tch_ops::{TchOps, TchTensor};

/// Source of the loss's random draws. Each draw has a batch axis (the samples); sources
/// that split a step into ranks and rounds ([`super::draws::PositionDraws`]) need to know it.
pub trait Draws {
    /// Standard normal draws of `shape` whose samples lie along `axis`.
    fn randn_along(&mut self, shape: &[i64], axis: usize) -> Result<Tensor>;
    /// Uniform [0, 1) draws of `shape` whose samples lie along `axis`.
    fn rand_along(&mut self, shape: &[i64], axis: usize) -> Result<Tensor>;
    /// Integers uniform in `[0, high)` of `shape`, int64 (`torch.randint`), samples along `axis`.
    fn randint_along(&mut self, high: i64, shape: &[i64], axis: usize) -> Result<Tensor>;
    /// Called after the loss's last draw, before the network runs (and draws its dropout).
    fn before_network(&mut self) -> Result<()> {
        Ok(())
    }
    /// Standard normal draws of `shape` (samples along axis 0).
    fn randn(&mut self, shape: &[i64]) -> Result<Tensor> {
        self.randn_along(shape, 0)
    }
    /// Uniform [0, 1) draws of `shape` (samples along axis 0).
    fn rand(&mut self, shape: &[i64]) -> Result<Tensor> {
        self.rand_along(shape, 0)
    }
    /// Integers uniform in `[0, high)` of `shape` (samples along axis 0).
    fn randint(&mut self, high: i64, shape: &[i64]) -> Result<Tensor> {
        self.randint_along(high, shape, 0)
    }
}

/// Draws from libtorch's global generator on `device` (the official code's `torch.randn`).
pub struct TorchDraws(pub tch::Device);

impl Draws for TorchDraws {
    fn randn_along(&mut self, shape: &[i64], _axis: usize) -> Result<Tensor> {
        Ok(Tensor::f_randn(shape, (Kind::Float, self.0))?)
    }
    fn rand_along(&mut self, shape: &[i64], _axis: usize) -> Result<Tensor> {
        Ok(Tensor::f_rand(shape, (Kind::Float, self.0))?)
    }
    fn randint_along(&mut self, high: i64, shape: &[i64], _axis: usize) -> Result<Tensor> {
        Ok(Tensor::f_randint(high, shape, (Kind::Int64, self.0))?)
    }
}

/// Data augmentation applied to the clean images between the σ draw and the noise draw
/// (the official order): returns the augmented images and their augment labels `[N, 9]`.
pub trait Augment {
    /// Augments `images [N, C, H, W]`.
    fn apply(&self, images: &Tensor, draws: &mut dyn Draws) -> Result<(Tensor, Tensor)>;
}

/// Pre-recorded draws, handed out in order (for parity with a reference run).
pub struct Recorded(pub std::collections::VecDeque<Tensor>);

impl Recorded {
    fn next(&mut self, shape: &[i64]) -> Result<Tensor> {
        let t = self
            .0
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("no recorded draw left for shape {shape:?}"))?;
        anyhow::ensure!(
            t.size() == shape,
            "recorded draw has shape {:?}, the loss asks for {shape:?}",
            t.size()
        );
        Ok(t)
    }
}

impl Draws for Recorded {
    fn randn_along(&mut self, shape: &[i64], _axis: usize) -> Result<Tensor> {
        self.next(shape)
    }
    fn rand_along(&mut self, shape: &[i64], _axis: usize) -> Result<Tensor> {
        self.next(shape)
    }
    fn randint_along(&mut self, _high: i64, shape: &[i64], _axis: usize) -> Result<Tensor> {
        self.next(shape)
    }
}

/// How TIW weights samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TiwWeighting {
    /// The published code: the weight `2d` is broadcast across the batch (SPEC §9.2), so every
    /// sample is weighted by `Σᵢ 2dᵢ` — the per-sample weighting collapses to a batch scalar.
    #[default]
    Official,
    /// Sample i weighted by its own `2dᵢ`.
    PerSample,
}

/// Which regression target TIW uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TiwCorrection {
    /// The published code: `ỹ = y + corr = y − σ²∇ₓd` (SPEC §4, §9.4).
    #[default]
    Official,
    /// The denoising form of the TIW objective: `ỹ = y + σ²∇ₓ log d = y − corr/d`.
    Derived,
}

/// A loss and its hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub enum Loss {
    /// EDMLoss.
    Edm {
        /// Mean of ln σ.
        p_mean: f64,
        /// Std of ln σ.
        p_std: f64,
        /// σ_data.
        sigma_data: f64,
    },
    /// VPLoss.
    Vp {
        /// β_d.
        beta_d: f64,
        /// β_min.
        beta_min: f64,
        /// ε_t.
        epsilon_t: f64,
    },
    /// VELoss.
    Ve {
        /// σ_min.
        sigma_min: f64,
        /// σ_max.
        sigma_max: f64,
    },
    /// TIW_EDMLoss (EDM σ and λ plus the discriminator terms).
    TiwEdm {
        /// Mean of ln σ.
        p_mean: f64,
        /// Std of ln σ.
        p_std: f64,
        /// σ_data.
        sigma_data: f64,
        /// Weighting form.
        weighting: TiwWeighting,
        /// Target form.
        correction: TiwCorrection,
    },
}

impl Loss {
    /// Official defaults of EDMLoss.
    pub fn edm() -> Self {
        Loss::Edm {
            p_mean: -1.2,
            p_std: 1.2,
            sigma_data: 0.5,
        }
    }
    /// Official defaults of TIW_EDMLoss with the given switches.
    pub fn tiw(weighting: TiwWeighting, correction: TiwCorrection) -> Self {
        Loss::TiwEdm {
            p_mean: -1.2,
            p_std: 1.2,
            sigma_data: 0.5,
            weighting,
            correction,
        }
    }
}

/// Everything a loss evaluation produced.
pub struct LossOut {
    /// Per-element loss `[N, C, H, W]` (TIW official: the per-sample factor `λ(D − ỹ)²`;
    /// multiply by [`LossOut::batch_weight`]).
    pub per_element: Tensor,
    /// TIW official: `Σᵢ 2dᵢ`, the scalar every sample's loss is multiplied by.
    pub batch_weight: Option<Tensor>,
    /// `Σ` of the official loss tensor (what the training loop backpropagates, before scaling).
    pub sum: Tensor,
    /// σ per sample `[N, 1, 1, 1]`.
    pub sigma: Tensor,
    /// λ(σ) `[N, 1, 1, 1]`.
    pub weight: Tensor,
    /// The noise `n = σ·ε`.
    pub noise: Tensor,
    /// The denoiser output `D(y + n; σ)`.
    pub denoised: Tensor,
    /// The regression target (TIW: the corrected `ỹ`).
    pub target: Tensor,
    /// TIW: the weight correction `−σ²·∇ₓd` and the clipped prediction `d`.
    pub tiw: Option<(Tensor, Tensor)>,
}

#[allow(clippy::too_many_arguments)]
/// Evaluates `loss` for `images [N, C, H, W]` (in [−1, 1]) with optional one-hot `labels`.
/// TIW needs the discriminator `dis`; its terms are computed without gradient to the net.
/// `augment`, if given, transforms the images after the σ draw; the network then gets the
/// augment labels.
pub fn evaluate(
    loss: &Loss,
    net: &EdmDenoiser<TchOps>,
    ops: &TchOps,
    images: &Tensor,
    labels: Option<&Tensor>,
    draws: &mut dyn Draws,
    dis: Option<&Discriminator>,
    train: bool,
    augment: Option<&dyn Augment>,
) -> Result<LossOut> {
    let n = images.size()[0];
    let (sigma, weight) = draw_sigma(loss, draws, &[n, 1, 1, 1])?;
    let (y, aug_labels) = match augment {
        Some(a) => {
            let (y, l) = a.apply(images, draws)?;
            (y, Some(TchTensor(l)))
        }
        None => (images.shallow_clone(), None),
    };
    let eps = draws.randn(&y.size())?;
    let noise = eps.f_mul(&sigma)?;
    let noisy = y.f_add(&noise)?;
    let l = labels.map(|l| TchTensor(l.shallow_clone()));
    // TIW's weight correction depends only on the noisy images and σ and draws nothing, so
    // computing it before the denoiser (the official code computes it after) gives the same
    // values, and the frozen networks' autograd graph is freed before the denoiser's
    // activations are stored (lower peak memory).
    let tiw = match *loss {
        Loss::TiwEdm {
            weighting,
            correction,
            ..
        } => {
            let dis = dis.ok_or_else(|| {
                anyhow::anyhow!("the TIW loss needs the feature extractor and discriminator")
            })?;
            // The official loss passes the channel count as img_resolution (SPEC §9.3): linear VP time.
            let opts = GuidanceOpts {
                img_resolution: y.size()[1] as usize,
                time_min: 0.0,
                time_max: 1.0,
            };
            let (corr, d) =
                dis.weight_correction(&noisy.f_detach()?, &sigma.f_view([-1])?.f_detach()?, &opts, None)?;
            Some((weighting, correction, corr, d))
        }
        _ => None,
    };
    draws.before_network()?;
    let out = net.forward(
        ops,
        &TchTensor(noisy.shallow_clone()),
        &TchTensor(sigma.shallow_clone()),
        l.as_ref(),
        aug_labels.as_ref(),
        train,
    )?;
    let denoised = out.d.0;
    let Some((weighting, correction, corr, d)) = tiw else {
        let per = weight.f_mul(&denoised.f_sub(&y)?.f_square()?)?;
        let sum = per.f_sum(Kind::Float)?;
        return Ok(LossOut {
            per_element: per,
            batch_weight: None,
            sum,
            sigma,
            weight,
            noise,
            denoised,
            target: y,
            tiw: None,
        });
    };
    let target = match correction {
        TiwCorrection::Official => y.f_add(&corr)?,
        TiwCorrection::Derived => y.f_sub(&corr.f_div(&d.f_view([-1, 1, 1, 1])?)?)?,
    };
    let per = weight.f_mul(&denoised.f_sub(&target)?.f_square()?)?;
    let (per_element, batch_weight, sum) = tiw_weighting(weighting, per, &d)?;
    Ok(LossOut {
        per_element,
        batch_weight,
        sum,
        sigma,
        weight,
        noise,
        denoised,
        target,
        tiw: Some((corr, d)),
    })
}

/// TIW's sample weights `2d` applied to the per-element loss: official (the batch sum
/// `Σ 2dᵢ` times the whole loss's sum, SPEC §9.2) or per sample; returns the per-element
/// loss, the official batch weight and the total.
fn tiw_weighting(
    weighting: TiwWeighting,
    per: Tensor,
    d: &Tensor,
) -> Result<(Tensor, Option<Tensor>, Tensor)> {
    let two_d = d.f_mul_scalar(2.0)?;
    Ok(match weighting {
        TiwWeighting::Official => {
            let bw = two_d.f_sum(Kind::Float)?;
            let sum = per.f_sum(Kind::Float)?.f_mul(&bw)?;
            (per, Some(bw), sum)
        }
        TiwWeighting::PerSample => {
            let pe = per.f_mul(&two_d.f_view([-1, 1, 1, 1])?)?;
            let sum = pe.f_sum(Kind::Float)?;
            (pe, None, sum)
        }
    })
}

/// Draws the noise levels `σ [N, 1, 1, 1]` of `loss` and their weights λ(σ): EDM
/// `σ = exp(P_mean + P_std·ε)`, `λ = (σ² + σ_d²)/(σ·σ_d)²`; VP `σ = √(exp(½β_d t² + β_min t) − 1)`
/// with `t = 1 + u(ε_t − 1)`, `λ = 1/σ²`; VE `σ = σ_min·(σ_max/σ_min)^u`, `λ = 1/σ²` (SPEC §4).
fn draw_sigma(loss: &Loss, draws: &mut dyn Draws, col: &[i64]) -> Result<(Tensor, Tensor)> {
    Ok(match *loss {
        Loss::Edm {
            p_mean,
            p_std,
            sigma_data,
        }
        | Loss::TiwEdm {
            p_mean,
            p_std,
            sigma_data,
            ..
        } => {
            let rnd = draws.randn(col)?;
            let sigma = rnd.f_mul_scalar(p_std)?.f_add_scalar(p_mean)?.f_exp()?;
            let s2 = sigma.f_square()?;
            let w = s2
                .f_add_scalar(sigma_data * sigma_data)?
                .f_div(&sigma.f_mul_scalar(sigma_data)?.f_square()?)?;
            (sigma, w)
        }
        Loss::Vp {
            beta_d,
            beta_min,
            epsilon_t,
        } => {
            let u = draws.rand(col)?;
            let t = u.f_mul_scalar(epsilon_t - 1.0)?.f_add_scalar(1.0)?;
            let arg = t
                .f_square()?
                .f_mul_scalar(0.5 * beta_d)?
                .f_add(&t.f_mul_scalar(beta_min)?)?;
            let sigma = arg.f_exp()?.f_add_scalar(-1.0)?.f_sqrt()?;
            let w = sigma.f_square()?.f_reciprocal()?;
            (sigma, w)
        }
        Loss::Ve { sigma_min, sigma_max } => {
            let u = draws.rand(col)?;
            let sigma = Tensor::from(sigma_max / sigma_min)
                .f_pow(&u)?
                .f_mul_scalar(sigma_min)?;
            let w = sigma.f_square()?.f_reciprocal()?;
            (sigma, w)
        }
    })
}

/// The official TIW loss tensor `[N, 1, 1, N, C, H, W]`: `loss[i,0,0,j] = 2dᵢ·λⱼ(Dⱼ − ỹⱼ)²`
/// (the double-unsqueeze broadcast of SPEC §9.2), for inspection and parity tests.
pub fn tiw_official_broadcast(out: &LossOut) -> Result<Tensor> {
    let (_, d) = out
        .tiw
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("not a TIW loss"))?;
    let n = d.size()[0];
    let w = d.f_mul_scalar(2.0)?.f_reshape([n, 1, 1, 1, 1, 1, 1].as_slice())?;
    let per = out.weight.f_mul(&out.denoised.f_sub(&out.target)?.f_square()?)?;
    Ok(w.f_mul(&per)?)
}
