//! ADM `EncoderUNetModel` (guided_diffusion, as TIW's `create_classifier` builds it): the
//! feature extractor (features after the middle block, or the 1000-way attention-pool
//! head) and the time-dependent discriminator (features → 1 logit), optionally
//! class-conditional through `label_emb`.
//!
//! Fresh initialisation (SPEC §2.5) is PyTorch's default for every Conv/Linear
//! ([`Init::torch_default`]), GroupNorm 1/0, `positional_embedding` = `randn/sqrt(C)`,
//! `label_emb` = N(0,1), and `zero_module` (drawn, then zeroed) for each ResBlock's
//! `out_layers.3` and each AttentionBlock's `proj_out`.

use crate::backend::Ops;
use crate::edm::layers::GroupNorm;
use crate::vb::{Init, Vb};
use crate::{ModelError, Result};

/// Architecture of an encoder (everything `create_classifier` fixes or receives).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Input resolution (32 or 64 for extractors, 8 for discriminators on features).
    pub image_size: usize,
    /// Input channels (3 for images, 512 for features).
    pub in_channels: usize,
    /// Base width (`classifier_width`).
    pub model_channels: usize,
    /// Head outputs (1000 for extractors, 1 for discriminators).
    pub out_channels: usize,
    /// Residual blocks per level (`classifier_depth`).
    pub num_res_blocks: usize,
    /// Width multipliers per level.
    pub channel_mult: Vec<usize>,
    /// Downsampling factors `ds` with attention.
    pub attention_ds: Vec<usize>,
    /// Channels per attention head.
    pub num_head_channels: usize,
    /// Number of classes of `label_emb` when conditional.
    pub num_class: Option<usize>,
}

impl EncoderConfig {
    /// `classifier_lib.load_classifier(path, image_size)` (feature extractor): width 128,
    /// depth 4 (32/64) else 2, attention at 32,16,8, 1000 outputs.
    pub fn feature_extractor(image_size: usize) -> Result<Self> {
        let channel_mult = Self::default_mult(image_size)?;
        Ok(EncoderConfig {
            image_size,
            in_channels: 3,
            model_channels: 128,
            out_channels: 1000,
            num_res_blocks: if image_size == 32 || image_size == 64 {
                4
            } else {
                2
            },
            channel_mult,
            attention_ds: [32, 16, 8].iter().map(|r| image_size / r).collect(),
            num_head_channels: 64,
            num_class: None,
        })
    }

    /// `classifier_lib.load_discriminator(path, device, condition, channel)`: image_size 8,
    /// width 128, depth 2, `channel` inputs, one output, optional 1000-class label embedding.
    pub fn discriminator(channel: usize, condition: bool) -> Self {
        EncoderConfig {
            image_size: 8,
            in_channels: channel,
            model_channels: 128,
            out_channels: 1,
            num_res_blocks: 2,
            channel_mult: vec![1],
            attention_ds: vec![0, 0, 1],
            num_head_channels: 64,
            num_class: condition.then_some(1000),
        }
    }

    fn default_mult(image_size: usize) -> Result<Vec<usize>> {
        Ok(match image_size {
            512 => vec![1, 1, 2, 2, 4, 4],
            256 => vec![1, 1, 2, 2, 4, 4],
            128 => vec![1, 1, 2, 3, 4],
            64 => vec![1, 2, 3, 4],
            32 => vec![1, 2, 4],
            16 => vec![1, 2],
            8 => vec![1],
            s => {
                return Err(ModelError::Config(format!(
                    "no default channel_mult for image size {s}"
                )))
            }
        })
    }

    /// Infers the architecture from state_dict names and shapes. `image_size` resolves the
    /// rare layouts that names alone leave ambiguous.
    pub fn infer(shape_of: &dyn Fn(&str) -> Option<Vec<usize>>, image_size: Option<usize>) -> Result<Self> {
        let need = |n: &str| shape_of(n).ok_or_else(|| ModelError::MissingParam(n.to_string()));
        let te = need("time_embed.0.weight")?;
        let conv = need("input_blocks.0.0.weight")?;
        let (model_channels, in_channels, ch0) = (te[1], conv[1], conv[0]);
        let pos = need("out.2.positional_embedding")?;
        let spatial = ((pos[1] - 1) as f64).sqrt().round() as usize;
        if spatial * spatial + 1 != pos[1] {
            return Err(ModelError::Config(format!(
                "positional_embedding has {} tokens, not S²+1",
                pos[1]
            )));
        }
        let out_channels = need("out.2.c_proj.weight")?[0];
        let num_class = shape_of("label_emb.weight").map(|s| s[0]);
        // Residual blocks of input_blocks 1.. : (cin, cout, attention heads).
        let mut blocks = Vec::new();
        for k in 1.. {
            let Some(w) = shape_of(&format!("input_blocks.{k}.0.in_layers.2.weight")) else {
                break;
            };
            let attn = shape_of(&format!("input_blocks.{k}.1.norm.weight")).is_some();
            blocks.push((w[1], w[0], attn));
        }
        let mut candidates = Vec::new();
        for levels in 1..=8usize {
            let b = blocks.len();
            if b + 1 < levels || (b + 1 - levels) % levels != 0 {
                continue;
            }
            let nrb = (b + 1 - levels) / levels;
            if nrb == 0 {
                continue;
            }
            let mut mult = Vec::new();
            let mut attention_ds = Vec::new();
            let mut ok = true;
            for l in 0..levels {
                let start = l * (nrb + 1);
                let lvl = &blocks[start..start + nrb];
                let cout = lvl[0].1;
                if lvl.iter().any(|x| x.1 != cout || x.2 != lvl[0].2) || cout % model_channels != 0 {
                    ok = false;
                    break;
                }
                mult.push(cout / model_channels);
                if lvl[0].2 {
                    attention_ds.push(1 << l);
                }
                if l + 1 < levels {
                    let d = blocks[start + nrb];
                    if d.0 != cout || d.1 != cout || d.2 {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok || mult[0] * model_channels != ch0 {
                continue;
            }
            let size = spatial << (levels - 1);
            if image_size.is_some_and(|s| s != size) {
                continue;
            }
            candidates.push(EncoderConfig {
                image_size: size,
                in_channels,
                model_channels,
                out_channels,
                num_res_blocks: nrb,
                channel_mult: mult,
                attention_ds,
                num_head_channels: 64,
                num_class,
            });
        }
        match candidates.len() {
            1 => Ok(candidates.pop().unwrap()),
            0 => Err(ModelError::Config(
                "the encoder's input_blocks do not match any EncoderUNetModel layout".into(),
            )),
            _ => Err(ModelError::Config(format!(
                "the encoder layout is ambiguous (image sizes {:?}); pass the image resolution",
                candidates.iter().map(|c| c.image_size).collect::<Vec<_>>()
            ))),
        }
    }
}

/// `1×1` Conv1d as a channel matmul: `W [out, in]·x [B, in, T] + b`.
struct Conv1x1<O: Ops> {
    w: O::T,
    b: O::T,
    cin: i64,
    cout: i64,
}

/// PyTorch's default init of a layer's (weight, bias) with `fan_in`, zeroed after drawing
/// when `zero`.
fn torch_inits(fan_in: usize, zero: bool) -> (Init, Init) {
    let (w, b) = (
        Init::torch_default(fan_in, true),
        Init::torch_default(fan_in, false),
    );
    if zero {
        (Init::Zeroed(Box::new(w)), Init::Zeroed(Box::new(b)))
    } else {
        (w, b)
    }
}

impl<O: Ops> Conv1x1<O> {
    fn new(vb: &Vb<O>, cin: usize, cout: usize, zero: bool) -> Result<Self> {
        let (iw, ib) = torch_inits(cin, zero);
        let w = vb.param_init("weight", &[cout, cin, 1], iw)?;
        let b = vb.param_init("bias", &[cout], ib)?;
        Ok(Conv1x1 {
            // kept as the parameter itself and reshaped at every call: a view made once at
            // construction would stop passing gradients to the parameter after the first
            // in-place optimiser update (libtorch view + no_grad in-place semantics)
            w,
            b,
            cin: cin as i64,
            cout: cout as i64,
        })
    }
    /// `[B, in, T]` → `[B, out, T]`, as a 1×1 Conv2d over `[B, in, T, 1]`.
    fn forward(&self, o: &O, x: &O::T, t: i64) -> Result<O::T> {
        let x4 = o.reshape(x, &[-1, self.cin, t, 1])?;
        let w = o.reshape(&self.w, &[self.cout, self.cin, 1, 1])?;
        let y = o.conv2d(&x4, &w, Some(&self.b), 1, 0, 1)?;
        o.reshape(&y, &[-1, self.cout, t])
    }
}

/// A 3×3 (padding 1) or 1×1 Conv2d with bias.
struct Conv<O: Ops> {
    w: O::T,
    b: O::T,
    pad: i64,
}

impl<O: Ops> Conv<O> {
    fn new(vb: &Vb<O>, cin: usize, cout: usize, k: usize, zero: bool) -> Result<Self> {
        let (iw, ib) = torch_inits(cin * k * k, zero);
        Ok(Conv {
            w: vb.param_init("weight", &[cout, cin, k, k], iw)?,
            b: vb.param_init("bias", &[cout], ib)?,
            pad: (k / 2) as i64,
        })
    }
    fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        o.conv2d(x, &self.w, Some(&self.b), 1, self.pad, 1)
    }
}

struct Linear<O: Ops> {
    w: O::T,
    b: O::T,
}

impl<O: Ops> Linear<O> {
    fn new(vb: &Vb<O>, cin: usize, cout: usize) -> Result<Self> {
        let (iw, ib) = torch_inits(cin, false);
        Ok(Linear {
            w: vb.param_init("weight", &[cout, cin], iw)?,
            b: vb.param_init("bias", &[cout], ib)?,
        })
    }
    fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        o.linear(x, &self.w, Some(&self.b))
    }
}

/// ResBlock with scale-shift norm and optional average-pool downsampling.
struct ResBlock<O: Ops> {
    in_norm: GroupNorm<O>,
    in_conv: Conv<O>,
    emb: Linear<O>,
    out_norm: GroupNorm<O>,
    out_conv: Conv<O>,
    skip: Option<Conv<O>>,
    down: bool,
    cout: usize,
}

impl<O: Ops> ResBlock<O> {
    fn new(vb: &Vb<O>, cin: usize, cout: usize, emb: usize, down: bool) -> Result<Self> {
        Ok(ResBlock {
            in_norm: GroupNorm::with_groups(&vb.pp("in_layers.0"), cin, 32, 1e-5)?,
            in_conv: Conv::new(&vb.pp("in_layers.2"), cin, cout, 3, false)?,
            emb: Linear::new(&vb.pp("emb_layers.1"), emb, 2 * cout)?,
            out_norm: GroupNorm::with_groups(&vb.pp("out_layers.0"), cout, 32, 1e-5)?,
            out_conv: Conv::new(&vb.pp("out_layers.3"), cout, cout, 3, true)?,
            skip: if cout != cin {
                Some(Conv::new(&vb.pp("skip_connection"), cin, cout, 1, false)?)
            } else {
                None
            },
            down,
            cout,
        })
    }
    fn forward(&self, o: &O, x: &O::T, emb: &O::T) -> Result<O::T> {
        let mut h = o.silu(&self.in_norm.forward(o, x)?)?;
        let mut x = x.clone();
        if self.down {
            h = o.avg_pool2d(&h, 2)?;
            x = o.avg_pool2d(&x, 2)?;
        }
        h = self.in_conv.forward(o, &h)?;
        let e = o.reshape(
            &self.emb.forward(o, &o.silu(emb)?)?,
            &[-1, 2 * self.cout as i64, 1, 1],
        )?;
        let c = self.cout as i64;
        let (scale, shift) = (o.narrow(&e, 1, 0, c)?, o.narrow(&e, 1, c, c)?);
        h = o.add(
            &o.mul(&self.out_norm.forward(o, &h)?, &o.add_scalar(&scale, 1.0)?)?,
            &shift,
        )?;
        h = self.out_conv.forward(o, &o.silu(&h)?)?;
        let s = match &self.skip {
            Some(sk) => sk.forward(o, &x)?,
            None => x,
        };
        o.add(&s, &h)
    }
}

/// `softmax(qᵀk·ch^-½)` attention over `q, k, v [B·heads, ch, T]` → `[B·heads, ch, T]`
/// (q and k each scaled by ch^-¼, as the official blocks do).
fn attend<O: Ops>(o: &O, q: &O::T, k: &O::T, v: &O::T, ch: usize) -> Result<O::T> {
    let scale = 1.0 / (ch as f64).sqrt().sqrt();
    o.attention(q, k, v, scale, scale)
}

/// Self-attention over pixels with legacy (per-head q|k|v) channel order.
struct AttentionBlock<O: Ops> {
    norm: GroupNorm<O>,
    qkv: Conv1x1<O>,
    proj: Conv1x1<O>,
    c: usize,
    heads: usize,
}

impl<O: Ops> AttentionBlock<O> {
    fn new(vb: &Vb<O>, c: usize, head_channels: usize) -> Result<Self> {
        Ok(AttentionBlock {
            norm: GroupNorm::with_groups(&vb.pp("norm"), c, 32, 1e-5)?,
            qkv: Conv1x1::new(&vb.pp("qkv"), c, 3 * c, false)?,
            proj: Conv1x1::new(&vb.pp("proj_out"), c, c, true)?,
            c,
            heads: (c / head_channels.max(1)).max(1),
        })
    }
    fn forward(&self, o: &O, x: &O::T, hw: usize) -> Result<O::T> {
        let (c, ch) = (self.c as i64, (self.c / self.heads) as i64);
        let t = hw as i64;
        let flat = o.reshape(x, &[-1, c, t])?;
        let qkv = self.qkv.forward(o, &self.norm.forward(o, &flat)?, t)?;
        let qkv = o.reshape(&qkv, &[-1, 3 * ch, t])?;
        let (q, k, v) = (
            o.narrow(&qkv, 1, 0, ch)?,
            o.narrow(&qkv, 1, ch, ch)?,
            o.narrow(&qkv, 1, 2 * ch, ch)?,
        );
        let a = o.reshape(&attend(o, &q, &k, &v, ch as usize)?, &[-1, c, t])?;
        let h = o.add(&flat, &self.proj.forward(o, &a, t)?)?;
        o.reshape(&h, &[-1, c, (hw as f64).sqrt() as i64, (hw as f64).sqrt() as i64])
    }
}

/// Attention pooling head: mean token + positional embedding, q|k|v attention, token 0.
struct AttentionPool<O: Ops> {
    pos: O::T,
    qkv: Conv1x1<O>,
    c_proj: Conv1x1<O>,
    c: usize,
    heads: usize,
    tokens: usize,
    out: usize,
}

impl<O: Ops> AttentionPool<O> {
    fn new(vb: &Vb<O>, spatial: usize, c: usize, head_channels: usize, out: usize) -> Result<Self> {
        let tokens = spatial * spatial + 1;
        let pos = vb.param_init(
            "positional_embedding",
            &[c, tokens],
            Init::RandnDiv((c as f64).powf(0.5)),
        )?;
        Ok(AttentionPool {
            pos,
            qkv: Conv1x1::new(&vb.pp("qkv_proj"), c, 3 * c, false)?,
            c_proj: Conv1x1::new(&vb.pp("c_proj"), c, out, false)?,
            c,
            heads: (c / head_channels.max(1)).max(1),
            tokens,
            out,
        })
    }
    fn forward(&self, o: &O, x: &O::T) -> Result<O::T> {
        let (c, t) = (self.c as i64, self.tokens as i64);
        let ch = c / self.heads as i64;
        let flat = o.reshape(x, &[-1, c, t - 1])?;
        let mean = o.mean_keepdim(&flat, &[2])?;
        let pos = o.reshape(&self.pos, &[1, c, t])?;
        let x = o.add(&o.concat(&[&mean, &flat], 2)?, &pos)?;
        let qkv = self.qkv.forward(o, &x, t)?;
        let part = |i: i64| -> Result<O::T> { o.reshape(&o.narrow(&qkv, 1, i * c, c)?, &[-1, ch, t]) };
        let a = attend(o, &part(0)?, &part(1)?, &part(2)?, ch as usize)?;
        let y = self.c_proj.forward(o, &o.reshape(&a, &[-1, c, t])?, t)?;
        o.reshape(&o.narrow(&y, 2, 0, 1)?, &[-1, self.out as i64])
    }
}

enum Block<O: Ops> {
    Res(ResBlock<O>, Option<AttentionBlock<O>>, usize),
}

/// `EncoderUNetModel` with weights.
pub struct EncoderUNet<O: Ops> {
    time0: Linear<O>,
    time2: Linear<O>,
    freqs: O::T,
    label_emb: Option<O::T>,
    conv_in: Conv<O>,
    blocks: Vec<Block<O>>,
    middle: (ResBlock<O>, AttentionBlock<O>, ResBlock<O>, usize),
    out_norm: GroupNorm<O>,
    pool: AttentionPool<O>,
    /// The configuration.
    pub cfg: EncoderConfig,
}

/// Outputs of [`EncoderUNet::forward`].
pub struct EncoderOut<T> {
    /// Features after the middle block `[N, C, S, S]`.
    pub features: T,
    /// Head output `[N, out]` (absent when only features were asked for).
    pub logits: Option<T>,
}

impl<O: Ops> EncoderUNet<O> {
    /// Requests all tensors in registration order.
    pub fn new(vb: &Vb<O>, cfg: &EncoderConfig) -> Result<Self> {
        let o = vb.ops();
        let mc = cfg.model_channels;
        let emb = 4 * mc;
        let time0 = Linear::new(&vb.pp("time_embed.0"), mc, emb)?;
        let time2 = Linear::new(&vb.pp("time_embed.2"), emb, emb)?;
        let label_emb = match cfg.num_class {
            Some(n) => Some(
                vb.pp("label_emb")
                    .param_init("weight", &[n, emb], Init::RandnMul(1.0))?,
            ),
            None => None,
        };
        let mut ch = cfg.channel_mult[0] * mc;
        let conv_in = Conv::new(&vb.pp("input_blocks.0.0"), cfg.in_channels, ch, 3, false)?;
        let mut blocks = Vec::new();
        let mut ds = 1;
        let mut k = 1;
        let mut res = cfg.image_size;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.num_res_blocks {
                let b = vb.pp(format!("input_blocks.{k}"));
                let rb = ResBlock::new(&b.pp("0"), ch, mult * mc, emb, false)?;
                ch = mult * mc;
                let at = if cfg.attention_ds.contains(&ds) {
                    Some(AttentionBlock::new(&b.pp("1"), ch, cfg.num_head_channels)?)
                } else {
                    None
                };
                blocks.push(Block::Res(rb, at, res));
                k += 1;
            }
            if level + 1 != cfg.channel_mult.len() {
                let rb = ResBlock::new(&vb.pp(format!("input_blocks.{k}.0")), ch, ch, emb, true)?;
                res /= 2;
                blocks.push(Block::Res(rb, None, res));
                ds *= 2;
                k += 1;
            }
        }
        let middle = (
            ResBlock::new(&vb.pp("middle_block.0"), ch, ch, emb, false)?,
            AttentionBlock::new(&vb.pp("middle_block.1"), ch, cfg.num_head_channels)?,
            ResBlock::new(&vb.pp("middle_block.2"), ch, ch, emb, false)?,
            res,
        );
        let out_norm = GroupNorm::with_groups(&vb.pp("out.0"), ch, 32, 1e-5)?;
        let pool = AttentionPool::new(
            &vb.pp("out.2"),
            cfg.image_size / ds,
            ch,
            cfg.num_head_channels,
            cfg.out_channels,
        )?;
        // exp(−ln(10000)·k / half), evaluated with the backend's own exp so that the
        // large time arguments (t·999) round exactly as in PyTorch.
        let half = mc / 2;
        let k: Vec<f32> = (0..half).map(|k| k as f32).collect();
        let scaled = o.mul_scalar(&o.constant(&k, &[1, half])?, -(10000f64.ln()))?;
        let freqs = o.exp(&o.div(&scaled, &o.constant(&[half as f32], &[1])?)?)?;
        Ok(EncoderUNet {
            time0,
            time2,
            freqs,
            label_emb,
            conv_in,
            blocks,
            middle,
            out_norm,
            pool,
            cfg: cfg.clone(),
        })
    }

    /// `x [N, in, S, S]`, continuous time `t [N]` in (0, 1] (×999 inside), optional one-hot
    /// `condition [N, num_class]`. With `head` false only the features are computed.
    pub fn forward(
        &self,
        o: &O,
        x: &O::T,
        t: &O::T,
        condition: Option<&O::T>,
        head: bool,
    ) -> Result<EncoderOut<O::T>> {
        let args = o.mul(&o.reshape(&o.mul_scalar(t, 999.0)?, &[-1, 1])?, &self.freqs)?;
        let temb = o.concat(&[&o.cos(&args)?, &o.sin(&args)?], 1)?;
        let mut emb = self.time2.forward(o, &o.silu(&self.time0.forward(o, &temb)?)?)?;
        if let (Some(w), Some(c)) = (&self.label_emb, condition) {
            emb = o.add(&emb, &o.matmul(c, w)?)?;
        }
        let mut h = self.conv_in.forward(o, x)?;
        for Block::Res(rb, at, res) in &self.blocks {
            h = rb.forward(o, &h, &emb)?;
            if let Some(a) = at {
                h = a.forward(o, &h, res * res)?;
            }
        }
        let (m0, m1, m2, res) = &self.middle;
        h = m0.forward(o, &h, &emb)?;
        h = m1.forward(o, &h, res * res)?;
        h = m2.forward(o, &h, &emb)?;
        let logits = if head {
            Some(self.pool.forward(o, &o.silu(&self.out_norm.forward(o, &h)?)?)?)
        } else {
            None
        };
        Ok(EncoderOut { features: h, logits })
    }
}
