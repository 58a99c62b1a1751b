//! Eager libtorch implementation of [`Ops`] (autograd and CUDA through tch).

use std::sync::Arc;

use tch::{Device, Kind, Tensor};
use tiw_converters::{Buffer, TensorEntry};

use crate::backend::{attention_composed, stored_f32, Ops};
use crate::Result;

/// A libtorch tensor handle; `clone` is a shallow clone (same storage and autograd node).
#[derive(Debug)]
pub struct TchTensor(pub Tensor);

impl Clone for TchTensor {
    fn clone(&self) -> Self {
        TchTensor(self.0.shallow_clone())
    }
}

impl std::ops::Deref for TchTensor {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        &self.0
    }
}

impl From<Tensor> for TchTensor {
    fn from(t: Tensor) -> Self {
        TchTensor(t)
    }
}

fn wrap(t: Tensor) -> Result<TchTensor> {
    Ok(TchTensor(t))
}

static ALLOW_TF32: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets cuDNN convolutions use TF32 tensor cores (PyTorch's default `cudnn.allow_tf32 =
/// True`, which EDM's generate.py keeps and its training loop switches off). Off by default:
/// TF32's 10-bit mantissas move a DDPM++ forward by ~1e-3 relative; on an H200 it makes
/// sampling ~5× faster. No effect on the CPU.
pub fn set_allow_tf32(on: bool) {
    ALLOW_TF32.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Convolution: plain f32 on every device unless [`set_allow_tf32`] allowed TF32 on CUDA.
/// The CPU path is the ordinary `conv2d`/`conv_transpose2d`.
#[allow(clippy::too_many_arguments)]
fn convolution(
    x: &Tensor,
    wt: &Tensor,
    b: Option<&Tensor>,
    stride: [i64; 2],
    padding: [i64; 2],
    transposed: bool,
    groups: i64,
) -> std::result::Result<Tensor, tch::TchError> {
    if x.device().is_cuda() {
        return x.f_internal_convolution(
            wt,
            b,
            stride,
            padding,
            [1, 1],
            transposed,
            [0, 0],
            groups,
            false,
            false,
            true,
            ALLOW_TF32.load(std::sync::atomic::Ordering::Relaxed),
        );
    }
    if transposed {
        x.f_conv_transpose2d(wt, b, stride, padding, [0, 0], groups, [1, 1])
    } else {
        x.f_conv2d(wt, b, stride, padding, [1, 1], groups)
    }
}

/// `w` in the element type of the activation `x` (EDM's layers cast their weights per call:
/// `weight.to(x.dtype)`); a shallow handle when they already agree (every f32 network).
fn like(w: &Tensor, x: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    if w.kind() == x.kind() {
        Ok(w.shallow_clone())
    } else {
        w.f_to_kind(x.kind())
    }
}

/// `x [N, C, H, W]` with channels-last strides (NHWC in memory; a no-op copy when it already
/// is), as a differentiable op.
fn channels_last(x: &Tensor) -> std::result::Result<Tensor, tch::TchError> {
    x.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])
}

/// Eager ops on `device`: f32, or f16 where the activations are (weights are cast to the
/// activation's element type per call, as EDM's layers do).
#[derive(Debug, Clone, Copy)]
pub struct TchOps {
    /// Where constants are created.
    pub device: Device,
    /// Whether named network tensors are created as trainable leaves (`requires_grad`).
    pub trainable: bool,
    /// Whether [`Ops::attention`] uses libtorch's fused kernel. Default: on the CPU when not
    /// trainable (the CUDA kernels have not been checked on a GPU yet). A network being
    /// trained uses the official composition instead, so that its parameter gradients round
    /// as the official code's do: the key bias's gradient is exactly zero in exact arithmetic
    /// (softmax ignores a per-query constant), so its computed value is rounding noise, which
    /// Adam's first steps scale to full-size updates. The ops passed to a `forward` decide,
    /// not the ones the weights were created with.
    pub fused_attention: bool,
    /// Whether ordinary (`groups` 1) convolutions run on channels-last (NHWC-strided) copies of
    /// their input and weight. Default: on the CPU for trainable ops — oneDNN's NHWC kernels
    /// skip the per-call reorders of the NCHW layout, which saves ~10 % of a DDPM++ training
    /// step (train bench); forward-only work, and the frozen extractor's forward + input
    /// gradient, are faster in NCHW. The parameters stay NCHW; the copies are part of the
    /// autograd graph. Values equal up to rounding.
    pub channels_last_convs: bool,
}

impl TchOps {
    /// Ops creating constants on `device`.
    pub fn new(device: Device) -> Self {
        TchOps {
            device,
            trainable: false,
            fused_attention: device == Device::Cpu,
            channels_last_convs: false,
        }
    }

    /// Ops whose named tensors (parameters and buffers) are trainable leaves, for training.
    pub fn trainable(device: Device) -> Self {
        TchOps {
            device,
            trainable: true,
            fused_attention: false,
            channels_last_convs: device == Device::Cpu,
        }
    }

    /// The same ops with [`TchOps::fused_attention`] set to `on`.
    pub fn with_fused_attention(self, on: bool) -> Self {
        TchOps {
            fused_attention: on,
            ..self
        }
    }
}

impl Ops for TchOps {
    type T = TchTensor;

    fn constant(&self, data: &[f32], shape: &[usize]) -> Result<TchTensor> {
        let s: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        wrap(
            Tensor::f_from_slice(data)?
                .f_reshape(s)?
                .f_to_device(self.device)?,
        )
    }
    fn parameter(&self, _name: &str, data: &[f32], shape: &[usize]) -> Result<TchTensor> {
        let t = self.constant(data, shape)?;
        if self.trainable {
            return wrap(t.0.f_set_requires_grad(true)?);
        }
        Ok(t)
    }
    fn stored_parameter(&self, buf: &Arc<Buffer>, e: &TensorEntry) -> Result<TchTensor> {
        self.parameter(&e.name, &stored_f32(buf, e)?, &e.shape)
    }
    fn buffer_value(&self, t: &TchTensor) -> Result<TchTensor> {
        wrap(t.0.f_detach()?)
    }
    fn reshape(&self, x: &TchTensor, shape: &[i64]) -> Result<TchTensor> {
        wrap(x.f_reshape(shape)?)
    }
    fn permute(&self, x: &TchTensor, dims: &[i64]) -> Result<TchTensor> {
        wrap(x.f_permute(dims)?)
    }
    fn concat(&self, xs: &[&TchTensor], dim: i64) -> Result<TchTensor> {
        let v: Vec<&Tensor> = xs.iter().map(|t| &t.0).collect();
        wrap(Tensor::f_cat(&v, dim)?)
    }
    fn narrow(&self, x: &TchTensor, dim: i64, start: i64, len: i64) -> Result<TchTensor> {
        wrap(x.f_narrow(dim, start, len)?)
    }
    fn add(&self, x: &TchTensor, y: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_add(y)?)
    }
    fn sub(&self, x: &TchTensor, y: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_sub(y)?)
    }
    fn mul(&self, x: &TchTensor, y: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_mul(y)?)
    }
    fn mul_exact(&self, x: &TchTensor, y: &TchTensor) -> Result<TchTensor> {
        self.mul(x, y)
    }
    fn div(&self, x: &TchTensor, y: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_div(y)?)
    }
    fn add_scalar(&self, x: &TchTensor, c: f64) -> Result<TchTensor> {
        wrap(x.f_add_scalar(c)?)
    }
    fn mul_scalar(&self, x: &TchTensor, c: f64) -> Result<TchTensor> {
        wrap(x.f_mul_scalar(c)?)
    }
    fn div_scalar(&self, x: &TchTensor, c: f64) -> Result<TchTensor> {
        wrap(x.f_div_scalar(c)?)
    }
    fn rdiv_scalar(&self, c: f64, x: &TchTensor) -> Result<TchTensor> {
        // PyTorch evaluates `c / tensor` as `tensor.reciprocal() * c`.
        wrap(x.f_reciprocal()?.f_mul_scalar(c)?)
    }
    fn exp(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_exp()?)
    }
    fn log(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_log()?)
    }
    fn sqrt(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_sqrt()?)
    }
    fn square(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_square()?)
    }
    fn cos(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_cos()?)
    }
    fn sin(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_sin()?)
    }
    fn to_f16(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_to_kind(Kind::Half)?)
    }
    fn to_f32(&self, x: &TchTensor) -> Result<TchTensor> {
        if x.kind() == Kind::Float {
            return Ok(x.clone());
        }
        wrap(x.f_to_kind(Kind::Float)?)
    }
    fn cast_like(&self, x: &TchTensor, like: &TchTensor) -> Result<TchTensor> {
        if x.kind() == like.kind() {
            return Ok(x.clone());
        }
        wrap(x.f_to_kind(like.kind())?)
    }
    fn abs(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_abs()?)
    }
    fn silu(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_silu()?)
    }
    fn sigmoid(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_sigmoid()?)
    }
    fn clamp(&self, x: &TchTensor, lo: f64, hi: f64) -> Result<TchTensor> {
        wrap(x.f_clamp(lo, hi)?)
    }
    fn softmax(&self, x: &TchTensor, dim: i64) -> Result<TchTensor> {
        wrap(x.f_softmax(dim, Kind::Float)?)
    }
    fn mean_keepdim(&self, x: &TchTensor, dims: &[i64]) -> Result<TchTensor> {
        wrap(x.f_mean_dim(dims, true, Kind::Float)?)
    }
    fn argmin(&self, x: &TchTensor, dim: i64) -> Result<TchTensor> {
        wrap(x.f_argmin(dim, false)?.f_to_kind(Kind::Float)?)
    }
    fn gather_1d(&self, table: &TchTensor, idx: &TchTensor) -> Result<TchTensor> {
        wrap(table.f_index_select(0, &idx.f_to_kind(Kind::Int64)?)?)
    }
    fn matmul(&self, a: &TchTensor, b: &TchTensor) -> Result<TchTensor> {
        wrap(a.f_matmul(b)?)
    }
    /// With `fused_attention`: libtorch's fused `scaled_dot_product_attention` (flash
    /// attention on the CPU: the `T×T` weights are never stored, and the backward recomputes
    /// them blockwise), the two scales folded into one; its operands are 4-D, unit-stride
    /// `[1, N, T, C]`, which is what the fused kernel accepts (anything else would fall back
    /// to the unfused path). Otherwise [`attention_composed`].
    ///
    /// Half-precision operands (a `use_fp16` network on CUDA) take EDM's mixed path: q and k
    /// scaled in f16, the logits and the softmax in f32, the weights rounded to f16 and
    /// applied to v in f16.
    fn attention(&self, q: &TchTensor, k: &TchTensor, v: &TchTensor, qs: f64, ks: f64) -> Result<TchTensor> {
        if q.kind() == Kind::Half {
            let scaled = |x: &Tensor, s: f64| -> Result<Tensor> {
                let x = if s == 1.0 {
                    x.shallow_clone()
                } else {
                    x.f_mul_scalar(s)?
                };
                Ok(x.f_to_kind(Kind::Float)?)
            };
            let w = scaled(&q.0, qs)?
                .f_transpose(1, 2)?
                .f_matmul(&scaled(&k.0, ks)?)?;
            let w = w.f_softmax(2, Kind::Float)?.f_to_kind(Kind::Half)?;
            return wrap(v.f_matmul(&w.f_transpose(1, 2)?)?);
        }
        if !self.fused_attention {
            return attention_composed(self, q, k, v, qs, ks);
        }
        let rows =
            |x: &Tensor| -> Result<Tensor> { Ok(x.f_transpose(1, 2)?.f_contiguous()?.f_unsqueeze(0)?) };
        let a = Tensor::f_scaled_dot_product_attention(
            &rows(q)?,
            &rows(k)?,
            &rows(v)?,
            None::<Tensor>,
            0.0,
            false,
            qs * ks,
            false,
        )?;
        wrap(a.f_squeeze_dim(0)?.f_transpose(1, 2)?)
    }
    fn linear(&self, x: &TchTensor, wt: &TchTensor, b: Option<&TchTensor>) -> Result<TchTensor> {
        let y = x.f_matmul(&like(wt, x)?.f_tr()?)?;
        wrap(match b {
            Some(b) => y.f_add(&like(b, x)?)?,
            None => y,
        })
    }
    fn conv2d(
        &self,
        x: &TchTensor,
        wt: &TchTensor,
        b: Option<&TchTensor>,
        stride: i64,
        padding: i64,
        groups: i64,
    ) -> Result<TchTensor> {
        let (wt, b) = (&like(wt, x)?, b.map(|b| like(b, x)).transpose()?);
        let b = b.as_ref();
        if self.channels_last_convs && groups == 1 {
            return wrap(convolution(
                &channels_last(x)?,
                &channels_last(wt)?,
                b,
                [stride, stride],
                [padding, padding],
                false,
                groups,
            )?);
        }
        wrap(convolution(
            x,
            wt,
            b,
            [stride, stride],
            [padding, padding],
            false,
            groups,
        )?)
    }
    fn conv_transpose2d(
        &self,
        x: &TchTensor,
        wt: &TchTensor,
        stride: i64,
        padding: i64,
        groups: i64,
    ) -> Result<TchTensor> {
        wrap(convolution(
            x,
            &like(wt, x)?,
            None,
            [stride, stride],
            [padding, padding],
            true,
            groups,
        )?)
    }
    fn group_norm(
        &self,
        x: &TchTensor,
        groups: i64,
        wt: &TchTensor,
        b: &TchTensor,
        eps: f64,
    ) -> Result<TchTensor> {
        wrap(x.f_group_norm(groups, Some(&like(wt, x)?), Some(&like(b, x)?), eps, false)?)
    }
    fn avg_pool2d(&self, x: &TchTensor, k: i64) -> Result<TchTensor> {
        wrap(x.f_avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)?)
    }
    fn dropout(&self, x: &TchTensor, p: f64, train: bool) -> Result<TchTensor> {
        if !train || p == 0.0 {
            return Ok(x.clone());
        }
        wrap(x.f_dropout(p, true)?)
    }
    fn label_dropout(&self, labels: &TchTensor, x: &TchTensor, p: f64, train: bool) -> Result<TchTensor> {
        if !train || p == 0.0 {
            return Ok(labels.clone());
        }
        let n = *x
            .size()
            .first()
            .ok_or_else(|| crate::ModelError::Input("label_dropout: x has no batch dimension".into()))?;
        let keep = Tensor::f_rand([n, 1], (Kind::Float, x.device()))?
            .f_ge(p)?
            .f_to_kind(labels.kind())?;
        wrap(labels.f_mul(&keep)?)
    }
    fn relu(&self, x: &TchTensor) -> Result<TchTensor> {
        wrap(x.f_relu()?)
    }
    fn conv2d_hw(
        &self,
        x: &TchTensor,
        wt: &TchTensor,
        b: Option<&TchTensor>,
        stride: [i64; 2],
        padding: [i64; 2],
    ) -> Result<TchTensor> {
        wrap(convolution(x, wt, b.map(|b| &b.0), stride, padding, false, 1)?)
    }
    fn max_pool2d(&self, x: &TchTensor, k: i64, stride: i64, padding: i64) -> Result<TchTensor> {
        wrap(x.f_max_pool2d([k, k], [stride, stride], [padding, padding], [1, 1], false)?)
    }
    fn avg_pool2d_ext(
        &self,
        x: &TchTensor,
        k: i64,
        stride: i64,
        padding: i64,
        count_include_pad: bool,
    ) -> Result<TchTensor> {
        wrap(x.f_avg_pool2d(
            [k, k],
            [stride, stride],
            [padding, padding],
            false,
            count_include_pad,
            None::<i64>,
        )?)
    }
}
