//! The EDM samplers (SPEC §6), with f64 state and f32 network calls.
//!
//! * [`edm_sample`]: Heun's 2nd-order method on `σ_i = (σmax^{1/ρ} + i/(N−1)(σmin^{1/ρ} −
//!   σmax^{1/ρ}))^ρ`, `σ_N = 0`, with optional stochastic churn `γ = min(S_churn/N, √2−1)` on
//!   `S_min ≤ σ ≤ S_max`; Euler on the last step.
//! * [`ablation_sample`]: the generalised sampler of EDM's ablations — discretisation vp |
//!   ve | iddpm | edm, schedule σ(t) vp | ve | linear, scaling s(t) vp | none, solver euler |
//!   heun — integrating `dx/dt = (σ'/σ + s'/s)·x − σ'·s/σ·D(x/s; σ)`.
//!
//! Noise for step i comes from a callback (per-seed generators, or recorded draws).

use anyhow::Result;

use super::denoiser::{Denoiser, NetInfo};

/// Settings shared by both samplers (official defaults via [`Default`]).
#[derive(Debug, Clone)]
pub struct SamplerSettings {
    /// Number of noise levels N.
    pub num_steps: usize,
    /// Lowest σ (None = sampler default).
    pub sigma_min: Option<f64>,
    /// Highest σ (None = sampler default).
    pub sigma_max: Option<f64>,
    /// ρ of the EDM discretisation.
    pub rho: f64,
    /// Churn amount.
    pub s_churn: f64,
    /// Churn range start.
    pub s_min: f64,
    /// Churn range end.
    pub s_max: f64,
    /// Churn noise scale.
    pub s_noise: f64,
    /// Ablation options (any set → the ablation sampler).
    pub ablation: Option<Ablation>,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            num_steps: 18,
            sigma_min: None,
            sigma_max: None,
            rho: 7.0,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
            ablation: None,
        }
    }
}

/// ODE solver of the ablation sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Solver {
    /// 1st order.
    Euler,
    /// 2nd order (α = 1).
    Heun,
}

/// Time-step discretisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Disc {
    /// VP: t linear from 1 to ε_s.
    Vp,
    /// VE: σ² geometric.
    Ve,
    /// iDDPM σ table.
    Iddpm,
    /// EDM ρ-schedule.
    Edm,
}

/// Noise schedule σ(t).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// VP.
    Vp,
    /// VE (√t).
    Ve,
    /// σ(t) = t.
    Linear,
}

/// Signal scaling s(t).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scaling {
    /// 1/√(1+σ²).
    Vp,
    /// 1.
    None,
}

/// Ablation sampler options (each defaults as in EDM: heun, edm, linear, none).
#[derive(Debug, Clone, Copy)]
pub struct Ablation {
    /// Solver.
    pub solver: Solver,
    /// Discretisation.
    pub disc: Disc,
    /// Schedule.
    pub schedule: Schedule,
    /// Scaling.
    pub scaling: Scaling,
}

/// The EDM σ grid: N values, each passed through `round_sigma`, then 0.
pub fn edm_t_steps(info: &NetInfo, n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (a, b) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    let mut t: Vec<f64> = (0..n)
        .map(|i| {
            let frac = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
            info.round_sigma((a + frac * (b - a)).powf(rho))
        })
        .collect();
    t.push(0.0);
    t
}

/// The σ range after clamping to the network's: `(max(σmin, net.σmin), min(σmax, net.σmax))`.
pub fn effective_range(info: &NetInfo, sigma_min: f64, sigma_max: f64) -> (f64, f64) {
    (sigma_min.max(info.sigma_min()), sigma_max.min(info.sigma_max()))
}

fn call(
    den: &mut dyn Denoiser,
    x: &[f64],
    n: usize,
    sigma: f64,
    labels: Option<&[f32]>,
    calls: &mut Vec<f64>,
) -> Result<Vec<f64>> {
    calls.push(sigma);
    den.denoise(x, n, sigma, labels)
}

/// EDM's deterministic/stochastic Heun sampler. `latents` are the f32 per-seed draws;
/// `noise(i)` returns step i's draws (f64, same layout) — it is always called, like
/// `randn_like` in the official loop. Returns the final state and the σ of every call.
pub fn edm_sample(
    den: &mut dyn Denoiser,
    latents: &[f32],
    n: usize,
    labels: Option<&[f32]>,
    s: &SamplerSettings,
    noise: &mut dyn FnMut(usize) -> Result<Vec<f64>>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let info = den.info().clone();
    let (smin, smax) = effective_range(&info, s.sigma_min.unwrap_or(0.002), s.sigma_max.unwrap_or(80.0));
    let t = edm_t_steps(&info, s.num_steps, smin, smax, s.rho);
    let mut calls = Vec::new();
    let mut x: Vec<f64> = latents.iter().map(|&v| v as f64 * t[0]).collect();
    let churn = (s.s_churn / s.num_steps as f64).min(2f64.sqrt() - 1.0);
    for i in 0..s.num_steps {
        let (t_cur, t_next) = (t[i], t[i + 1]);
        let gamma = if s.s_min <= t_cur && t_cur <= s.s_max {
            churn
        } else {
            0.0
        };
        let t_hat = info.round_sigma(t_cur + gamma * t_cur);
        let eps = noise(i)?;
        let k = (t_hat * t_hat - t_cur * t_cur).sqrt() * s.s_noise;
        let x_hat: Vec<f64> = x.iter().zip(&eps).map(|(&xv, &e)| xv + k * e).collect();
        let den0 = call(den, &x_hat, n, t_hat, labels, &mut calls)?;
        let d_cur: Vec<f64> = x_hat
            .iter()
            .zip(&den0)
            .map(|(&xh, &dv)| (xh - dv) / t_hat)
            .collect();
        let h = t_next - t_hat;
        let mut x_next: Vec<f64> = x_hat.iter().zip(&d_cur).map(|(&xh, &d)| xh + h * d).collect();
        if i < s.num_steps - 1 {
            let den1 = call(den, &x_next, n, t_next, labels, &mut calls)?;
            x_next = x_hat
                .iter()
                .zip(&d_cur)
                .zip(x_next.iter().zip(&den1))
                .map(|((&xh, &d), (&xn, &dn))| {
                    let d_prime = (xn - dn) / t_next;
                    xh + h * (0.5 * d + 0.5 * d_prime)
                })
                .collect();
        }
        x = x_next;
    }
    Ok((x, calls))
}

fn vp_sigma(beta_d: f64, beta_min: f64, t: f64) -> f64 {
    ((0.5 * beta_d * (t * t) + beta_min * t).exp() - 1.0).sqrt()
}

/// The time parametrisation of the ablation sampler: σ(t), s(t), their derivatives and
/// σ⁻¹, with VP's β re-fitted so that σ(ε_s) = σmin and σ(1) = σmax.
struct AblationOde {
    schedule: Schedule,
    scaling: Scaling,
    beta_d: f64,
    beta_min: f64,
}

impl AblationOde {
    fn sigma(&self, t: f64) -> f64 {
        match self.schedule {
            Schedule::Vp => vp_sigma(self.beta_d, self.beta_min, t),
            Schedule::Ve => t.sqrt(),
            Schedule::Linear => t,
        }
    }
    fn sigma_deriv(&self, t: f64) -> f64 {
        match self.schedule {
            Schedule::Vp => {
                let sg = vp_sigma(self.beta_d, self.beta_min, t);
                0.5 * (self.beta_min + self.beta_d * t) * (sg + 1.0 / sg)
            }
            Schedule::Ve => 0.5 / t.sqrt(),
            Schedule::Linear => 1.0,
        }
    }
    fn sigma_inv(&self, sg: f64) -> f64 {
        let (beta_d, beta_min) = (self.beta_d, self.beta_min);
        match self.schedule {
            Schedule::Vp => {
                ((beta_min * beta_min + 2.0 * beta_d * (sg * sg + 1.0).ln()).sqrt() - beta_min) / beta_d
            }
            Schedule::Ve => sg * sg,
            Schedule::Linear => sg,
        }
    }
    fn sc(&self, t: f64) -> f64 {
        match self.scaling {
            Scaling::Vp => 1.0 / (1.0 + self.sigma(t).powi(2)).sqrt(),
            Scaling::None => 1.0,
        }
    }
    fn sc_deriv(&self, t: f64) -> f64 {
        match self.scaling {
            Scaling::Vp => -self.sigma(t) * self.sigma_deriv(t) * self.sc(t).powi(3),
            Scaling::None => 0.0,
        }
    }
    /// `dx/dt = (σ'/σ + s'/s)·x − σ'·s/σ·D`.
    fn deriv(&self, t: f64, x: &[f64], d: &[f64]) -> Vec<f64> {
        let (sg, sd, sc) = (self.sigma(t), self.sigma_deriv(t), self.sc(t));
        let (a, b) = (sd / sg + self.sc_deriv(t) / sc, sd * sc / sg);
        x.iter().zip(d).map(|(&x, &d)| a * x - b * d).collect()
    }
}

/// The ablation sampler's noise levels σ_0 … σ_{N−1} for discretisation `disc` on
/// `[smin, smax]` (VP: t linear from 1 to ε_s under the re-fitted β; VE: σ² geometric;
/// iDDPM: N entries of its σ table, index rounded half to even; EDM: the ρ-schedule).
fn ablation_sigma_steps(
    disc: Disc,
    ode: &AblationOde,
    smin: f64,
    smax: f64,
    nsteps: usize,
    rho: f64,
) -> Result<Vec<f64>> {
    let (eps_s, c1, c2, m) = (1e-3, 0.001, 0.008, 1000usize);
    let frac = |i: usize| {
        if nsteps > 1 {
            i as f64 / (nsteps - 1) as f64
        } else {
            0.0
        }
    };
    Ok(match disc {
        Disc::Vp => (0..nsteps)
            .map(|i| vp_sigma(ode.beta_d, ode.beta_min, 1.0 + frac(i) * (eps_s - 1.0)))
            .collect(),
        Disc::Ve => (0..nsteps)
            .map(|i| (smax * smax * ((smin * smin) / (smax * smax)).powf(frac(i))).sqrt())
            .collect(),
        Disc::Iddpm => {
            let mut u = vec![0f64; m + 1];
            let ab_ = |j: f64| {
                (0.5 * std::f64::consts::PI * j / m as f64 / (c2 + 1.0))
                    .sin()
                    .powi(2)
            };
            for j in (1..=m).rev() {
                u[j - 1] = ((u[j] * u[j] + 1.0) / (ab_(j as f64 - 1.0) / ab_(j as f64)).max(c1) - 1.0).sqrt();
            }
            let filtered: Vec<f64> = u.into_iter().filter(|&v| v >= smin && v <= smax).collect();
            anyhow::ensure!(
                !filtered.is_empty(),
                "no iDDPM noise level lies in [{smin}, {smax}]"
            );
            (0..nsteps)
                .map(|i| {
                    let k = ((filtered.len() - 1) as f64 / (nsteps - 1).max(1) as f64 * i as f64)
                        .round_ties_even() as usize;
                    filtered[k.min(filtered.len() - 1)]
                })
                .collect()
        }
        Disc::Edm => {
            let (a, b) = (smax.powf(1.0 / rho), smin.powf(1.0 / rho));
            (0..nsteps).map(|i| (a + frac(i) * (b - a)).powf(rho)).collect()
        }
    })
}

/// EDM's generalised (ablation) sampler; see the module docs.
pub fn ablation_sample(
    den: &mut dyn Denoiser,
    latents: &[f32],
    n: usize,
    labels: Option<&[f32]>,
    s: &SamplerSettings,
    noise: &mut dyn FnMut(usize) -> Result<Vec<f64>>,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let ab = s.ablation.expect("ablation options");
    let info = den.info().clone();
    let eps_s = 1e-3;
    let def_min = match ab.disc {
        Disc::Vp => vp_sigma(19.9, 0.1, eps_s),
        Disc::Ve => 0.02,
        Disc::Iddpm | Disc::Edm => 0.002,
    };
    let def_max = match ab.disc {
        Disc::Vp => vp_sigma(19.9, 0.1, 1.0),
        Disc::Ve => 100.0,
        Disc::Iddpm => 81.0,
        Disc::Edm => 80.0,
    };
    let (smin, smax) = effective_range(
        &info,
        s.sigma_min.unwrap_or(def_min),
        s.sigma_max.unwrap_or(def_max),
    );
    // VP parameters re-fitted so that σ(ε_s) = σmin and σ(1) = σmax.
    let beta_d = 2.0 * ((smin * smin + 1.0).ln() / eps_s - (smax * smax + 1.0).ln()) / (eps_s - 1.0);
    let beta_min = (smax * smax + 1.0).ln() - 0.5 * beta_d;
    let ode = AblationOde {
        schedule: ab.schedule,
        scaling: ab.scaling,
        beta_d,
        beta_min,
    };
    let nsteps = s.num_steps;
    let sigma_steps = ablation_sigma_steps(ab.disc, &ode, smin, smax, nsteps, s.rho)?;
    let mut t: Vec<f64> = sigma_steps
        .iter()
        .map(|&sg| ode.sigma_inv(info.round_sigma(sg)))
        .collect();
    t.push(0.0);
    let mut calls = Vec::new();
    let mut x: Vec<f64> = latents
        .iter()
        .map(|&v| v as f64 * (ode.sigma(t[0]) * ode.sc(t[0])))
        .collect();
    let churn = (s.s_churn / nsteps as f64).min(2f64.sqrt() - 1.0);
    for i in 0..nsteps {
        let (t_cur, t_next) = (t[i], t[i + 1]);
        let sigma_cur = ode.sigma(t_cur);
        let gamma = if s.s_min <= sigma_cur && sigma_cur <= s.s_max {
            churn
        } else {
            0.0
        };
        let t_hat = ode.sigma_inv(info.round_sigma(sigma_cur + gamma * sigma_cur));
        let eps = noise(i)?;
        let a = ode.sc(t_hat) / ode.sc(t_cur);
        let k = (ode.sigma(t_hat).powi(2) - sigma_cur.powi(2)).max(0.0).sqrt() * ode.sc(t_hat) * s.s_noise;
        let x_hat: Vec<f64> = x.iter().zip(&eps).map(|(&xv, &e)| a * xv + k * e).collect();
        let h = t_next - t_hat;
        let scaled: Vec<f64> = x_hat.iter().map(|v| v / ode.sc(t_hat)).collect();
        let d0 = call(den, &scaled, n, ode.sigma(t_hat), labels, &mut calls)?;
        let d_cur = ode.deriv(t_hat, &x_hat, &d0);
        let x_euler: Vec<f64> = x_hat.iter().zip(&d_cur).map(|(&xh, &d)| xh + h * d).collect();
        if ab.solver == Solver::Euler || i == nsteps - 1 {
            x = x_euler;
        } else {
            let t_prime = t_hat + h;
            let scaled: Vec<f64> = x_euler.iter().map(|v| v / ode.sc(t_prime)).collect();
            let d1 = call(den, &scaled, n, ode.sigma(t_prime), labels, &mut calls)?;
            let d_prime = ode.deriv(t_prime, &x_euler, &d1);
            x = x_hat
                .iter()
                .zip(d_cur.iter().zip(&d_prime))
                .map(|(&xh, (&d, &dp))| xh + h * (0.5 * d + 0.5 * dp))
                .collect();
        }
    }
    Ok((x, calls))
}

/// `clip(x·127.5 + 128, 0, 255)` truncated to u8, NCHW → NHWC.
pub fn to_images(x: &[f64], n: usize, c: usize, r: usize) -> Vec<u8> {
    let mut out = vec![0u8; n * r * r * c];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..r * r {
                let v = (x[(b * c + ch) * r * r + p] * 127.5 + 128.0).clamp(0.0, 255.0);
                out[(b * r * r + p) * c + ch] = v as u8;
            }
        }
    }
    out
}
