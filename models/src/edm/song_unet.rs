//! SongUNet: the DDPM++ / NCSN++ backbone (SPEC §2.2).

use super::layers::{BlockCfg, Conv2d, ConvOpts, EdmInit, GroupNorm, Linear, NoiseEmbedding, UNetBlock};
use crate::backend::Ops;
use crate::config::{DecoderType, EmbeddingType, EncoderType, SongConfig};
use crate::vb::{InitMode, Vb};
use crate::Result;

#[allow(clippy::large_enum_variant)] // built once per network
enum Enc<O: Ops> {
    Conv(Conv2d<O>),
    Block(UNetBlock<O>),
    AuxDown(Conv2d<O>),
    AuxSkip(Conv2d<O>),
    AuxResidual(Conv2d<O>),
}

#[allow(clippy::large_enum_variant)] // built once per network
enum Dec<O: Ops> {
    Block(UNetBlock<O>),
    AuxUp(Conv2d<O>),
    AuxNorm(GroupNorm<O>),
    AuxConv(Conv2d<O>),
}

/// SongUNet with weights.
pub struct SongUNet<O: Ops> {
    map_noise: NoiseEmbedding<O>,
    map_label: Option<Linear<O>>,
    map_augment: Option<Linear<O>>,
    map_layer0: Linear<O>,
    map_layer1: Linear<O>,
    enc: Vec<Enc<O>>,
    dec: Vec<Dec<O>>,
    cfg: SongConfig,
}

impl<O: Ops> SongUNet<O> {
    /// Requests every tensor under `vb` in registration order.
    pub fn new(vb: &Vb<O>, cfg: &SongConfig) -> Result<Self> {
        let o = vb.ops();
        let emb_ch = cfg.model_channels * cfg.channel_mult_emb;
        let noise_ch = cfg.model_channels * cfg.channel_mult_noise;
        // init = xavier_uniform; init_zero = ×1e-5; init_attn = ×sqrt(0.2) (SPEC §2.2)
        let init = EdmInit::new(InitMode::XavierUniform, 1.0);
        let init_zero = EdmInit::new(InitMode::XavierUniform, 1e-5);
        let init_attn = EdmInit::new(InitMode::XavierUniform, 0.2f64.sqrt());
        let bcfg = BlockCfg {
            emb_channels: emb_ch,
            num_heads: Some(1),
            channels_per_head: 64,
            dropout: cfg.dropout,
            skip_scale: 0.5f64.sqrt(),
            eps: 1e-6,
            filter: cfg.resample_filter.clone(),
            resample_proj: true,
            adaptive_scale: false,
            init,
            init_zero,
            init_attn,
        };
        let map_noise = match cfg.embedding_type {
            EmbeddingType::Positional => NoiseEmbedding::positional(o, noise_ch, true)?,
            EmbeddingType::Fourier => NoiseEmbedding::fourier(&vb.pp("map_noise"), noise_ch)?,
        };
        let map_label = if cfg.label_dim > 0 {
            Some(Linear::with_init(
                &vb.pp("map_label"),
                cfg.label_dim,
                noise_ch,
                true,
                &init,
            )?)
        } else {
            None
        };
        let map_augment = if cfg.augment_dim > 0 {
            Some(Linear::with_init(
                &vb.pp("map_augment"),
                cfg.augment_dim,
                noise_ch,
                false,
                &init,
            )?)
        } else {
            None
        };
        let map_layer0 = Linear::with_init(&vb.pp("map_layer0"), noise_ch, emb_ch, true, &init)?;
        let map_layer1 = Linear::with_init(&vb.pp("map_layer1"), emb_ch, emb_ch, true, &init)?;

        let filt = |down: bool, up: bool, fused: bool| ConvOpts {
            up,
            down,
            fused,
            filter: cfg.resample_filter.clone(),
            no_bias: false,
            init,
        };
        let plain = |init: EdmInit| ConvOpts {
            init,
            ..Default::default()
        };
        let venc = vb.pp("enc");
        let mut enc = Vec::new();
        let mut skips = Vec::new();
        let mut cout = cfg.in_channels;
        let mut caux = cfg.in_channels;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let res = cfg.img_resolution >> level;
            if level == 0 {
                let cin = cout;
                cout = cfg.model_channels;
                enc.push(Enc::Conv(Conv2d::new(
                    &venc.pp(format!("{res}x{res}_conv")),
                    cin,
                    cout,
                    3,
                    &plain(init),
                )?));
                skips.push(cout);
            } else {
                enc.push(Enc::Block(UNetBlock::new(
                    &venc.pp(format!("{res}x{res}_down")),
                    cout,
                    cout,
                    res,
                    false,
                    true,
                    false,
                    &bcfg,
                )?));
                skips.push(cout);
                if cfg.encoder_type == EncoderType::Skip {
                    enc.push(Enc::AuxDown(Conv2d::new(
                        &venc.pp(format!("{res}x{res}_aux_down")),
                        caux,
                        caux,
                        0,
                        &filt(true, false, false),
                    )?));
                    enc.push(Enc::AuxSkip(Conv2d::new(
                        &venc.pp(format!("{res}x{res}_aux_skip")),
                        caux,
                        cout,
                        1,
                        &plain(init),
                    )?));
                }
                if cfg.encoder_type == EncoderType::Residual {
                    enc.push(Enc::AuxResidual(Conv2d::new(
                        &venc.pp(format!("{res}x{res}_aux_residual")),
                        caux,
                        cout,
                        3,
                        &filt(true, false, true),
                    )?));
                    caux = cout;
                }
            }
            for idx in 0..cfg.num_blocks {
                let cin = cout;
                cout = cfg.model_channels * mult;
                let attn = cfg.attn_resolutions.contains(&res);
                enc.push(Enc::Block(UNetBlock::new(
                    &venc.pp(format!("{res}x{res}_block{idx}")),
                    cin,
                    cout,
                    res,
                    false,
                    false,
                    attn,
                    &bcfg,
                )?));
                skips.push(cout);
            }
        }
        let vdec = vb.pp("dec");
        let mut dec = Vec::new();
        let levels = cfg.channel_mult.len();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            let res = cfg.img_resolution >> level;
            if level == levels - 1 {
                dec.push(Dec::Block(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_in0")),
                    cout,
                    cout,
                    res,
                    false,
                    false,
                    true,
                    &bcfg,
                )?));
                dec.push(Dec::Block(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_in1")),
                    cout,
                    cout,
                    res,
                    false,
                    false,
                    false,
                    &bcfg,
                )?));
            } else {
                dec.push(Dec::Block(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_up")),
                    cout,
                    cout,
                    res,
                    true,
                    false,
                    false,
                    &bcfg,
                )?));
            }
            for idx in 0..=cfg.num_blocks {
                let cin = cout
                    + skips
                        .pop()
                        .ok_or_else(|| crate::ModelError::Config("skip stack underflow".into()))?;
                cout = cfg.model_channels * mult;
                let attn = idx == cfg.num_blocks && cfg.attn_resolutions.contains(&res);
                dec.push(Dec::Block(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_block{idx}")),
                    cin,
                    cout,
                    res,
                    false,
                    false,
                    attn,
                    &bcfg,
                )?));
            }
            if cfg.decoder_type == DecoderType::Skip || level == 0 {
                if cfg.decoder_type == DecoderType::Skip && level < levels - 1 {
                    dec.push(Dec::AuxUp(Conv2d::new(
                        &vdec.pp(format!("{res}x{res}_aux_up")),
                        cfg.out_channels,
                        cfg.out_channels,
                        0,
                        &filt(false, true, false),
                    )?));
                }
                dec.push(Dec::AuxNorm(GroupNorm::new(
                    &vdec.pp(format!("{res}x{res}_aux_norm")),
                    cout,
                    1e-6,
                )?));
                dec.push(Dec::AuxConv(Conv2d::new(
                    &vdec.pp(format!("{res}x{res}_aux_conv")),
                    cout,
                    cfg.out_channels,
                    3,
                    &plain(init_zero),
                )?));
            }
        }
        Ok(SongUNet {
            map_noise,
            map_label,
            map_augment,
            map_layer0,
            map_layer1,
            enc,
            dec,
            cfg: cfg.clone(),
        })
    }

    /// `x [N, C, R, R]`, `noise_labels [N]` (or `[1]`), optional `class_labels [N, L]`,
    /// optional `augment_labels [N, A]` → `[N, out, R, R]`.
    pub fn forward(
        &self,
        o: &O,
        x: &O::T,
        noise_labels: &O::T,
        class_labels: Option<&O::T>,
        augment_labels: Option<&O::T>,
        train: bool,
    ) -> Result<O::T> {
        let e = self.map_noise.forward(o, noise_labels)?;
        // swap the halves: [sin, cos]
        let half = (self.cfg.model_channels * self.cfg.channel_mult_noise / 2) as i64;
        let mut emb = o.concat(&[&o.narrow(&e, 1, half, half)?, &o.narrow(&e, 1, 0, half)?], 1)?;
        if let (Some(ml), Some(cl)) = (&self.map_label, class_labels) {
            let scaled = o.mul_scalar(cl, (ml.in_features as f64).sqrt())?;
            emb = o.add(&emb, &ml.forward(o, &scaled)?)?;
        }
        if let (Some(ma), Some(al)) = (&self.map_augment, augment_labels) {
            emb = o.add(&emb, &ma.forward(o, al)?)?;
        }
        emb = o.silu(&self.map_layer0.forward(o, &emb)?)?;
        emb = o.silu(&self.map_layer1.forward(o, &emb)?)?;

        let mut skips: Vec<O::T> = Vec::new();
        let mut xc = self.cfg.in_channels;
        let mut x = x.clone();
        let mut aux = x.clone();
        for b in &self.enc {
            match b {
                Enc::AuxDown(c) => aux = c.forward(o, &aux)?,
                Enc::AuxSkip(c) => {
                    x = o.add(&x, &c.forward(o, &aux)?)?;
                    *skips.last_mut().unwrap() = x.clone();
                }
                Enc::AuxResidual(c) => {
                    x = o.mul_scalar(&o.add(&x, &c.forward(o, &aux)?)?, 1.0 / 2f64.sqrt())?;
                    *skips.last_mut().unwrap() = x.clone();
                    aux = x.clone();
                }
                Enc::Conv(c) => {
                    x = c.forward(o, &x)?;
                    xc = c.cout;
                    skips.push(x.clone());
                }
                Enc::Block(blk) => {
                    x = blk.forward(o, &x, &emb, train)?;
                    xc = blk.out_channels;
                    skips.push(x.clone());
                }
            }
        }
        let mut aux: Option<O::T> = None;
        let mut tmp: Option<O::T> = None;
        for b in &self.dec {
            match b {
                Dec::AuxUp(c) => aux = Some(c.forward(o, aux.as_ref().expect("aux_up after aux_conv"))?),
                Dec::AuxNorm(n) => tmp = Some(n.forward(o, &x)?),
                Dec::AuxConv(c) => {
                    let t = c.forward(o, &o.silu(tmp.as_ref().expect("aux_norm before aux_conv"))?)?;
                    aux = Some(match &aux {
                        Some(a) => o.add(&t, a)?,
                        None => t,
                    });
                }
                Dec::Block(blk) => {
                    if xc != blk.in_channels {
                        let s = skips.pop().expect("skip stack matches construction");
                        x = o.concat(&[&x, &s], 1)?;
                    }
                    x = blk.forward(o, &x, &emb, train)?;
                    xc = blk.out_channels;
                }
            }
        }
        Ok(aux.expect("decoder ends with aux_conv"))
    }
}
