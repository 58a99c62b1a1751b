//! `Ops`: the small set of tensor operations every architecture is written against.
//!
//! An implementation either computes eagerly ([`crate::tch_ops::TchOps`], libtorch, with
//! autograd and CUDA) or records a graph (ONNX). Forward code therefore branches only on
//! static configuration, never on tensor values, and reshapes use `-1` for the (symbolic)
//! batch dimension. All element-wise binary ops broadcast like NumPy.

use std::sync::Arc;

use tiw_converters::{Buffer, TensorEntry};

use crate::{ModelError, Result};

/// Tensor operations over handles of type [`Ops::T`].
pub trait Ops {
    /// A tensor handle.
    type T: Clone;

    /// A constant f32 tensor (row-major `data`, `shape`).
    fn constant(&self, data: &[f32], shape: &[usize]) -> Result<Self::T>;
    /// A named network tensor (parameter or buffer) with values `data` (row-major, `shape`).
    fn parameter(&self, name: &str, data: &[f32], shape: &[usize]) -> Result<Self::T>;
    /// A named network tensor read from a checkpoint: entry `e`, whose views point into
    /// `buf`. An eager backend converts the values to f32 now ([`stored_f32`]); a graph
    /// recorder may instead keep the reference and read the values only when it writes the
    /// graph (streaming export).
    fn stored_parameter(&self, buf: &Arc<Buffer>, e: &TensorEntry) -> Result<Self::T>;
    /// The value a layer uses for a buffer handle: the same data, never trainable (libtorch:
    /// detached, so values derived from buffers at construction hold no autograd graph).
    fn buffer_value(&self, t: &Self::T) -> Result<Self::T>;
    /// Reshape; one entry may be `-1`.
    fn reshape(&self, x: &Self::T, shape: &[i64]) -> Result<Self::T>;
    /// Permute dimensions.
    fn permute(&self, x: &Self::T, dims: &[i64]) -> Result<Self::T>;
    /// Concatenate along `dim`.
    fn concat(&self, xs: &[&Self::T], dim: i64) -> Result<Self::T>;
    /// `len` entries of `dim` starting at `start`.
    fn narrow(&self, x: &Self::T, dim: i64, start: i64, len: i64) -> Result<Self::T>;

    /// `x + y`.
    fn add(&self, x: &Self::T, y: &Self::T) -> Result<Self::T>;
    /// `x − y`.
    fn sub(&self, x: &Self::T, y: &Self::T) -> Result<Self::T>;
    /// `x · y`.
    fn mul(&self, x: &Self::T, y: &Self::T) -> Result<Self::T>;
    /// `x · y` (broadcast) with every product rounded once to the operands' type, exactly as
    /// an eager f32 multiply, and protected from graph optimisers that re-associate it with
    /// neighbouring constant factors (tract folds `(t·c₁)·c₂` into `t·(c₁·c₂)`, which moves
    /// the Fourier embedding's argument `c_noise·2π·freqs`, up to ~1e5, by an ulp: ~4e-3 in
    /// its cos/sin). Eager backends: plain `mul`.
    fn mul_exact(&self, x: &Self::T, y: &Self::T) -> Result<Self::T>;
    /// `x / y`.
    fn div(&self, x: &Self::T, y: &Self::T) -> Result<Self::T>;
    /// `x + c`.
    fn add_scalar(&self, x: &Self::T, c: f64) -> Result<Self::T>;
    /// `x · c`.
    fn mul_scalar(&self, x: &Self::T, c: f64) -> Result<Self::T>;
    /// `c / x`.
    fn rdiv_scalar(&self, c: f64, x: &Self::T) -> Result<Self::T>;
    /// `x / c` as PyTorch divides a tensor by a Python float on the CPU: one correctly
    /// rounded quotient by `c` in the tensor's type (not a multiply by `1/c`, and not
    /// foldable by a graph optimiser into neighbouring constant factors).
    fn div_scalar(&self, x: &Self::T, c: f64) -> Result<Self::T>;

    /// Element-wise `exp`.
    fn exp(&self, x: &Self::T) -> Result<Self::T>;
    /// Element-wise natural log.
    fn log(&self, x: &Self::T) -> Result<Self::T>;
    /// Element-wise square root.
    fn sqrt(&self, x: &Self::T) -> Result<Self::T>;
    /// Element-wise square.
    fn square(&self, x: &Self::T) -> Result<Self::T>;
    /// Element-wise `cos`.
    fn cos(&self, x: &Self::T) -> Result<Self::T>;
    /// Element-wise `sin`.
    fn sin(&self, x: &Self::T) -> Result<Self::T>;
    /// `x` converted to f16 (EDMPrecond's `.to(torch.float16)`: the model input of a network
    /// run with `use_fp16`).
    fn to_f16(&self, x: &Self::T) -> Result<Self::T>;
    /// `x` converted to f32 (identity when it already is).
    fn to_f32(&self, x: &Self::T) -> Result<Self::T>;
    /// `x` converted to the element type of `like` (`x.to(like.dtype)`; identity when equal).
    fn cast_like(&self, x: &Self::T, like: &Self::T) -> Result<Self::T>;
    /// Element-wise `|x|`.
    fn abs(&self, x: &Self::T) -> Result<Self::T>;
    /// `x · sigmoid(x)`.
    fn silu(&self, x: &Self::T) -> Result<Self::T>;
    /// `1 / (1 + e^{−x})`.
    fn sigmoid(&self, x: &Self::T) -> Result<Self::T>;
    /// Clamp to `[lo, hi]`.
    fn clamp(&self, x: &Self::T, lo: f64, hi: f64) -> Result<Self::T>;
    /// Softmax along `dim`.
    fn softmax(&self, x: &Self::T, dim: i64) -> Result<Self::T>;
    /// Mean over `dims`, keeping them as size 1.
    fn mean_keepdim(&self, x: &Self::T, dims: &[i64]) -> Result<Self::T>;
    /// Index of the minimum along `dim` (as f32), dimension removed.
    fn argmin(&self, x: &Self::T, dim: i64) -> Result<Self::T>;
    /// Rows `idx` (f32 holding integers, shape [N]) of the 1-D `table`.
    fn gather_1d(&self, table: &Self::T, idx: &Self::T) -> Result<Self::T>;

    /// Batched matrix product `[.., n, k] × [.., k, m]`.
    fn matmul(&self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Attention with channels first, `q, k, v [N, C, T]` → `[N, C, T]`:
    /// `a[n,c,t] = Σ_s w[n,t,s]·v[n,c,s]` with `w[n,t,·] = softmax_s(Σ_c' q[n,c',t]·k[n,c',s]·qs·ks)`,
    /// where `qs`, `ks` scale q and k before the product as the official blocks do (EDM: k by
    /// C^-½; ADM: both by C^-¼). [`attention_composed`] computes it with matmul and softmax
    /// (the ONNX graph); an eager backend may fuse it — equal up to rounding.
    fn attention(&self, q: &Self::T, k: &Self::T, v: &Self::T, qs: f64, ks: f64) -> Result<Self::T>;
    /// `x · wᵀ (+ b)` for `w [out, in]`.
    fn linear(&self, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Result<Self::T>;
    /// 2-D convolution, `w [cout, cin/groups, k, k]`, zero padding.
    fn conv2d(
        &self,
        x: &Self::T,
        w: &Self::T,
        b: Option<&Self::T>,
        stride: i64,
        padding: i64,
        groups: i64,
    ) -> Result<Self::T>;
    /// 2-D transposed convolution, `w [cin, cout/groups, k, k]`.
    fn conv_transpose2d(
        &self,
        x: &Self::T,
        w: &Self::T,
        stride: i64,
        padding: i64,
        groups: i64,
    ) -> Result<Self::T>;
    /// Group normalisation (biased variance over each group's channels and pixels) with
    /// per-channel affine `w`, `b`.
    fn group_norm(&self, x: &Self::T, groups: i64, w: &Self::T, b: &Self::T, eps: f64) -> Result<Self::T>;
    /// `k×k` average pooling with stride `k`.
    fn avg_pool2d(&self, x: &Self::T, k: i64) -> Result<Self::T>;
    /// Dropout with probability `p` when `train` (identity otherwise).
    fn dropout(&self, x: &Self::T, p: f64, train: bool) -> Result<Self::T>;
    /// EDM's class-label dropout (SPEC §2.2): when `train` and `p > 0`,
    /// `labels · (rand([N, 1]) ≥ p)` in the labels' type, with `N` the first dimension of `x`
    /// and one `U(0,1)` draw per sample from the backend's generator on `x`'s device, taken
    /// at the call; `labels` unchanged otherwise. A backend without a generator (a graph
    /// recorder) fails when asked to draw.
    fn label_dropout(&self, labels: &Self::T, x: &Self::T, p: f64, train: bool) -> Result<Self::T>;

    /// `max(x, 0)`.
    fn relu(&self, x: &Self::T) -> Result<Self::T>;
    /// 2-D convolution (no groups) with a possibly non-square kernel `w [cout, cin, kh, kw]`,
    /// `stride = [sh, sw]` and symmetric zero padding `padding = [ph, pw]` (rows, columns).
    fn conv2d_hw(
        &self,
        x: &Self::T,
        w: &Self::T,
        b: Option<&Self::T>,
        stride: [i64; 2],
        padding: [i64; 2],
    ) -> Result<Self::T>;
    /// `k×k` max pooling with `stride` and symmetric `padding` (padded cells never win), floor
    /// output size `⌊(H + 2p − k)/s⌋ + 1`.
    fn max_pool2d(&self, x: &Self::T, k: i64, stride: i64, padding: i64) -> Result<Self::T>;
    /// `k×k` average pooling with `stride` and symmetric zero `padding`; with
    /// `count_include_pad = false` each window is divided by the number of its cells inside
    /// the input (PyTorch's / TF's "SAME" average), otherwise by `k²`.
    fn avg_pool2d_ext(
        &self,
        x: &Self::T,
        k: i64,
        stride: i64,
        padding: i64,
        count_include_pad: bool,
    ) -> Result<Self::T>;
}

/// The values of checkpoint entry `e` (views into `buf`) converted to f32.
pub fn stored_f32(buf: &Buffer, e: &TensorEntry) -> Result<Vec<f32>> {
    crate::vb::to_f32(e.dtype, &e.bytes_in(buf))
        .map_err(|err| ModelError::Config(format!("{}: {err}", e.name)))
}

/// [`Ops::attention`] as the official blocks compute it: scale q and k, `w = softmax(qᵀk)`
/// along the keys, `a = v·wᵀ` — two batched matrix products and a softmax.
pub fn attention_composed<O: Ops + ?Sized>(
    o: &O,
    q: &O::T,
    k: &O::T,
    v: &O::T,
    qs: f64,
    ks: f64,
) -> Result<O::T> {
    let scaled = |x: &O::T, s: f64| {
        if s == 1.0 {
            Ok(x.clone())
        } else {
            o.mul_scalar(x, s)
        }
    };
    let w = o.matmul(&o.permute(&scaled(q, qs)?, &[0, 2, 1])?, &scaled(k, ks)?)?;
    let w = o.softmax(&w, 2)?;
    o.matmul(v, &o.permute(&w, &[0, 2, 1])?)
}
