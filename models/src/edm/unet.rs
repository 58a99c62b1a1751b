//! The encoder–decoder skeleton SongUNet and DhariwalUNet share (SPEC §2.2, §2.3): the `enc`
//! and `dec` ModuleDicts with their keys, the channel bookkeeping and the skip connections.
//!
//! Encoder, level ℓ at `res = R >> ℓ`: `{res}x{res}_conv` (ℓ = 0) or `{res}x{res}_down`, then
//! `{res}x{res}_block{i}` for `i < num_blocks` (attention when `res ∈ attn_resolutions`).
//! Every non-aux entry pushes its output on the skip stack. Decoder, levels reversed:
//! `_in0` (attention) and `_in1` at the top level, `_up` elsewhere, then `_block{i}` for
//! `i ≤ num_blocks`, each taking `c + skips.pop()` channels.
//!
//! Where the two networks differ, the difference is named: [`FirstConvWidth`],
//! [`DecoderAttention`], and SongUNet's auxiliary entries, added through [`AuxLayers`].

use super::layers::{BlockOptions, BlockSpec, Conv2d, ConvOpts, EdmInit, GroupNorm, Resample, UNetBlock};
use crate::backend::Ops;
use crate::config::UNetConfig;
use crate::vb::Vb;
use crate::{ModelError, Result};

/// An entry of `enc`, in insertion order.
pub enum EncLayer<O: Ops> {
    /// `{res}x{res}_conv`: the input convolution.
    Conv(Conv2d<O>),
    /// `_down` or `_block{i}`.
    Block(Box<UNetBlock<O>>),
    /// SongUNet encoder `skip`: `_aux_down`, `aux = conv(aux)`.
    AuxDown(Conv2d<O>),
    /// SongUNet encoder `skip`: `_aux_skip`, `x = skips[-1] = x + conv(aux)`.
    AuxSkip(Conv2d<O>),
    /// SongUNet encoder `residual`: `_aux_residual`, `x = skips[-1] = aux = (x + conv(aux))/√2`.
    AuxResidual(Conv2d<O>),
}

/// An entry of `dec`, in insertion order.
pub enum DecLayer<O: Ops> {
    /// `_in0`, `_in1`, `_up` or `_block{i}`.
    Block(Box<UNetBlock<O>>),
    /// SongUNet decoder `skip`: `_aux_up`, `aux = conv(aux)`.
    AuxUp(Conv2d<O>),
    /// SongUNet output: `_aux_norm`, `tmp = norm(x)`.
    AuxNorm(GroupNorm<O>),
    /// SongUNet output: `_aux_conv`, `aux = conv(silu(tmp)) (+ aux)`.
    AuxConv(Conv2d<O>),
}

/// Output channels of `enc.{R}x{R}_conv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstConvWidth {
    /// SongUNet: `model_channels` (not ×`channel_mult[0]`).
    ModelChannels,
    /// DhariwalUNet: `model_channels · channel_mult[0]`.
    LevelWidth,
}

/// Which `_block{i}` of a decoder level in `attn_resolutions` attend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderAttention {
    /// SongUNet: only the last (`i == num_blocks`).
    LastBlock,
    /// DhariwalUNet: all of them.
    EveryBlock,
}

/// The auxiliary entries a network adds to the shared skeleton (SongUNet's encoder and
/// decoder types; DhariwalUNet adds none: [`NoAux`]).
pub trait AuxLayers<O: Ops> {
    /// Entries after `enc.{res}x{res}_down`, whose output has `c` channels.
    fn after_down(&mut self, enc: &Vb<O>, res: usize, c: usize) -> Result<Vec<EncLayer<O>>>;
    /// Entries after the decoder blocks of `level` (at `res`), whose output has `c` channels.
    fn after_level(&mut self, dec: &Vb<O>, level: usize, res: usize, c: usize) -> Result<Vec<DecLayer<O>>>;
}

/// No auxiliary entries.
pub struct NoAux;

impl<O: Ops> AuxLayers<O> for NoAux {
    fn after_down(&mut self, _: &Vb<O>, _: usize, _: usize) -> Result<Vec<EncLayer<O>>> {
        Ok(Vec::new())
    }
    fn after_level(&mut self, _: &Vb<O>, _: usize, _: usize, _: usize) -> Result<Vec<DecLayer<O>>> {
        Ok(Vec::new())
    }
}

/// The shared skeleton with one network's settings.
pub struct Skeleton<'a> {
    /// The shared arguments.
    pub cfg: &'a UNetConfig,
    /// The network's block kwargs.
    pub block: &'a BlockOptions,
    /// Init of `enc.{R}x{R}_conv`.
    pub conv_init: EdmInit,
    /// Width of `enc.{R}x{R}_conv`.
    pub first_conv: FirstConvWidth,
    /// Attention in the decoder blocks.
    pub decoder_attention: DecoderAttention,
}

impl Skeleton<'_> {
    fn block<O: Ops>(&self, vb: &Vb<O>, spec: BlockSpec) -> Result<Box<UNetBlock<O>>> {
        Ok(Box::new(UNetBlock::new(vb, &spec, self.block)?))
    }

    /// Requests `enc.*`: the entries, the skip-channel stack and the output channels.
    pub fn encoder<O: Ops>(
        &self,
        venc: &Vb<O>,
        aux: &mut impl AuxLayers<O>,
    ) -> Result<(Vec<EncLayer<O>>, Vec<usize>, usize)> {
        let cfg = self.cfg;
        let (mut enc, mut skips, mut c) = (Vec::new(), Vec::new(), cfg.in_channels);
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let res = cfg.img_resolution >> level;
            let key = |name: &str| venc.pp(format!("{res}x{res}_{name}"));
            if level == 0 {
                let cout = match self.first_conv {
                    FirstConvWidth::ModelChannels => cfg.model_channels,
                    FirstConvWidth::LevelWidth => cfg.model_channels * mult,
                };
                let conv = Conv2d::new(&key("conv"), c, cout, 3, &ConvOpts::plain(self.conv_init))?;
                enc.push(EncLayer::Conv(conv));
                c = cout;
                skips.push(c);
            } else {
                let down = BlockSpec::new(c, c, res).resample(Resample::Down);
                enc.push(EncLayer::Block(self.block(&key("down"), down)?));
                skips.push(c);
                enc.extend(aux.after_down(venc, res, c)?);
            }
            for i in 0..cfg.num_blocks {
                let spec = BlockSpec::new(c, cfg.model_channels * mult, res)
                    .attention(cfg.attn_resolutions.contains(&res));
                enc.push(EncLayer::Block(self.block(&key(&format!("block{i}")), spec)?));
                c = spec.out_channels;
                skips.push(c);
            }
        }
        Ok((enc, skips, c))
    }

    /// Requests `dec.*` given the encoder's skip stack and output channels: the entries and
    /// the output channels.
    pub fn decoder<O: Ops>(
        &self,
        vdec: &Vb<O>,
        mut skips: Vec<usize>,
        mut c: usize,
        aux: &mut impl AuxLayers<O>,
    ) -> Result<(Vec<DecLayer<O>>, usize)> {
        let cfg = self.cfg;
        let top = cfg.channel_mult.len().saturating_sub(1);
        let mut dec = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            let res = cfg.img_resolution >> level;
            let key = |name: &str| vdec.pp(format!("{res}x{res}_{name}"));
            if level == top {
                let in0 = BlockSpec::new(c, c, res).attention(true);
                dec.push(DecLayer::Block(self.block(&key("in0"), in0)?));
                dec.push(DecLayer::Block(
                    self.block(&key("in1"), BlockSpec::new(c, c, res))?,
                ));
            } else {
                let up = BlockSpec::new(c, c, res).resample(Resample::Up);
                dec.push(DecLayer::Block(self.block(&key("up"), up)?));
            }
            for i in 0..=cfg.num_blocks {
                let skip = skips
                    .pop()
                    .ok_or_else(|| ModelError::Config("skip stack underflow".into()))?;
                let attention = cfg.attn_resolutions.contains(&res)
                    && (self.decoder_attention == DecoderAttention::EveryBlock || i == cfg.num_blocks);
                let spec = BlockSpec::new(c + skip, cfg.model_channels * mult, res).attention(attention);
                dec.push(DecLayer::Block(self.block(&key(&format!("block{i}")), spec)?));
                c = spec.out_channels;
            }
            dec.extend(aux.after_level(vdec, level, res, c)?);
        }
        Ok((dec, c))
    }
}

/// Runs `enc` then `dec` on `x` (`in_channels` channels) with embedding `emb`: returns the
/// decoder's last activations and the aux output (`None` without `_aux_conv` entries).
pub fn run<O: Ops>(
    o: &O,
    enc: &[EncLayer<O>],
    dec: &[DecLayer<O>],
    x: &O::T,
    in_channels: usize,
    emb: &O::T,
    train: bool,
) -> Result<(O::T, Option<O::T>)> {
    let mut skips: Vec<O::T> = Vec::new();
    let mut c = in_channels;
    let mut x = x.clone();
    let mut aux = x.clone();
    let last = |skips: &mut Vec<O::T>, x: &O::T| {
        *skips.last_mut().expect("aux entries follow a `_down` block") = x.clone();
    };
    for layer in enc {
        match layer {
            EncLayer::Conv(conv) => {
                x = conv.forward(o, &x)?;
                c = conv.cout;
                skips.push(x.clone());
            }
            EncLayer::Block(block) => {
                x = block.forward(o, &x, emb, train)?;
                c = block.out_channels;
                skips.push(x.clone());
            }
            EncLayer::AuxDown(conv) => aux = conv.forward(o, &aux)?,
            EncLayer::AuxSkip(conv) => {
                x = o.add(&x, &conv.forward(o, &aux)?)?;
                last(&mut skips, &x);
            }
            EncLayer::AuxResidual(conv) => {
                x = o.mul_scalar(&o.add(&x, &conv.forward(o, &aux)?)?, 1.0 / 2f64.sqrt())?;
                last(&mut skips, &x);
                aux = x.clone();
            }
        }
    }
    let mut aux: Option<O::T> = None;
    let mut tmp: Option<O::T> = None;
    for layer in dec {
        match layer {
            DecLayer::Block(block) => {
                if c != block.in_channels {
                    let s = skips.pop().expect("skip stack matches construction");
                    x = o.concat(&[&x, &s], 1)?;
                }
                x = block.forward(o, &x, emb, train)?;
                c = block.out_channels;
            }
            DecLayer::AuxUp(conv) => {
                aux = Some(conv.forward(o, aux.as_ref().expect("aux_up after aux_conv"))?)
            }
            DecLayer::AuxNorm(norm) => tmp = Some(norm.forward(o, &x)?),
            DecLayer::AuxConv(conv) => {
                let t = conv.forward(o, &o.silu(tmp.as_ref().expect("aux_norm before aux_conv"))?)?;
                aux = Some(match &aux {
                    Some(a) => o.add(&t, a)?,
                    None => t,
                });
            }
        }
    }
    Ok((x, aux))
}
