//! EDM building blocks (SPEC §2.1): Linear, Conv2d with FIR up/down-sampling, GroupNorm,
//! positional and Fourier embeddings, and the UNet block with optional self-attention.
//! Tensors are requested from the [`Vb`] in PyTorch registration order.

use crate::backend::Ops;
use crate::vb::{Init, InitMode, Vb};
use crate::Result;

/// EDM's per-layer init kwargs: `init_mode`, `init_weight`, `init_bias` (SPEC §2.1). The
/// default is the layers' own default (`kaiming_normal`, 1, 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdmInit {
    /// `init_mode`.
    pub mode: InitMode,
    /// `init_weight`.
    pub weight: f64,
    /// `init_bias`.
    pub bias: f64,
}

impl Default for EdmInit {
    fn default() -> Self {
        EdmInit {
            mode: InitMode::KaimingNormal,
            weight: 1.0,
            bias: 0.0,
        }
    }
}

impl EdmInit {
    /// `mode` with `init_weight` = `weight`, `init_bias` 0.
    pub fn new(mode: InitMode, weight: f64) -> Self {
        EdmInit {
            mode,
            weight,
            bias: 0.0,
        }
    }
    fn weight(&self, fan_in: usize, fan_out: usize) -> Init {
        Init::Edm {
            mode: self.mode,
            fan_in,
            fan_out,
            gain: self.weight,
        }
    }
    fn bias(&self, fan_in: usize, fan_out: usize) -> Init {
        Init::Edm {
            mode: self.mode,
            fan_in,
            fan_out,
            gain: self.bias,
        }
    }
}

/// `y = x·Wᵀ + b`, `weight [out, in]`, `bias [out]`.
pub struct Linear<O: Ops> {
    w: O::T,
    b: Option<O::T>,
    /// Input features.
    pub in_features: usize,
}

impl<O: Ops> Linear<O> {
    /// Requests `weight` (and `bias`) with EDM's default init.
    pub fn new(vb: &Vb<O>, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        Self::with_init(vb, cin, cout, bias, &EdmInit::default())
    }
    /// Requests `weight` (and `bias`) initialised as `init` (fans `cin`, `cout`).
    pub fn with_init(vb: &Vb<O>, cin: usize, cout: usize, bias: bool, init: &EdmInit) -> Result<Self> {
        let w = vb.param_init("weight", &[cout, cin], init.weight(cin, cout))?;
        let b = if bias {
            Some(vb.param_init("bias", &[cout], init.bias(cin, cout))?)
        } else {
            None
        };
        Ok(Linear {
            w,
            b,
            in_features: cin,
        })
    }
    /// Applies the layer (matmul, then bias add, as EDM does).
    pub fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        let y = o.linear(x, &self.w, None)?;
        match &self.b {
            Some(b) => o.add(&y, b),
            None => Ok(y),
        }
    }
}

/// The normalised 2-D FIR filter `outer(r, r) / (Σr)²` of 1-D taps `r`, row-major.
pub fn resample_filter(taps: &[f32]) -> Vec<f32> {
    let s: f32 = taps.iter().sum();
    let mut out = Vec::with_capacity(taps.len() * taps.len());
    for a in taps {
        for b in taps {
            out.push(a * b / (s * s));
        }
    }
    out
}

/// Conv2d of EDM: optional weight (kernel 0 = none), optional bias, optional FIR ×2
/// up/down-sampling (separate or fused with the convolution), bias added after.
pub struct Conv2d<O: Ops> {
    w: Option<O::T>,
    b: Option<O::T>,
    filter: Option<O::T>,
    up: bool,
    down: bool,
    fused: bool,
    cin: usize,
    pub(crate) cout: usize,
    w_pad: i64,
    f_pad: i64,
}

/// Options of [`Conv2d::new`].
#[derive(Debug, Clone, Default)]
pub struct ConvOpts {
    /// Upsample ×2 before the convolution.
    pub up: bool,
    /// Downsample ×2 before (or, fused, after) the convolution.
    pub down: bool,
    /// Fuse the resampling with the convolution (NCSN++ `aux_residual`).
    pub fused: bool,
    /// 1-D taps of the resampling filter.
    pub filter: Vec<f32>,
    /// No bias.
    pub no_bias: bool,
    /// Initialisation of weight and bias (fans `cin·k²`, `cout·k²`).
    pub init: EdmInit,
}

impl ConvOpts {
    /// No resampling, initialised as `init`.
    pub fn plain(init: EdmInit) -> Self {
        ConvOpts {
            init,
            ..Default::default()
        }
    }
    /// Resampling per `resample` with `filter` taps (not fused), initialised as `init`.
    pub fn resample(resample: Resample, filter: &[f32], init: EdmInit) -> Self {
        ConvOpts {
            up: resample == Resample::Up,
            down: resample == Resample::Down,
            filter: filter.to_vec(),
            init,
            ..Default::default()
        }
    }
}

impl<O: Ops> Conv2d<O> {
    /// Requests `weight [cout, cin, k, k]` (if k > 0), `bias [cout]`, buffer
    /// `resample_filter [1, 1, L, L]` (if up or down).
    pub fn new(vb: &Vb<O>, cin: usize, cout: usize, kernel: usize, opts: &ConvOpts) -> Result<Self> {
        let o = vb.ops();
        let (fi, fo) = (cin * kernel * kernel, cout * kernel * kernel);
        let w = if kernel > 0 {
            Some(vb.param_init("weight", &[cout, cin, kernel, kernel], opts.init.weight(fi, fo))?)
        } else {
            None
        };
        let b = if kernel > 0 && !opts.no_bias {
            Some(vb.param_init("bias", &[cout], opts.init.bias(fi, fo))?)
        } else {
            None
        };
        let taps = if opts.filter.is_empty() {
            vec![1.0, 1.0]
        } else {
            opts.filter.clone()
        };
        let l = taps.len();
        let mut f_pad = 0;
        let filter = if opts.up || opts.down {
            let init = resample_filter(&taps);
            let f = vb.buffer("resample_filter", &[1, 1, l, l], Some(&init))?;
            f_pad = ((l - 1) / 2) as i64;
            // Depthwise filter tiled over the channels it is applied to; ×4 for upsampling.
            let (ch, gain) = if opts.fused && opts.down {
                (cout, 1.0)
            } else if opts.up {
                (cin, 4.0)
            } else {
                (cin, 1.0)
            };
            let ones = o.constant(&vec![gain; ch], &[ch, 1, 1, 1])?;
            Some(o.mul(&ones, &f)?)
        } else {
            None
        };
        Ok(Conv2d {
            w,
            b,
            filter,
            up: opts.up,
            down: opts.down,
            fused: opts.fused,
            cin,
            cout,
            w_pad: (kernel / 2) as i64,
            f_pad,
        })
    }

    /// Applies the layer. The bias is added after the last convolution, as EDM does; it is
    /// passed to that convolution (one fused pass instead of a separate broadcast add).
    pub fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        let mut x = x.clone();
        let b = self.b.as_ref();
        if let (true, true, Some(w)) = (self.fused, self.down, &self.w) {
            x = o.conv2d(&x, w, None, 1, self.w_pad + self.f_pad, 1)?;
            x = o.conv2d(
                &x,
                self.filter.as_ref().expect("resampling conv has a filter"),
                b,
                2,
                0,
                self.cout as i64,
            )?;
        } else {
            if self.up {
                x = o.conv_transpose2d(&x, self.filter.as_ref().unwrap(), 2, self.f_pad, self.cin as i64)?;
            }
            if self.down {
                x = o.conv2d(
                    &x,
                    self.filter.as_ref().unwrap(),
                    None,
                    2,
                    self.f_pad,
                    self.cin as i64,
                )?;
            }
            if let Some(w) = &self.w {
                // a bias exists only with a weight (kernel > 0)
                x = o.conv2d(&x, w, b, 1, self.w_pad, 1)?;
            }
        }
        Ok(x)
    }
}

/// GroupNorm with `min(num_groups, C / min_channels_per_group)` groups and affine
/// `weight [C]`, `bias [C]`.
pub struct GroupNorm<O: Ops> {
    w: O::T,
    b: O::T,
    groups: i64,
    eps: f64,
}

impl<O: Ops> GroupNorm<O> {
    /// Requests `weight`, `bias` (32 groups max, ≥ 4 channels per group).
    pub fn new(vb: &Vb<O>, c: usize, eps: f64) -> Result<Self> {
        Self::with_groups(vb, c, 32.min(c / 4).max(1), eps)
    }
    /// Requests `weight`, `bias` with an explicit group count.
    pub fn with_groups(vb: &Vb<O>, c: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(GroupNorm {
            w: vb.param_init("weight", &[c], Init::Const(1.0))?,
            b: vb.param_init("bias", &[c], Init::Const(0.0))?,
            groups: groups as i64,
            eps,
        })
    }
    /// Applies the normalisation.
    pub fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        o.group_norm(x, self.groups, &self.w, &self.b, self.eps)
    }
}

/// `[cos(x·f), sin(x·f)]` with `f_j = (1/max_positions)^(j / (C/2 − endpoint))` (no params);
/// the table is computed in f32 as PyTorch does.
pub fn positional_freqs(channels: usize, endpoint: bool) -> Vec<f32> {
    let half = channels / 2;
    let denom = (half - usize::from(endpoint)) as f32;
    (0..half)
        .map(|j| (1.0f32 / 10000.0).powf(j as f32 / denom))
        .collect()
}

/// Noise embedding: positional (fixed frequencies) or Fourier (buffer `freqs`).
pub enum NoiseEmbedding<O: Ops> {
    /// `PositionalEmbedding`: frequencies as a constant `[1, C/2]`.
    Positional(O::T),
    /// `FourierEmbedding`: `2π·freqs` as `[1, C/2]`.
    Fourier(O::T),
}

impl<O: Ops> NoiseEmbedding<O> {
    /// Positional embedding of `channels` (no tensors requested).
    pub fn positional(o: &O, channels: usize, endpoint: bool) -> Result<Self> {
        let f = positional_freqs(channels, endpoint);
        Ok(NoiseEmbedding::Positional(o.constant(&f, &[1, f.len()])?))
    }
    /// Fourier embedding: requests buffer `freqs [C/2]` (initialised `16·N(0,1)`).
    pub fn fourier(vb: &Vb<O>, channels: usize) -> Result<Self> {
        let o = vb.ops();
        let f = vb.buffer_random("freqs", &[channels / 2], Init::RandnMul(16.0))?;
        let f = o.mul_scalar(&o.reshape(&f, &[1, -1])?, 2.0 * std::f64::consts::PI)?;
        Ok(NoiseEmbedding::Fourier(f))
    }
    /// `x [N]` → `[N, C]` = `[cos(x·f), sin(x·f)]`.
    pub fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        let f = match self {
            NoiseEmbedding::Positional(f) | NoiseEmbedding::Fourier(f) => f,
        };
        let arg = o.mul_exact(&o.reshape(x, &[-1, 1])?, f)?;
        o.concat(&[&o.cos(&arg)?, &o.sin(&arg)?], 1)
    }
}

/// Resampling ×2 of a UNet block's `conv0` and `skip` (EDM's `up` / `down` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resample {
    /// Same resolution.
    #[default]
    None,
    /// Upsample ×2 (`up=True`).
    Up,
    /// Downsample ×2 (`down=True`).
    Down,
}

/// What varies from one UNet block to the next (EDM's `UNetBlock(in_channels, out_channels,
/// up, down, attention, …)`); the rest is the network's [`BlockOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// `in_channels`.
    pub in_channels: usize,
    /// `out_channels`.
    pub out_channels: usize,
    /// Output resolution (static; the attention reshapes use it).
    pub resolution: usize,
    /// `up` / `down`.
    pub resample: Resample,
    /// `attention`.
    pub attention: bool,
}

impl BlockSpec {
    /// `cin → cout` at resolution `res`, no resampling, no attention.
    pub fn new(cin: usize, cout: usize, res: usize) -> Self {
        BlockSpec {
            in_channels: cin,
            out_channels: cout,
            resolution: res,
            resample: Resample::None,
            attention: false,
        }
    }
    /// The same block with `resample`.
    pub fn resample(self, resample: Resample) -> Self {
        BlockSpec { resample, ..self }
    }
    /// The same block with self-attention when `on`.
    pub fn attention(self, on: bool) -> Self {
        BlockSpec {
            attention: on,
            ..self
        }
    }
}

/// EDM's per-network UNet block kwargs (`block_kwargs`; SPEC §2.2 and §2.3 give each
/// network's values).
#[derive(Debug, Clone)]
pub struct BlockOptions {
    /// `emb_channels`.
    pub emb_channels: usize,
    /// `num_heads` (SongUNet: 1) or `None` = `out_channels / channels_per_head`.
    pub num_heads: Option<usize>,
    /// `channels_per_head`, used when `num_heads` is `None`.
    pub channels_per_head: usize,
    /// `dropout` probability (training only).
    pub dropout: f64,
    /// `skip_scale`: the residual sums are multiplied by it.
    pub skip_scale: f64,
    /// GroupNorm `eps`.
    pub eps: f64,
    /// `resample_filter` taps.
    pub resample_filter: Vec<f32>,
    /// `resample_proj`: a 1×1 projection on resampling skips.
    pub resample_proj: bool,
    /// `adaptive_scale`: scale-and-shift conditioning (`affine` has 2·cout rows).
    pub adaptive_scale: bool,
    /// `init` of conv0, affine and skip.
    pub init: EdmInit,
    /// `init_zero` of conv1 and proj.
    pub init_zero: EdmInit,
    /// `init_attn` of qkv (SongUNet; DhariwalUNet passes `init`).
    pub init_attn: EdmInit,
}

/// EDM's UNet block: GroupNorm–SiLU–Conv, embedding conditioning, GroupNorm–SiLU–Dropout–Conv,
/// skip connection, optional multi-head self-attention (SPEC §2.1).
pub struct UNetBlock<O: Ops> {
    norm0: GroupNorm<O>,
    conv0: Conv2d<O>,
    affine: Linear<O>,
    norm1: GroupNorm<O>,
    conv1: Conv2d<O>,
    skip: Option<Conv2d<O>>,
    attn: Option<Attention<O>>,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    res: usize,
    dropout: f64,
    skip_scale: f64,
    adaptive_scale: bool,
}

/// The attention children of a [`UNetBlock`]: `norm2`, `qkv`, `proj` and the head count.
struct Attention<O: Ops> {
    norm2: GroupNorm<O>,
    qkv: Conv2d<O>,
    proj: Conv2d<O>,
    num_heads: usize,
}

impl<O: Ops> UNetBlock<O> {
    /// Requests `norm0, conv0, affine, norm1, conv1, [skip], [norm2, qkv, proj]`.
    pub fn new(vb: &Vb<O>, spec: &BlockSpec, opts: &BlockOptions) -> Result<Self> {
        let (cin, cout) = (spec.in_channels, spec.out_channels);
        let resampled = ConvOpts::resample(spec.resample, &opts.resample_filter, opts.init);
        let num_heads = match spec.attention {
            false => 0,
            true => opts.num_heads.unwrap_or(cout / opts.channels_per_head),
        };
        let affine_rows = cout * if opts.adaptive_scale { 2 } else { 1 };
        let norm0 = GroupNorm::new(&vb.pp("norm0"), cin, opts.eps)?;
        let conv0 = Conv2d::new(&vb.pp("conv0"), cin, cout, 3, &resampled)?;
        let affine = Linear::with_init(&vb.pp("affine"), opts.emb_channels, affine_rows, true, &opts.init)?;
        let norm1 = GroupNorm::new(&vb.pp("norm1"), cout, opts.eps)?;
        let conv1 = Conv2d::new(&vb.pp("conv1"), cout, cout, 3, &ConvOpts::plain(opts.init_zero))?;
        let skip = if cout != cin || spec.resample != Resample::None {
            let kernel = if opts.resample_proj || cout != cin { 1 } else { 0 };
            Some(Conv2d::new(&vb.pp("skip"), cin, cout, kernel, &resampled)?)
        } else {
            None
        };
        let attn = if num_heads > 0 {
            Some(Attention {
                norm2: GroupNorm::new(&vb.pp("norm2"), cout, opts.eps)?,
                qkv: Conv2d::new(&vb.pp("qkv"), cout, cout * 3, 1, &ConvOpts::plain(opts.init_attn))?,
                proj: Conv2d::new(&vb.pp("proj"), cout, cout, 1, &ConvOpts::plain(opts.init_zero))?,
                num_heads,
            })
        } else {
            None
        };
        Ok(UNetBlock {
            norm0,
            conv0,
            affine,
            norm1,
            conv1,
            skip,
            attn,
            in_channels: cin,
            out_channels: cout,
            res: spec.resolution,
            dropout: opts.dropout,
            skip_scale: opts.skip_scale,
            adaptive_scale: opts.adaptive_scale,
        })
    }

    /// `x [N, cin, H, W]`, `emb [N, E]` → `[N, cout, res, res]`.
    pub fn forward(&self, o: &O, x: &O::T, emb: &O::T, train: bool) -> Result<O::T> {
        let orig = x;
        let mut h = self.conv0.forward(o, &o.silu(&self.norm0.forward(o, x)?)?)?;
        // the embedding path stays f32; its conditioning joins the activations in their type
        let params = o.cast_like(
            &o.reshape(
                &self.affine.forward(o, emb)?,
                &[-1, self.affine_rows() as i64, 1, 1],
            )?,
            &h,
        )?;
        if self.adaptive_scale {
            let c = self.out_channels as i64;
            let scale = o.narrow(&params, 1, 0, c)?;
            let shift = o.narrow(&params, 1, c, c)?;
            let n = self.norm1.forward(o, &h)?;
            h = o.silu(&o.add(&shift, &o.mul(&n, &o.add_scalar(&scale, 1.0)?)?)?)?;
        } else {
            h = o.silu(&self.norm1.forward(o, &o.add(&h, &params)?)?)?;
        }
        h = self.conv1.forward(o, &o.dropout(&h, self.dropout, train)?)?;
        let s = match &self.skip {
            Some(sk) => sk.forward(o, orig)?,
            None => orig.clone(),
        };
        h = o.mul_scalar(&o.add(&h, &s)?, self.skip_scale)?;
        if let Some(Attention {
            norm2,
            qkv,
            proj,
            num_heads,
        }) = &self.attn
        {
            let c = self.out_channels as i64;
            let heads = *num_heads as i64;
            let ch = c / heads;
            let hw = (self.res * self.res) as i64;
            // qkv channels are ordered (head, channel, {q,k,v}).
            let t = o.reshape(&qkv.forward(o, &norm2.forward(o, &h)?)?, &[-1, ch, 3, hw])?;
            let q = o.reshape(&o.narrow(&t, 2, 0, 1)?, &[-1, ch, hw])?;
            let k = o.reshape(&o.narrow(&t, 2, 1, 1)?, &[-1, ch, hw])?;
            let v = o.reshape(&o.narrow(&t, 2, 2, 1)?, &[-1, ch, hw])?;
            // a[n, c, q] = Σ_k w[n,q,k]·v[n,c,k], w[n, q, ·] = softmax_k Σ_c q[n,c,q]·k[n,c,k]/√ch
            let a = o.attention(&q, &k, &v, 1.0, 1.0 / (ch as f64).sqrt())?;
            let a = o.reshape(&a, &[-1, c, self.res as i64, self.res as i64])?;
            h = o.mul_scalar(&o.add(&proj.forward(o, &a)?, &h)?, self.skip_scale)?;
        }
        Ok(h)
    }

    fn affine_rows(&self) -> usize {
        self.out_channels * if self.adaptive_scale { 2 } else { 1 }
    }
}
