//! Discriminator guidance (DG; Kim et al., ICML 2023) — the EDM-G++ sampler.
//!
//! A time-dependent discriminator `d(x_vp, τ) ∈ (0, 1)`, trained to tell real data (1) from
//! samples of the score model (0), estimates the density ratio `p_data/p_model ≈ d/(1−d)`.
//! Its log-gradient corrects the model's score: with `D` the denoiser and `σ` the EDM noise
//! level, the probability-flow derivative `dx/dσ = (x − D(x; σ))/σ` becomes
//!
//! `dx/dσ = (x − D(x; σ))/σ + w · g(x, σ)/σ`,  `g(x, σ) = −σ²·α(τ)·∇_{x_vp} log(d/(1−d))`,
//!
//! where `τ(σ) = (−β₀ + √(β₀² + 2(β₁−β₀)·ln(1+σ²)))/(β₁−β₀)` is the VP time with the same
//! signal-to-noise ratio (β₀ = 0.1, β₁ = 20), `α(τ) = exp(−¼τ²(β₁−β₀) − ½τβ₀)` its signal
//! scale and `x_vp = α·x` the VP-space input (`−σ²·∇log r` is `σ²` times the score
//! correction, divided by `σ` in the derivative as above).
//!
//! [`dg_sample`] is EDM's Heun sampler with these terms, exactly as DG's sampler computes them
//! (see `tests/fixtures/README.md` §10 for its pseudo code and quirks):
//!
//! * 1st order (weight `w₁`): `g` at `(x̂_i, t̂_i)` is added to the Euler derivative `d_i`; in a
//!   Heun step it therefore enters the average `½d_i + ½d'_i` with half weight.
//! * 2nd order (weight `w₂`): `g` at `(x_{i+1}, t_{i+1})` is added to the correction
//!   derivative `d'_i`. DG's published code cannot run this path (it passes a scalar `t_{i+1}`
//!   where a per-sample σ is indexed); here `t_{i+1}` is repeated per sample, which is what
//!   the fixture's `second` variant records.
//! * Time window: guidance (both orders) is applied only when the batch minimum of `τ` lies in
//!   `[time_min, time_max]`; otherwise the term is zero and the step's log ratio is 1e7.
//! * Boosting: at steps with `i % 5 == 0`, samples whose previous log ratio is negative get
//!   churn `γ = min(4/N, √2−1)` with `S_noise = 1` (per-sample `t̂`); at even steps the
//!   1st-order guidance of samples whose current log ratio is negative is doubled.
//!
//! The denoiser runs on any runtime ([`Denoiser`]); the gradient runs on libtorch with
//! autograd (on the device the discriminator was loaded on).

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};
use tiw_models::adm::EncoderUNet;
use tiw_models::guidance::{Discriminator, CLIP};
use tiw_models::tch_ops::TchOps;
use tiw_models::vpsde::VpSde;

use super::denoiser::Denoiser;
use super::sampler::{edm_t_steps, effective_range, SamplerSettings};
use crate::device::{self, DeviceSpec};

/// Boosting period: churn is switched on at steps `i` with `i % BOOST_PERIOD == 0`.
pub const BOOST_PERIOD: usize = 5;
/// Boosting: the 1st-order guidance is doubled at steps with `i % BOOST_DOUBLE_PERIOD == 0`.
pub const BOOST_DOUBLE_PERIOD: usize = 2;
/// Boosting: the factor applied to the guidance of samples with a negative log ratio.
pub const BOOST_WEIGHT: f32 = 2.0;
/// Boosting: the churn `S_churn` of boosted samples (`γ = min(S_churn/N, √2−1)`).
pub const BOOST_CHURN: f64 = 4.0;
/// Boosting: the churn noise scale `S_noise` of boosted samples.
pub const BOOST_NOISE: f64 = 1.0;
/// Log ratio reported where the time window switches guidance off (as DG does).
pub const OUT_OF_RANGE_LOG_RATIO: f32 = 1e7;

/// DG settings (defaults as DG's `generate.py`: `w₁ = 2`, `w₂ = 0`, `τ ∈ [0.01, 1]`, no
/// boosting).
#[derive(Debug, Clone, Copy)]
pub struct DgSettings {
    /// Weight `w₁` of the 1st-order term (added to the Euler derivative).
    pub w1: f64,
    /// Weight `w₂` of the 2nd-order term (added to the Heun correction derivative).
    pub w2: f64,
    /// Smallest VP time `τ` (batch minimum) at which guidance applies.
    pub time_min: f64,
    /// Largest VP time `τ` (batch minimum) at which guidance applies.
    pub time_max: f64,
    /// DG's boosting (per-sample churn and doubled guidance where `log r < 0`).
    pub boosting: bool,
}

impl Default for DgSettings {
    fn default() -> Self {
        DgSettings {
            w1: 2.0,
            w2: 0.0,
            time_min: 0.01,
            time_max: 1.0,
            boosting: false,
        }
    }
}

impl DgSettings {
    /// Rejects non-finite weights and empty or inverted time windows.
    pub fn validate(&self) -> Result<()> {
        if !self.w1.is_finite() || !self.w2.is_finite() {
            bail!("DG weights must be finite (got {} and {})", self.w1, self.w2);
        }
        if !(self.time_min.is_finite() && self.time_max.is_finite()) || self.time_min > self.time_max {
            bail!(
                "DG time window [{}, {}] must be finite with time-min <= time-max",
                self.time_min,
                self.time_max
            );
        }
        Ok(())
    }
}

/// The guidance network pair (frozen ADM feature extractor and time-dependent
/// discriminator) on one libtorch device.
pub struct DgGuide {
    ops: TchOps,
    extractor: EncoderUNet<TchOps>,
    discriminator: EncoderUNet<TchOps>,
    /// DG's `img_resolution` argument: 64 switches the discriminator's time to the cosine
    /// schedule (the ADM-64 extractor); anything else uses linear VP time.
    pub img_resolution: usize,
}

/// One evaluation of the guidance term.
#[derive(Debug, Clone)]
pub struct Guidance {
    /// `g = −σ²·α·∇_{x_vp} Σ log(d/(1−d))` in f32 (zeros when out of the time window).
    pub grad: Vec<f32>,
    /// `log(d/(1−d))` per sample, `d` clipped to `[1e-5, 1−1e-5]` (1e7 out of range).
    pub log_ratio: Vec<f32>,
    /// Whether the time window let guidance through.
    pub guided: bool,
}

impl DgGuide {
    /// Loads the feature extractor and discriminator checkpoints (`.pt`, `.safetensors`) on
    /// `device`. `img_resolution` is the sampled network's resolution (as DG passes it).
    pub fn load(
        extractor: &Path,
        discriminator: &Path,
        device: DeviceSpec,
        img_resolution: usize,
    ) -> Result<Self> {
        let dev = device::select(device)?;
        let ops = TchOps::new(dev);
        let fe = tiw_models::load::encoder(&ops, extractor, None)
            .with_context(|| format!("cannot load the feature extractor {}", extractor.display()))?;
        let dis = tiw_models::load::encoder(&ops, discriminator, None)
            .with_context(|| format!("cannot load the discriminator {}", discriminator.display()))?;
        if dis.cfg.out_channels != 1 {
            bail!(
                "{}: a discriminator has 1 output; this network has {} (is it a feature extractor?)",
                discriminator.display(),
                dis.cfg.out_channels
            );
        }
        Ok(DgGuide {
            ops,
            extractor: fe,
            discriminator: dis,
            img_resolution,
        })
    }

    /// Builds the pair from networks already loaded on `ops`' device.
    pub fn from_parts(
        ops: TchOps,
        extractor: EncoderUNet<TchOps>,
        discriminator: EncoderUNet<TchOps>,
        img_resolution: usize,
    ) -> Self {
        DgGuide {
            ops,
            extractor,
            discriminator,
            img_resolution,
        }
    }

    /// The (extractor, discriminator) configurations (the memory guard's estimate).
    pub fn configs(&self) -> (&tiw_models::adm::EncoderConfig, &tiw_models::adm::EncoderConfig) {
        (&self.extractor.cfg, &self.discriminator.cfg)
    }

    /// Classes of a conditional discriminator (None = unconditional).
    pub fn num_class(&self) -> Option<usize> {
        self.discriminator.cfg.num_class
    }

    /// Checks that images `[C, R, R]` and `label_dim` one-hot labels fit the pair.
    pub fn check_fits(&self, channels: usize, resolution: usize, label_dim: usize, cond: bool) -> Result<()> {
        let fe = &self.extractor.cfg;
        if fe.in_channels != channels || fe.image_size != resolution {
            bail!(
                "the feature extractor takes {}x{}x{} images; the network makes {}x{}x{}",
                fe.image_size,
                fe.image_size,
                fe.in_channels,
                resolution,
                resolution,
                channels
            );
        }
        let feat_ch = fe.model_channels * fe.channel_mult.last().copied().unwrap_or(1);
        if self.discriminator.cfg.in_channels != feat_ch {
            bail!(
                "the discriminator takes {} feature channels; the feature extractor yields {}",
                self.discriminator.cfg.in_channels,
                feat_ch
            );
        }
        match (cond, self.num_class()) {
            (true, Some(k)) if k == label_dim => Ok(()),
            (true, Some(k)) => bail!("the discriminator has {k} classes; the network has {label_dim}"),
            (true, None) => bail!("--cond: the discriminator is unconditional"),
            (false, Some(k)) => {
                bail!("the discriminator is class-conditional ({k} classes): pass --cond with a conditional network")
            }
            (false, None) => Ok(()),
        }
    }

    /// DG's `get_grad_log_ratio` for `n` images `x` (f64, VE space) at per-sample σ `std`:
    /// `(α, τ) = (α(τ(σ)), τ(σ))` in f64; out of the window (batch-min τ outside
    /// `[time_min, time_max]`) zeros and log ratio 1e7; else `x_vp = f32(α·x)`,
    /// `ℓ = log(p/(1−p))`, `p = clip(d(x_vp, τ), 1e-5, 1−1e-5)`, and `g = −σ²α·∇_{x_vp} Σℓ`
    /// (f32). `condition`: one-hot labels `[n, classes]` for a conditional discriminator.
    pub fn grad_log_ratio(
        &self,
        x: &[f64],
        n: usize,
        std: &[f64],
        time_min: f64,
        time_max: f64,
        condition: Option<&[f32]>,
    ) -> Result<Guidance> {
        if n == 0 || std.len() != n || x.len() % n != 0 {
            bail!(
                "guidance: {} values for {n} samples with {} noise levels",
                x.len(),
                std.len()
            );
        }
        let per = x.len() / n;
        let sde = VpSde::default();
        let vp: Vec<(f64, f64)> = std
            .iter()
            .map(|&s| {
                let (mean, tau, _) = sde.wve_to_vp(s);
                (mean, tau)
            })
            .collect();
        let tau_min = vp.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        if tau_min > time_max || tau_min < time_min || tau_min.is_nan() {
            return Ok(Guidance {
                grad: vec![0.0; x.len()],
                log_ratio: vec![OUT_OF_RANGE_LOG_RATIO; n],
                guided: false,
            });
        }
        let fe = &self.extractor.cfg;
        let (c, r) = (fe.in_channels, fe.image_size);
        if per != c * r * r {
            bail!("guidance: images of {per} values; the feature extractor takes {c}x{r}x{r}");
        }
        let dev = self.ops.device;
        let x_vp: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(k, &v)| (vp[k / per].0 * v) as f32)
            .collect();
        let t: Vec<f32> = vp
            .iter()
            .map(|&(_, tau)| {
                let t = if self.img_resolution == 64 {
                    sde.t_cos_from_t_lin(tau)
                } else {
                    tau
                };
                time_input(t)
            })
            .collect();
        let xt = Tensor::f_from_slice(&x_vp)?
            .f_reshape([n as i64, c as i64, r as i64, r as i64])?
            .f_to_device(dev)?
            .f_set_requires_grad(true)?;
        let tt = Tensor::f_from_slice(&t)?.f_to_device(dev)?;
        let cond = match condition {
            Some(l) => {
                let k = self
                    .num_class()
                    .context("labels given to an unconditional discriminator")?;
                if l.len() != n * k {
                    bail!(
                        "guidance: {} label values for {n} samples of {k} classes",
                        l.len()
                    );
                }
                Some(
                    Tensor::f_from_slice(l)?
                        .f_reshape([n as i64, k as i64])?
                        .f_to_device(dev)?,
                )
            }
            None => None,
        };
        let disc = Discriminator {
            ops: self.ops,
            extractor: &self.extractor,
            discriminator: &self.discriminator,
        };
        let lr = tch::with_grad(|| -> Result<Tensor> {
            let p = disc.predict(&xt, &tt, cond.as_ref())?.f_clamp(CLIP, 1.0 - CLIP)?;
            Ok(p.f_div(&p.f_neg()?.f_add_scalar(1.0)?)?.f_log()?)
        })?;
        let g = Tensor::f_run_backward(&[lr.f_sum(Kind::Float)?], &[&xt], false, false)?.remove(0);
        let g = Vec::<f32>::try_from(&g.f_to_device(tch::Device::Cpu)?.f_contiguous()?.f_view([-1])?)?;
        let log_ratio = Vec::<f32>::try_from(&lr.f_detach()?.f_to_device(tch::Device::Cpu)?.f_contiguous()?)?;
        let grad = g
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let (s, mean) = (std[k / per], vp[k / per].0);
                (v as f64 * -(s * s * mean)) as f32
            })
            .collect();
        Ok(Guidance {
            grad,
            log_ratio,
            guided: true,
        })
    }
}

/// The f32 time `t′` to feed the networks for an f64 time `t`. They compute their timestep
/// embedding from `999·t′` in f32, while DG feeds an f64 `t` whose `999·t` is rounded to f32
/// only afterwards; the nearest f32 `t′` with `f32(999·t′) = f32(999·t)` (there is almost
/// always one within a few ulps) makes the embeddings identical.
pub fn time_input(t: f64) -> f32 {
    let want = (999.0 * t) as f32;
    let t0 = t as f32;
    if 999f32 * t0 == want {
        return t0;
    }
    let mut lo = t0;
    let mut hi = t0;
    for _ in 0..16 {
        lo = f32::from_bits(lo.to_bits().wrapping_sub(1));
        hi = f32::from_bits(hi.to_bits().wrapping_add(1));
        for c in [lo, hi] {
            if c.is_finite() && 999f32 * c == want {
                return c;
            }
        }
    }
    t0
}

/// Per-step record of a DG run (for parity tests and diagnostics). Index `[i][b]` = step
/// `i`, sample `b`.
#[derive(Debug, Clone, Default)]
pub struct DgTrace {
    /// σ of the Euler-step network call per sample.
    pub t_hat: Vec<Vec<f64>>,
    /// x̂ of each step (state after churn), `[n·C·R·R]`.
    pub x_hat: Vec<Vec<f64>>,
    /// 1st-order guidance as computed (before boosting's doubling and `× w₁/t̂`).
    pub guidance: Vec<Vec<f32>>,
    /// 1st-order log ratio (1e7 out of the window); empty where `w₁ = 0`.
    pub log_ratio: Vec<Vec<f32>>,
    /// Whether the 1st-order term was inside the time window.
    pub guided: Vec<bool>,
    /// Whether the 2nd-order term was inside the time window (steps `0..N−1`, `w₂ ≠ 0`).
    pub guided_2nd: Vec<bool>,
    /// Churn switched on by boosting (`t̂ > t_i`).
    pub boosted: Vec<Vec<bool>>,
    /// Guidance doubled by boosting.
    pub doubled: Vec<Vec<bool>>,
}

/// Everything a DG step needs besides the state.
pub struct DgContext<'a> {
    /// Guidance networks (None only when both weights are 0).
    pub guide: Option<&'a DgGuide>,
    /// Batch size.
    pub n: usize,
    /// The network's one-hot labels `[n, L]` (conditional nets).
    pub labels: Option<&'a [f32]>,
    /// Labels fed to a conditional discriminator (`--cond`).
    pub condition: Option<&'a [f32]>,
    /// EDM sampler settings (steps, churn).
    pub settings: &'a SamplerSettings,
    /// DG settings.
    pub dg: &'a DgSettings,
    /// The σ grid `t_0 > … > t_{N−1} > t_N = 0`.
    pub t_steps: Vec<f64>,
}

impl<'a> DgContext<'a> {
    /// Validates the combination and computes the σ grid for `den`'s network.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        den: &dyn Denoiser,
        guide: Option<&'a DgGuide>,
        n: usize,
        labels: Option<&'a [f32]>,
        cond: bool,
        settings: &'a SamplerSettings,
        dg: &'a DgSettings,
    ) -> Result<Self> {
        dg.validate()?;
        if settings.ablation.is_some() {
            bail!("discriminator guidance uses the EDM sampler; the ablation options cannot be combined with it");
        }
        if settings.num_steps == 0 || n == 0 {
            bail!("DG sampling needs at least one step and one image");
        }
        let info = den.info().clone();
        match guide {
            Some(g) => g.check_fits(info.channels, info.resolution, info.label_dim, cond)?,
            None if dg.w1 != 0.0 || dg.w2 != 0.0 => bail!("discriminator guidance needs a discriminator"),
            None => {}
        }
        let condition = if cond {
            Some(labels.context("--cond: the network has no class labels")?)
        } else {
            None
        };
        let (smin, smax) = effective_range(
            &info,
            settings.sigma_min.unwrap_or(0.002),
            settings.sigma_max.unwrap_or(80.0),
        );
        let t_steps = edm_t_steps(&info, settings.num_steps, smin, smax, settings.rho);
        Ok(DgContext {
            guide,
            n,
            labels,
            condition,
            settings,
            dg,
            t_steps,
        })
    }
}

/// One step `i` of the EDM-G++ sampler from state `x` (module docs): churn (with boosting
/// from the previous step's `log_ratio`, +∞ initially), the Euler derivative with 1st-order
/// guidance, and — except on the last step — the Heun correction with 2nd-order guidance.
/// `eps` are step i's draws; `log_ratio` is updated where `w₁ ≠ 0`. Returns `x_{i+1}`.
pub fn dg_step(
    den: &mut dyn Denoiser,
    ctx: &DgContext<'_>,
    i: usize,
    x: &[f64],
    eps: &[f64],
    log_ratio: &mut [f32],
    mut trace: Option<&mut DgTrace>,
) -> Result<Vec<f64>> {
    let (n, s, dg, t) = (ctx.n, ctx.settings, ctx.dg, &ctx.t_steps);
    let info = den.info().clone();
    let per = info.channels * info.resolution * info.resolution;
    let steps = s.num_steps;
    if i >= steps || x.len() != n * per || eps.len() != x.len() || log_ratio.len() != n {
        bail!(
            "DG step {i}/{steps}: state of {} values, {} noise values, {} log ratios for {n} images of {per}",
            x.len(),
            eps.len(),
            log_ratio.len()
        );
    }
    let (t_cur, t_next) = (t[i], t[i + 1]);
    let mut churn = vec![s.s_churn; n];
    let mut s_noise = vec![s.s_noise; n];
    if dg.boosting && i % BOOST_PERIOD == 0 {
        for b in 0..n {
            if log_ratio[b] < 0.0 {
                churn[b] = BOOST_CHURN;
                s_noise[b] = BOOST_NOISE;
            }
        }
    }
    let in_churn = s.s_min <= t_cur && t_cur <= s.s_max;
    let max_gamma = 2f64.sqrt() - 1.0;
    let t_hat: Vec<f64> = churn
        .iter()
        .map(|&c| {
            let gamma = if in_churn {
                (c / steps as f64).min(max_gamma)
            } else {
                0.0
            };
            info.round_sigma(t_cur + gamma * t_cur)
        })
        .collect();
    let x_hat: Vec<f64> = x
        .iter()
        .zip(eps)
        .enumerate()
        .map(|(k, (&xv, &e))| {
            let b = k / per;
            xv + (t_hat[b] * t_hat[b] - t_cur * t_cur).sqrt() * s_noise[b] * e
        })
        .collect();
    let den0 = den.denoise_each(&x_hat, n, &t_hat, ctx.labels)?;
    let mut d_cur: Vec<f64> = x_hat
        .iter()
        .zip(&den0)
        .enumerate()
        .map(|(k, (&xh, &dv))| (xh - dv) / t_hat[k / per])
        .collect();
    let mut doubled = vec![false; n];
    if dg.w1 != 0.0 {
        let g = ctx.guide.context("no discriminator")?;
        let mut gl = g.grad_log_ratio(&x_hat, n, &t_hat, dg.time_min, dg.time_max, ctx.condition)?;
        if let Some(tr) = trace.as_deref_mut() {
            tr.guidance.push(gl.grad.clone());
            tr.log_ratio.push(gl.log_ratio.clone());
            tr.guided.push(gl.guided);
        }
        if dg.boosting && i % BOOST_DOUBLE_PERIOD == 0 {
            for ((db, &lr), g) in doubled.iter_mut().zip(&gl.log_ratio).zip(gl.grad.chunks_mut(per)) {
                if lr < 0.0 {
                    *db = true;
                    g.iter_mut().for_each(|v| *v *= BOOST_WEIGHT);
                }
            }
        }
        for (k, d) in d_cur.iter_mut().enumerate() {
            *d += dg.w1 * gl.grad[k] as f64 / t_hat[k / per];
        }
        log_ratio.copy_from_slice(&gl.log_ratio);
    }
    if let Some(tr) = trace.as_deref_mut() {
        tr.boosted.push(t_hat.iter().map(|&th| th > t_cur).collect());
        tr.t_hat.push(t_hat.clone());
        tr.x_hat.push(x_hat.clone());
        tr.doubled.push(doubled);
    }
    let mut x_next: Vec<f64> = x_hat
        .iter()
        .zip(&d_cur)
        .enumerate()
        .map(|(k, (&xh, &d))| xh + (t_next - t_hat[k / per]) * d)
        .collect();
    if i < steps - 1 {
        let den1 = den.denoise(&x_next, n, t_next, ctx.labels)?;
        let mut d_prime: Vec<f64> = x_next
            .iter()
            .zip(&den1)
            .map(|(&xn, &dn)| (xn - dn) / t_next)
            .collect();
        if dg.w2 != 0.0 {
            let g = ctx.guide.context("no discriminator")?;
            let g2 = g.grad_log_ratio(
                &x_next,
                n,
                &vec![t_next; n],
                dg.time_min,
                dg.time_max,
                ctx.condition,
            )?;
            if let Some(tr) = trace {
                tr.guided_2nd.push(g2.guided);
            }
            for (d, &gv) in d_prime.iter_mut().zip(&g2.grad) {
                *d += dg.w2 * gv as f64 / t_next;
            }
        }
        x_next = x_hat
            .iter()
            .zip(d_cur.iter().zip(&d_prime))
            .enumerate()
            .map(|(k, (&xh, (&d, &dp)))| xh + (t_next - t_hat[k / per]) * (0.5 * d + 0.5 * dp))
            .collect();
    }
    Ok(x_next)
}

/// The EDM-G++ sampler (module docs): `x_0 = latents · t_0`, then [`dg_step`] for
/// `i = 0..N`. `latents` are the f32 draws `[n, C, R, R]`; `noise(i)` returns step i's f64
/// draws (called every step, as `randn_like` is); `labels` are the network's one-hot labels,
/// also fed to a conditional discriminator when `cond`. `guide` may be None only when both
/// weights are 0 (EDM's sampler with DG's per-sample Euler σ). Returns the final state.
#[allow(clippy::too_many_arguments)]
pub fn dg_sample(
    den: &mut dyn Denoiser,
    guide: Option<&DgGuide>,
    latents: &[f32],
    n: usize,
    labels: Option<&[f32]>,
    cond: bool,
    s: &SamplerSettings,
    dg: &DgSettings,
    noise: &mut dyn FnMut(usize) -> Result<Vec<f64>>,
    mut trace: Option<&mut DgTrace>,
) -> Result<Vec<f64>> {
    let ctx = DgContext::new(den, guide, n, labels, cond, s, dg)?;
    let info = den.info();
    let per = info.channels * info.resolution * info.resolution;
    if latents.len() != n * per {
        bail!(
            "dg_sample: {} latent values for {n} samples of {per}",
            latents.len()
        );
    }
    let mut x: Vec<f64> = latents.iter().map(|&v| v as f64 * ctx.t_steps[0]).collect();
    let mut log_ratio = vec![f32::INFINITY; n];
    for i in 0..s.num_steps {
        let eps = noise(i)?;
        x = dg_step(den, &ctx, i, &x, &eps, &mut log_ratio, trace.as_deref_mut())?;
    }
    Ok(x)
}

/// [`generate_images`](super::generate_images) with discriminator guidance: the same per-seed
/// latents (libtorch CPU generators), `steps` noise levels, no churn except boosting's (whose
/// noise comes from per-seed draws as in `tiw generate`); uint8 images N×H×W×C in seed order.
pub fn generate_images_dg(
    den: &mut dyn Denoiser,
    guide: &DgGuide,
    dg: &DgSettings,
    seeds: &[u64],
    batch: usize,
    steps: usize,
    on_batch: impl FnMut(usize),
) -> Result<Vec<u8>> {
    let settings = SamplerSettings {
        num_steps: steps,
        ..Default::default()
    };
    let noise_steps = if dg.boosting { steps } else { 0 };
    super::images_in_batches(
        den,
        seeds,
        batch,
        noise_steps,
        on_batch,
        |den, drawn, n, step_noise| {
            let labels = drawn.labels.as_deref();
            dg_sample(
                den,
                Some(guide),
                &drawn.latents,
                n,
                labels,
                false,
                &settings,
                dg,
                step_noise,
                None,
            )
        },
    )
}
