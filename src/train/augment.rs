//! EDM's `AugmentPipe`, geometric part (SPEC §5.3), on tch tensors of any device.
//!
//! Configured as `train.py --augment=p` builds it: `xflip = 1e8, yflip = 1, scale = 1,
//! rotate_frac = 1, aniso = 1, translate_frac = 1` ([`AugmentPipe::edm`]); colour
//! transformations and the integer rotations/translations are not implemented (their
//! probabilities are 0 in every EDM/TIW configuration).
//!
//! **Parameters** (per sample, drawn in this order; "kept with probability q" means `w ← 0
//! unless U < q·p`, `U ~ U[0,1)` drawn right after `w`, compared in f32):
//!
//! | op | draws | effect | labels |
//! |---|---|---|---|
//! | xflip | `w = randint(2)` `[N,1,1,1]`, `U` | mirror along W | `w` |
//! | yflip | `w = randint(2)`, `U` | mirror along H | `w` |
//! | scale | `w ~ N(0,1)` `[N]`, `U` | `s = 2^(0.2w)`, `G⁻¹ ← G⁻¹·S(1/s, 1/s)` | `w` |
//! | rotate | `w = (2U₁ − 1)·π`, `U` | `G⁻¹ ← G⁻¹·R(w)` | `cos w − 1`, `sin w` |
//! | aniso | `w ~ N(0,1)`, `r = (2U₁ − 1)π`, `U` (w), `U'` (r, kept with prob 0.5) | `s = 2^(0.2w)`, `G⁻¹ ← G⁻¹·R(−r)·S(1/s, s)·R(r)` | `w cos r`, `w sin r` |
//! | translate | `w ~ N(0,1)` `[2,N]`, `U` `[1,N]` | `G⁻¹ ← G⁻¹·T(−0.125·W·w₀, −0.125·H·w₁)` | `w₀`, `w₁` |
//!
//! The label matrix `[N, 9]` is the concatenation in that order (f32). `R(θ)` is the rotation
//! `[[cos θ, −sin θ, 0], [sin θ, cos θ, 0], [0, 0, 1]]`, `S` scaling, `T` translation, all
//! batched `[N,3,3]` f32 and multiplied left to right as the official code does.
//!
//! **Execution** (whenever a geometric op is configured, even if every sample drew the
//! identity): transform the four corners `(±(W−1)/2, ±(H−1)/2)` by `G⁻¹`, take the batch-wide
//! extent plus `2·3` px for the filter, clamp to `[0, W−1] × [0, H−1]`, ceil → reflect-pad
//! `(left, right, top, bottom)`; re-centre `G⁻¹ ← T((l−r)/2, (t−b)/2)·G⁻¹`; upsample ×2 (zero
//! insertion per axis, depthwise conv with the reversed 12-tap sym6 filter, padding 6);
//! conjugate `G⁻¹ ← S(2)·G⁻¹·S(½)`, then `T(−½)·G⁻¹·T(½)`; map to normalised coordinates
//! (`S(2/W_up, 2/H_up)·G⁻¹·S(W_out/2, H_out/2)`, `H_out = 2(H+6)`, `W_out = 2(W+6)`),
//! `affine_grid` + `grid_sampler_2d` (bilinear, zeros padding, `align_corners = false`); then
//! depthwise conv with the sym6 filter, stride 2, padding 5, cropping 3 px per side, per axis.
//! Because sym6 is orthonormal, up- then down-sampling reproduces the padded image, so the
//! identity transform returns the input up to f32 rounding.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// The 12-tap sym6 low-pass filter (as listed in SPEC §5.3).
pub const SYM6: [f64; 12] = [
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
];

/// Random draws of the augmentation: the loss's [`Draws`] (which include `randint`).
pub use super::loss::Draws as AugmentDraws;

/// Probabilities and strengths of the geometric augmentations (EDM's `AugmentPipe` kwargs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentPipe {
    /// Overall probability `p` (`--augment`).
    pub p: f64,
    /// x-flip multiplier (1e8 in EDM: every sample is eligible).
    pub xflip: f64,
    /// y-flip multiplier.
    pub yflip: f64,
    /// Isotropic scaling multiplier.
    pub scale: f64,
    /// Arbitrary rotation multiplier.
    pub rotate_frac: f64,
    /// Anisotropic scaling multiplier.
    pub aniso: f64,
    /// Fractional translation multiplier.
    pub translate_frac: f64,
    /// log2 std of the isotropic scale (0.2).
    pub scale_std: f64,
    /// Largest rotation as a fraction of π (1).
    pub rotate_frac_max: f64,
    /// log2 std of the anisotropic scale (0.2).
    pub aniso_std: f64,
    /// Probability that the anisotropy axis is rotated (0.5, independent of `p`).
    pub aniso_rotate_prob: f64,
    /// Translation std as a fraction of the image size (0.125).
    pub translate_frac_std: f64,
}

impl AugmentPipe {
    /// `AugmentPipe(p, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)`,
    /// what `train.py` builds for `--augment=p > 0`.
    pub fn edm(p: f64) -> Self {
        AugmentPipe {
            p,
            xflip: 1e8,
            yflip: 1.0,
            scale: 1.0,
            rotate_frac: 1.0,
            aniso: 1.0,
            translate_frac: 1.0,
            scale_std: 0.2,
            rotate_frac_max: 1.0,
            aniso_std: 0.2,
            aniso_rotate_prob: 0.5,
            translate_frac_std: 0.125,
        }
    }

    /// Every multiplier 0 (no augmentation, no draws, no labels); set fields from here.
    pub fn none(p: f64) -> Self {
        AugmentPipe {
            xflip: 0.0,
            yflip: 0.0,
            scale: 0.0,
            rotate_frac: 0.0,
            aniso: 0.0,
            translate_frac: 0.0,
            ..Self::edm(p)
        }
    }

    /// Number of label columns (9 for [`AugmentPipe::edm`]).
    pub fn label_dim(&self) -> usize {
        [self.xflip, self.yflip, self.scale]
            .iter()
            .filter(|&&m| m > 0.0)
            .count()
            + 2 * [self.rotate_frac, self.aniso, self.translate_frac]
                .iter()
                .filter(|&&m| m > 0.0)
                .count()
    }

    fn geometric(&self) -> bool {
        self.scale > 0.0 || self.rotate_frac > 0.0 || self.aniso > 0.0 || self.translate_frac > 0.0
    }

    /// Draws the parameters for `n` images of size `h × w` (see the module docs).
    pub fn sample(
        &self,
        n: i64,
        h: i64,
        w: i64,
        draws: &mut dyn AugmentDraws,
        device: Device,
    ) -> Result<AugmentParams> {
        let dev = |t: Tensor| t.f_to_device(device);
        let col = [n, 1, 1, 1];
        let vec = [n];
        let mut labels: Vec<Tensor> = Vec::new();
        let keep = |u: &Tensor, q: f64| -> Result<Tensor> { Ok(u.f_lt(q)?) };
        let mut flip = |mult: f64, draws: &mut dyn AugmentDraws| -> Result<Option<Tensor>> {
            if mult <= 0.0 {
                return Ok(None);
            }
            let v = dev(draws.randint(2, &col)?)?;
            let u = dev(draws.rand(&col)?)?;
            let v = v.f_where_self(&keep(&u, mult * self.p)?, &v.f_zeros_like()?)?;
            labels.push(v.shallow_clone());
            Ok(Some(v))
        };
        let xflip = flip(self.xflip, draws)?;
        let yflip = flip(self.yflip, draws)?;

        let mut g: Option<Tensor> = None;
        let mut mul = |m: Tensor| -> Result<()> {
            g = Some(match g.take() {
                None => m,
                Some(g) => g.f_matmul(&m)?,
            });
            Ok(())
        };
        if self.scale > 0.0 {
            let v = dev(draws.randn(&vec)?)?;
            let u = dev(draws.rand(&vec)?)?;
            let v = v.f_where_self(&keep(&u, self.scale * self.p)?, &v.f_zeros_like()?)?;
            let s = v.f_mul_scalar(self.scale_std)?.f_exp2()?;
            let si = s.f_reciprocal()?;
            mul(scale2d(&si, &si)?)?;
            labels.push(v);
        }
        if self.rotate_frac > 0.0 {
            let u1 = dev(draws.rand(&vec)?)?;
            let v = u1
                .f_mul_scalar(2.0)?
                .f_sub_scalar(1.0)?
                .f_mul_scalar(std::f64::consts::PI * self.rotate_frac_max)?;
            let u = dev(draws.rand(&vec)?)?;
            let v = v.f_where_self(&keep(&u, self.rotate_frac * self.p)?, &v.f_zeros_like()?)?;
            // rotate2d_inv(−w) = rotate2d(w)
            mul(rotate2d(&v.f_neg()?.f_neg()?)?)?;
            labels.push(v.f_cos()?.f_sub_scalar(1.0)?);
            labels.push(v.f_sin()?);
        }
        if self.aniso > 0.0 {
            let v = dev(draws.randn(&vec)?)?;
            let r = dev(draws.rand(&vec)?)?
                .f_mul_scalar(2.0)?
                .f_sub_scalar(1.0)?
                .f_mul_scalar(std::f64::consts::PI)?;
            let u = dev(draws.rand(&vec)?)?;
            let v = v.f_where_self(&keep(&u, self.aniso * self.p)?, &v.f_zeros_like()?)?;
            let ur = dev(draws.rand(&vec)?)?;
            let r = r.f_where_self(&keep(&ur, self.aniso_rotate_prob)?, &r.f_zeros_like()?)?;
            let s = v.f_mul_scalar(self.aniso_std)?.f_exp2()?;
            // rotate2d_inv(r) · scale2d_inv(s, 1/s) · rotate2d_inv(−r)
            mul(rotate2d(&r.f_neg()?)?)?;
            let si = s.f_reciprocal()?;
            mul(scale2d(&si, &si.f_reciprocal()?)?)?;
            mul(rotate2d(&r.f_neg()?.f_neg()?)?)?;
            labels.push(v.f_mul(&r.f_cos()?)?);
            labels.push(v.f_mul(&r.f_sin()?)?);
        }
        if self.translate_frac > 0.0 {
            let v = dev(draws.randn_along(&[2, n], 1)?)?;
            let u = dev(draws.rand_along(&[1, n], 1)?)?;
            let v = v.f_where_self(&keep(&u, self.translate_frac * self.p)?, &v.f_zeros_like()?)?;
            let tx = v.get(0).f_mul_scalar(w as f64 * self.translate_frac_std)?;
            let ty = v.get(1).f_mul_scalar(h as f64 * self.translate_frac_std)?;
            mul(translate2d(&tx.f_neg()?, &ty.f_neg()?)?)?;
            labels.push(v.get(0));
            labels.push(v.get(1));
        }
        let labels = if labels.is_empty() {
            Tensor::f_zeros([n, 0], (Kind::Float, device))?
        } else {
            let cols = labels
                .iter()
                .map(|t| t.f_to_kind(Kind::Float)?.f_reshape([n, -1]))
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::f_cat(&cols, 1)?
        };
        let g_inv = if self.geometric() {
            // I₃ · G (exact) — G is the product of the drawn matrices
            Some(match g {
                Some(g) => g,
                None => Tensor::f_eye(3, (Kind::Float, device))?.f_expand([n, 3, 3], false)?,
            })
        } else {
            None
        };
        Ok(AugmentParams {
            xflip,
            yflip,
            g_inv,
            labels,
        })
    }

    /// Augments `images` `[N, C, H, W]` (float) with fresh draws: `(images, labels [N, 9])`.
    pub fn forward(&self, images: &Tensor, draws: &mut dyn AugmentDraws) -> Result<(Tensor, Tensor)> {
        let (n, _, h, w) = images.size4()?;
        let p = self.sample(n, h, w, draws, images.device())?;
        let out = self.apply(images, &p)?;
        Ok((out, p.labels))
    }

    /// Applies drawn parameters to `images` `[N, C, H, W]`.
    pub fn apply(&self, images: &Tensor, p: &AugmentParams) -> Result<Tensor> {
        let mut x = images.shallow_clone();
        if let Some(v) = &p.xflip {
            x = x.f_flip([3])?.f_where_self(&v.f_eq(1)?, &x)?;
        }
        if let Some(v) = &p.yflip {
            x = x.f_flip([2])?.f_where_self(&v.f_eq(1)?, &x)?;
        }
        match &p.g_inv {
            Some(g) => geometric(&x, g),
            None => Ok(x),
        }
    }
}

/// Drawn augmentation parameters.
#[derive(Debug)]
pub struct AugmentParams {
    /// x-flip flags `[N,1,1,1]` int64 (1 = mirror), if configured.
    pub xflip: Option<Tensor>,
    /// y-flip flags `[N,1,1,1]` int64, if configured.
    pub yflip: Option<Tensor>,
    /// `G⁻¹` `[N,3,3]` f32 (output pixel → input pixel, centred coordinates), if any
    /// geometric op is configured.
    pub g_inv: Option<Tensor>,
    /// Augment labels `[N, label_dim]` f32 (the network's `augment_labels`).
    pub labels: Tensor,
}

/// `[N,3,3]` from nine `[N]` tensors / constants, row-major.
fn matrix(elems: [&dyn AsElem; 9]) -> Result<Tensor> {
    let reference = elems
        .iter()
        .find_map(|e| e.tensor())
        .ok_or_else(|| anyhow::anyhow!("matrix without a tensor element"))?;
    let cols = elems
        .iter()
        .map(|e| match e.tensor() {
            Some(t) => Ok(t.shallow_clone()),
            None => reference.f_full_like(e.value()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = reference.size()[0];
    Ok(Tensor::f_stack(&cols, -1)?.f_reshape([n, 3, 3])?)
}

trait AsElem {
    fn tensor(&self) -> Option<&Tensor>;
    fn value(&self) -> f64;
}
impl AsElem for Tensor {
    fn tensor(&self) -> Option<&Tensor> {
        Some(self)
    }
    fn value(&self) -> f64 {
        0.0
    }
}
impl AsElem for f64 {
    fn tensor(&self) -> Option<&Tensor> {
        None
    }
    fn value(&self) -> f64 {
        *self
    }
}

fn scale2d(sx: &Tensor, sy: &Tensor) -> Result<Tensor> {
    matrix([sx, &0.0, &0.0, &0.0, sy, &0.0, &0.0, &0.0, &1.0])
}

fn rotate2d(t: &Tensor) -> Result<Tensor> {
    let (c, s) = (t.f_cos()?, t.f_sin()?);
    let ms = t.f_neg()?.f_sin()?;
    matrix([&c, &ms, &0.0, &s, &c, &0.0, &0.0, &0.0, &1.0])
}

fn translate2d(tx: &Tensor, ty: &Tensor) -> Result<Tensor> {
    matrix([&1.0, &0.0, tx, &0.0, &1.0, ty, &0.0, &0.0, &1.0])
}

/// A constant `[3,3]` f32 matrix on `device` (values rounded from f64).
fn const3(m: [[f64; 3]; 3], device: Device) -> Result<Tensor> {
    let v: Vec<f32> = m.iter().flatten().map(|&x| x as f32).collect();
    Ok(Tensor::from_slice(&v).f_reshape([3, 3])?.f_to_device(device)?)
}

fn c_scale(sx: f64, sy: f64, d: Device) -> Result<Tensor> {
    const3([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], d)
}

fn c_translate(tx: f64, ty: f64, d: Device) -> Result<Tensor> {
    const3([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], d)
}

fn filter(reversed: bool, c: i64, vertical: bool, like: &Tensor) -> Result<Tensor> {
    let mut taps: Vec<f32> = SYM6.iter().map(|&x| x as f32).collect();
    if reversed {
        taps.reverse();
    }
    let shape = if vertical { [1, 1, 12, 1] } else { [1, 1, 1, 12] };
    Ok(Tensor::from_slice(&taps)
        .f_reshape(shape)?
        .f_repeat([c, 1, 1, 1])?
        .f_to(like.device())?
        .f_to_kind(like.kind())?)
}

/// The geometric execution of the module docs, for `G⁻¹` `[N,3,3]`.
fn geometric(images: &Tensor, g_inv: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = images.size4()?;
    let d = images.device();
    const HZ_PAD: i64 = 3;
    let (cx, cy) = ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0);
    // corners [3, 4] (columns = points)
    let cp = const3([[-cx, cx, cx], [-cy, -cy, cy], [1.0, 1.0, 1.0]], d)?;
    let cp = Tensor::f_cat(
        &[
            cp,
            Tensor::from_slice(&[-cx as f32, cy as f32, 1.0])
                .f_reshape([3, 1])?
                .f_to_device(d)?,
        ],
        1,
    )?;
    let cp = g_inv.f_matmul(&cp)?; // [N, 3, 4]
    let m = cp.f_narrow(1, 0, 2)?.f_permute([1, 0, 2])?.f_flatten(1, -1)?; // [2, N·4]
    let m = Tensor::f_cat(&[m.f_neg()?, m], 0)?.f_amax([1], false)?; // [x0, y0, x1, y1]
    let add = |v: [f64; 4]| -> Result<Tensor> {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Ok(Tensor::from_slice(&v).f_to_device(d)?)
    };
    let hp2 = (HZ_PAD * 2) as f64;
    let m = m.f_add(&add([hp2 - cx, hp2 - cy, hp2 - cx, hp2 - cy])?)?;
    let m = m.f_maximum(&add([0.0; 4])?)?;
    let m = m.f_minimum(&add([
        (w - 1) as f64,
        (h - 1) as f64,
        (w - 1) as f64,
        (h - 1) as f64,
    ])?)?;
    let m = Vec::<f32>::try_from(m.f_ceil()?.f_to_device(Device::Cpu)?)?;
    let [mx0, my0, mx1, my1] = [m[0] as i64, m[1] as i64, m[2] as i64, m[3] as i64];

    // pad and re-centre
    let x = images.f_reflection_pad2d([mx0, mx1, my0, my1])?;
    let g = c_translate((mx0 - mx1) as f64 / 2.0, (my0 - my1) as f64 / 2.0, d)?.f_matmul(g_inv)?;

    // upsample ×2
    let (hp, wp) = (x.size()[2], x.size()[3]);
    let x = Tensor::f_stack(&[&x, &x.f_zeros_like()?], 4)?
        .f_reshape([n, c, hp, 2 * wp])?
        .f_narrow(3, 0, 2 * wp - 1)?;
    let x = x.f_conv2d(
        &filter(true, c, false, &x)?,
        None::<Tensor>,
        [1, 1],
        [0, 6],
        [1, 1],
        c,
    )?;
    let x = Tensor::f_stack(&[&x, &x.f_zeros_like()?], 3)?
        .f_reshape([n, c, 2 * hp, 2 * wp])?
        .f_narrow(2, 0, 2 * hp - 1)?;
    let x = x.f_conv2d(
        &filter(true, c, true, &x)?,
        None::<Tensor>,
        [1, 1],
        [6, 0],
        [1, 1],
        c,
    )?;
    let g = c_scale(2.0, 2.0, d)?
        .f_matmul(&g)?
        .f_matmul(&c_scale(0.5, 0.5, d)?)?;
    let g = c_translate(-0.5, -0.5, d)?
        .f_matmul(&g)?
        .f_matmul(&c_translate(0.5, 0.5, d)?)?;

    // resample
    let (ho, wo) = ((h + HZ_PAD * 2) * 2, (w + HZ_PAD * 2) * 2);
    let (hu, wu) = (x.size()[2], x.size()[3]);
    let g = c_scale(2.0 / wu as f64, 2.0 / hu as f64, d)?
        .f_matmul(&g)?
        .f_matmul(&c_scale(1.0 / (2.0 / wo as f64), 1.0 / (2.0 / ho as f64), d)?)?;
    let grid =
        Tensor::f_affine_grid_generator(&g.f_narrow(1, 0, 2)?, [n, c, ho, wo], false)?.f_to_kind(x.kind())?;
    let x = x.f_grid_sampler_2d(&grid, 0, 0, false)?;

    // downsample and crop
    let x = x.f_conv2d(
        &filter(false, c, false, &x)?,
        None::<Tensor>,
        [1, 2],
        [0, 5],
        [1, 1],
        c,
    )?;
    let x = x.f_narrow(3, HZ_PAD, x.size()[3] - 2 * HZ_PAD)?;
    let x = x.f_conv2d(
        &filter(false, c, true, &x)?,
        None::<Tensor>,
        [2, 1],
        [5, 0],
        [1, 1],
        c,
    )?;
    let x = x.f_narrow(2, HZ_PAD, x.size()[2] - 2 * HZ_PAD)?;
    if x.size() != [n, c, h, w] {
        bail!("augment: output shape {:?} != input {:?}", x.size(), [n, c, h, w]);
    }
    Ok(x)
}
