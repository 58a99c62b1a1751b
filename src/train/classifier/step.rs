//! One step of discriminator training (SPEC §4 "Discriminator training"), with pinnable
//! draws: `u ~ U(0,1)` → importance-sampled time `t`; `(α, s) = marginal_prob(t)`;
//! `x_t = α·x + s·z`, `z ~ N(0, I)`; features = extractor(x_t, t) without gradient;
//! `p = sigmoid(disc(features, t))`; loss = mean BCE(p, label). Draw order: `rand` then
//! `randn` (as `get_diffusion_time` then `randn_like`).

use anyhow::{ensure, Result};
use tch::{Kind, Reduction, Tensor};
use tiw_models::adm::EncoderUNet;
use tiw_models::tch_ops::{TchOps, TchTensor};
use tiw_models::vpsde::VpSde;

use crate::train::draws::{PositionDraws, StepSplit};
use crate::train::loss::Draws;
use crate::train::parallel::{sum_gradients, Collective};
use crate::train::step::{zero_grads, Adam};

/// Smallest diffusion time of `get_diffusion_time`.
pub const T_MIN: f64 = 1e-5;

/// The two networks of a discriminator step.
pub struct DiscNets<'a> {
    /// Ops of the frozen extractor (device); the discriminator's forward uses them with
    /// fused attention off (it is being trained).
    pub ops: TchOps,
    /// Frozen feature extractor.
    pub extractor: &'a EncoderUNet<TchOps>,
    /// The discriminator being trained (built with trainable ops).
    pub disc: &'a EncoderUNet<TchOps>,
}

/// What one forward evaluation produced.
pub struct StepOutput {
    /// Diffusion times `[2B]`.
    pub t: Tensor,
    /// Noisy inputs `α·x + s·z`.
    pub perturbed: Tensor,
    /// Extractor features (no gradient).
    pub features: Tensor,
    /// `sigmoid(disc(features, t))` `[2B]`.
    pub prediction: Tensor,
    /// Mean binary cross-entropy (0-d).
    pub loss: Tensor,
}

/// `A(t) = ln(1 − e^{−B(t)}) + B(t)` evaluated as classifier_lib does, on an f32 tensor
/// (for t = 1e-5 the cancellation in `1 − e^{−B}` makes this −13.802318, not the exact
/// −13.814516; the official sampler uses the f32 value).
fn antiderivative_f32(t: f64) -> Result<f64> {
    let sde = VpSde::default();
    let t = Tensor::f_from_slice(&[t as f32])?;
    let b = t
        .f_square()?
        .f_mul_scalar(0.5)?
        .f_mul_scalar(sde.beta_1 - sde.beta_0)?
        .f_add(&t.f_mul_scalar(sde.beta_0)?)?;
    let a = b
        .f_neg()?
        .f_exp()?
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_log()?
        .f_add(&b)?;
    Ok(a.f_double_value(&[0])?)
}

/// `t = (−β₀ + sqrt(β₀² + 2(β₁−β₀)·ln(1 + exp(Z·u + A(t_min)))))/(β₁−β₀)` on the tensor `u`,
/// element-wise in f32 with `A(t_min)` and `Z = A(1) − A(t_min)` computed in f32 as the
/// official `get_diffusion_time` does.
pub fn importance_time(u: &Tensor) -> Result<Tensor> {
    let sde = VpSde::default();
    let (b0, b1) = (sde.beta_0, sde.beta_1);
    let a = antiderivative_f32(T_MIN)?;
    let z = ((antiderivative_f32(sde.t_end)? as f32) - (a as f32)) as f64;
    Ok(u.f_mul_scalar(z)?
        .f_add_scalar(a)?
        .f_exp()?
        .f_add_scalar(1.0)?
        .f_log()?
        .f_mul_scalar(2.0 * (b1 - b0))?
        .f_add_scalar(b0 * b0)?
        .f_sqrt()?
        .f_sub_scalar(b0)?
        .f_div_scalar(b1 - b0)?)
}

/// `(α(t), s(t))`: `lmc = −¼t²(β₁−β₀) − ½tβ₀`, `α = e^{lmc}`, `s = sqrt(1 − e^{2·lmc})`.
pub fn marginal_prob(t: &Tensor) -> Result<(Tensor, Tensor)> {
    let sde = VpSde::default();
    let (b0, b1) = (sde.beta_0, sde.beta_1);
    let lmc = t
        .f_square()?
        .f_mul_scalar(-0.25)?
        .f_mul_scalar(b1 - b0)?
        .f_sub(&t.f_mul_scalar(0.5)?.f_mul_scalar(b0)?)?;
    let mean = lmc.f_exp()?;
    let std = lmc
        .f_mul_scalar(2.0)?
        .f_exp()?
        .f_neg()?
        .f_add_scalar(1.0)?
        .f_sqrt()?;
    Ok((mean, std))
}

/// The forward pass and loss for images `x [2B, C, H, W]` in [−1, 1] and `labels [2B]`.
pub fn forward(nets: &DiscNets, x: &Tensor, labels: &Tensor, draws: &mut dyn Draws) -> Result<StepOutput> {
    forward_cond(nets, x, labels, None, draws)
}

/// [`forward`] of a class-conditional discriminator: `cond [2B, num_class]` one-hot class
/// rows, added to its time embedding through `label_emb` (DG's `train.py --cond 1`; the
/// extractor stays unconditional).
pub fn forward_cond(
    nets: &DiscNets,
    x: &Tensor,
    labels: &Tensor,
    cond: Option<&Tensor>,
    draws: &mut dyn Draws,
) -> Result<StepOutput> {
    let n = x.size()[0];
    ensure!(labels.size() == [n], "labels {:?} for {n} images", labels.size());
    let u = draws.rand(&[n])?.f_to_device(x.device())?;
    let t = importance_time(&u)?;
    let (mean, std) = marginal_prob(&t)?;
    let z = draws.randn(&x.size())?.f_to_device(x.device())?;
    let perturbed = mean
        .f_view([-1, 1, 1, 1])?
        .f_mul(x)?
        .f_add(&std.f_view([-1, 1, 1, 1])?.f_mul(&z)?)?;
    let tt = TchTensor(t.shallow_clone());
    let features = {
        let _g = tch::no_grad_guard();
        nets.extractor
            .forward(&nets.ops, &TchTensor(perturbed.shallow_clone()), &tt, None, false)?
            .features
            .0
    };
    // the discriminator is being trained: its attention composed as the official code does
    // (see `TchOps::fused_attention`)
    let train_ops = nets.ops.with_fused_attention(false);
    let c = cond.map(|c| TchTensor(c.shallow_clone()));
    let logits = nets
        .disc
        .forward(
            &train_ops,
            &TchTensor(features.shallow_clone()),
            &tt,
            c.as_ref(),
            true,
        )?
        .logits
        .expect("the discriminator head was requested");
    let prediction = logits.0.f_sigmoid()?.f_view([-1])?;
    let loss = prediction.f_binary_cross_entropy::<Tensor>(labels, None, Reduction::Mean)?;
    Ok(StepOutput {
        t,
        perturbed,
        features,
        prediction,
        loss,
    })
}

/// Zeroes the gradients, evaluates [`forward`], back-propagates the loss and takes one Adam
/// step at `lr` on `params` (the discriminator's, in state_dict order).
pub fn train_step(
    nets: &DiscNets,
    params: &[Tensor],
    adam: &mut Adam,
    lr: f64,
    x: &Tensor,
    labels: &Tensor,
    draws: &mut dyn Draws,
) -> Result<StepOutput> {
    zero_grads(params)?;
    let out = forward(nets, x, labels, draws)?;
    out.loss.backward();
    adam.step(params, lr)?;
    Ok(out)
}

/// What a data-parallel step reports, summed over its rounds and all ranks.
pub struct StepTotals {
    /// Mean BCE over the whole step's rows.
    pub loss: f64,
    /// Correct predictions.
    pub correct: i64,
    /// Predictions.
    pub seen: i64,
}

/// One step as rank `split.rank` of `comm`: `x`/`labels` hold the whole step's rows (the same
/// on every rank); the rank evaluates its rows (`split`'s positions) in rounds of
/// `split.batch_gpu`, each round's mean BCE scaled by its share of the step, draws keyed by
/// position and seeded by `seed`; the gradients are summed over ranks before Adam — the
/// gradient of the step's mean BCE. One rank with one round is exactly [`train_step`] after
/// `manual_seed(seed)`. `cond`: the rows' one-hot classes for a conditional discriminator.
#[allow(clippy::too_many_arguments)]
pub fn train_step_on(
    nets: &DiscNets,
    params: &[Tensor],
    adam: &mut Adam,
    lr: f64,
    x: &Tensor,
    labels: &Tensor,
    cond: Option<&Tensor>,
    split: StepSplit,
    seed: i64,
    comm: &dyn Collective,
) -> Result<StepTotals> {
    zero_grads(params)?;
    let whole = split.rounds() == 1 && split.world == 1;
    let share = split.batch_gpu as f64 / split.batch as f64;
    let (mut loss, mut hits, mut seen) = (0.0, 0i64, 0i64);
    for round in 0..split.rounds() {
        let rows = Tensor::f_from_slice(&split.positions(round))?.f_to_device(x.device())?;
        let (xr, lr_, cr) = if whole {
            (
                x.shallow_clone(),
                labels.shallow_clone(),
                cond.map(|c| c.shallow_clone()),
            )
        } else {
            (
                x.f_index_select(0, &rows)?,
                labels.f_index_select(0, &rows)?,
                cond.map(|c| c.f_index_select(0, &rows)).transpose()?,
            )
        };
        let mut draws = PositionDraws::start_round(x.device(), split, round, seed)?;
        let out = forward_cond(nets, &xr, &lr_, cr.as_ref(), &mut draws)?;
        if whole {
            out.loss.backward();
        } else {
            out.loss.f_mul_scalar(share)?.backward();
        }
        loss += out.loss.f_to_kind(Kind::Double)?.double_value(&[]) * share;
        hits += correct(&out.prediction, &lr_)?;
        seen += lr_.size()[0];
    }
    sum_gradients(comm, params, None)?;
    adam.step(params, lr)?;
    if comm.world_size() == 1 {
        return Ok(StepTotals {
            loss,
            correct: hits,
            seen,
        });
    }
    let all = comm.gather_f64(&[loss, hits as f64, seen as f64])?;
    let sum = |k: usize| all.iter().map(|v| v.get(k).copied().unwrap_or(0.0)).sum::<f64>();
    Ok(StepTotals {
        loss: sum(0),
        correct: sum(1) as i64,
        seen: sum(2) as i64,
    })
}

/// Accuracy count: `(p > 0.5) == (label > 0.5)` summed.
pub fn correct(prediction: &Tensor, labels: &Tensor) -> Result<i64> {
    let hit = prediction.f_gt(0.5)?.f_eq_tensor(&labels.f_gt(0.5)?)?;
    Ok(hit.f_sum(Kind::Int64)?.int64_value(&[]))
}
