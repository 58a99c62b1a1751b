//! Preconditioned EDM denoisers `D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x; c_noise(σ))`
//! (SPEC §2.4): EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond.

use super::dhariwal_unet::DhariwalUNet;
use super::song_unet::SongUNet;
use crate::backend::Ops;
use crate::config::{Arch, NetConfig, Precond};
use crate::vb::Vb;
use crate::{ModelError, Result};

enum Inner<O: Ops> {
    Song(SongUNet<O>),
    Dhariwal(DhariwalUNet<O>),
}

/// Outputs of one denoiser evaluation.
pub struct DenoiserOut<T> {
    /// `D(x; σ)`, `[N, C, H, W]`.
    pub d: T,
    /// The inner network's output `F` (all its channels).
    pub f: T,
    /// The inner network's input `c_in·x`.
    pub model_in: T,
    /// The inner network's noise labels `c_noise` (flattened).
    pub noise_labels: T,
}

/// A preconditioned EDM network.
pub struct EdmDenoiser<O: Ops> {
    inner: Inner<O>,
    u: Option<O::T>,
    /// The configuration.
    pub cfg: NetConfig,
    /// Whether the inner network runs in f16 (EDMPrecond's `dtype`): see [`EdmDenoiser::set_fp16`].
    fp16: bool,
}

/// Whether the official code runs a network of configuration `cfg` in f16 on a device:
/// EDMPrecond's `dtype` is f16 only if `use_fp16` and the device is CUDA (SPEC §2.4), so on
/// the CPU every network runs in f32. `force_fp32` opts out (strict-f32 parity runs).
pub fn official_fp16(cfg: &NetConfig, cuda: bool, force_fp32: bool) -> bool {
    cfg.use_fp16 && cuda && !force_fp32
}

/// `ᾱ(j) = sin²(π/2 · j / M / (C2 + 1))` of iDDPM.
fn alpha_bar(j: f64, m: f64, c2: f64) -> f64 {
    (0.5 * std::f64::consts::PI * j / m / (c2 + 1.0)).sin().powi(2)
}

/// The iDDPM σ table `u [M+1]` (u_M = 0, descending recursion).
pub fn iddpm_u(m: usize, c1: f64, c2: f64) -> Vec<f32> {
    let mut u = vec![0f64; m + 1];
    for j in (1..=m).rev() {
        let ratio = (alpha_bar(j as f64 - 1.0, m as f64, c2) / alpha_bar(j as f64, m as f64, c2)).max(c1);
        u[j - 1] = ((u[j] * u[j] + 1.0) / ratio - 1.0).sqrt();
    }
    u.into_iter().map(|x| x as f32).collect()
}

/// Preconditioning coefficients of σ (`None` = the constant 1).
pub struct Coefficients<T> {
    /// c_skip (EDM only; 1 otherwise).
    pub c_skip: Option<T>,
    /// c_out.
    pub c_out: T,
    /// c_in (1 for VE).
    pub c_in: Option<T>,
    /// c_noise.
    pub c_noise: T,
}

/// The coefficients of SPEC §2.4 for σ of any shape (computed with `o`, in the official
/// operation order). `u` is the iDDPM σ table.
pub fn coefficients<O: Ops>(p: &Precond, o: &O, s: &O::T, u: Option<&O::T>) -> Result<Coefficients<O::T>> {
    let s2 = o.square(s)?;
    Ok(match *p {
        Precond::Edm { sigma_data: sd, .. } => {
            let d = o.add_scalar(&s2, sd * sd)?;
            Coefficients {
                c_skip: Some(o.rdiv_scalar(sd * sd, &d)?),
                c_out: o.div(&o.mul_scalar(s, sd)?, &o.sqrt(&d)?)?,
                c_in: Some(o.rdiv_scalar(1.0, &o.sqrt(&d)?)?),
                c_noise: o.mul_scalar(&o.log(s)?, 0.25)?,
            }
        }
        Precond::Vp {
            beta_d, beta_min, m, ..
        } => {
            // σ⁻¹(σ) = (sqrt(β_min² + 2β_d·ln(1+σ²)) − β_min) / β_d
            let l = o.log(&o.add_scalar(&s2, 1.0)?)?;
            let inner = o.sqrt(&o.add_scalar(&o.mul_scalar(&l, 2.0 * beta_d)?, beta_min * beta_min)?)?;
            let t = o.div_scalar(&o.add_scalar(&inner, -beta_min)?, beta_d)?;
            Coefficients {
                c_skip: None,
                c_out: o.mul_scalar(s, -1.0)?,
                c_in: Some(o.rdiv_scalar(1.0, &o.sqrt(&o.add_scalar(&s2, 1.0)?)?)?),
                c_noise: o.mul_exact(&t, &o.constant(&[(m - 1.0) as f32], &[1])?)?,
            }
        }
        Precond::Ve { .. } => Coefficients {
            c_skip: None,
            c_out: s.clone(),
            c_in: None,
            c_noise: o.log(&o.mul_scalar(s, 0.5)?)?,
        },
        Precond::IDdpm { m, .. } => {
            let u = u.ok_or_else(|| ModelError::Config("iDDPM preconditioning needs its u table".into()))?;
            let diff = o.abs(&o.sub(&o.reshape(s, &[-1, 1])?, &o.reshape(u, &[1, -1])?)?)?;
            let idx = o.argmin(&diff, 1)?;
            Coefficients {
                c_skip: None,
                c_out: o.mul_scalar(s, -1.0)?,
                c_in: Some(o.rdiv_scalar(1.0, &o.sqrt(&o.add_scalar(&s2, 1.0)?)?)?),
                c_noise: o.reshape(
                    &o.add_scalar(&o.mul_scalar(&idx, -1.0)?, (m - 1) as f64)?,
                    &[-1, 1, 1, 1],
                )?,
            }
        }
    })
}

impl<O: Ops> EdmDenoiser<O> {
    /// Requests the wrapper's buffers and `model.*` in registration order.
    pub fn new(vb: &Vb<O>, cfg: &NetConfig) -> Result<Self> {
        let u = match cfg.precond {
            Precond::IDdpm { c1, c2, m } => Some(vb.buffer("u", &[m + 1], Some(&iddpm_u(m, c1, c2)))?),
            _ => None,
        };
        let inner = match &cfg.arch {
            Arch::Song(s) => Inner::Song(SongUNet::new(&vb.pp("model"), s)?),
            Arch::Dhariwal(d) => Inner::Dhariwal(DhariwalUNet::new(&vb.pp("model"), d)?),
        };
        Ok(EdmDenoiser {
            inner,
            u,
            cfg: cfg.clone(),
            fp16: false,
        })
    }

    /// Runs the inner network in f16 (`on`) as EDMPrecond does with `dtype = float16`: the
    /// preconditioning in f32, the model input `c_in·x` cast to f16, every layer's weights
    /// cast to f16 per call, the noise/label embedding in f32 (its per-block conditioning
    /// cast to f16), attention logits and softmax in f32, and `F` cast back to f32 before
    /// `D = c_skip·x + c_out·F`. Needs a backend with half precision ([`Ops::to_f16`]); off
    /// by default (every network built here starts in f32). Use [`official_fp16`] to decide.
    pub fn set_fp16(&mut self, on: bool) {
        self.fp16 = on;
    }

    /// Whether the inner network runs in f16.
    pub fn fp16(&self) -> bool {
        self.fp16
    }

    /// `x [N, C, H, W]`, `sigma` `[N]` or `[1]` (broadcast), optional `class_labels [N, L]`
    /// (zeros when the net is conditional and none are given), optional
    /// `augment_labels [N, A]`.
    pub fn forward(
        &self,
        o: &O,
        x: &O::T,
        sigma: &O::T,
        class_labels: Option<&O::T>,
        augment_labels: Option<&O::T>,
        train: bool,
    ) -> Result<DenoiserOut<O::T>> {
        let s = o.reshape(sigma, &[-1, 1, 1, 1])?;
        let Coefficients {
            c_skip,
            c_out,
            c_in,
            c_noise,
        } = coefficients(&self.cfg.precond, o, &s, self.u.as_ref())?;
        let model_in = match &c_in {
            Some(c) => o.mul(c, x)?,
            None => x.clone(),
        };
        let noise_labels = o.reshape(&c_noise, &[-1])?;
        let zeros;
        let class_labels = match (self.cfg.label_dim, class_labels) {
            (0, _) => None,
            (_, Some(c)) => Some(c),
            (l, None) => {
                zeros = o.constant(&vec![0.0; l], &[1, l])?;
                Some(&zeros)
            }
        };
        let net_in = if self.fp16 {
            o.to_f16(&model_in)?
        } else {
            model_in.clone()
        };
        let f = match &self.inner {
            Inner::Song(m) => m.forward(o, &net_in, &noise_labels, class_labels, augment_labels, train)?,
            Inner::Dhariwal(m) => {
                m.forward(o, &net_in, &noise_labels, class_labels, augment_labels, train)?
            }
        };
        let f = if self.fp16 { o.to_f32(&f)? } else { f };
        let f_img = if matches!(self.cfg.precond, Precond::IDdpm { .. }) {
            o.narrow(&f, 1, 0, self.cfg.img_channels as i64)?
        } else {
            f.clone()
        };
        let out = o.mul(&c_out, &f_img)?;
        let d = match c_skip {
            Some(cs) => o.add(&o.mul(&cs, x)?, &out)?,
            None => o.add(x, &out)?,
        };
        Ok(DenoiserOut {
            d,
            f,
            model_in,
            noise_labels,
        })
    }

    /// Validates a configuration without building it.
    pub fn check_config(cfg: &NetConfig) -> Result<()> {
        if cfg.img_resolution == 0 {
            return Err(ModelError::Config("img_resolution is 0".into()));
        }
        Ok(())
    }
}
