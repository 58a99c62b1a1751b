//! DhariwalUNet: the ADM backbone as EDM defines it (SPEC §2.3).

use super::layers::{BlockCfg, Conv2d, ConvOpts, EdmInit, GroupNorm, Linear, NoiseEmbedding, UNetBlock};
use crate::backend::Ops;
use crate::config::DhariwalConfig;
use crate::vb::{InitMode, Vb};
use crate::Result;

#[allow(clippy::large_enum_variant)] // built once per network
enum Enc<O: Ops> {
    Conv(Conv2d<O>),
    Block(UNetBlock<O>),
}

/// DhariwalUNet with weights.
pub struct DhariwalUNet<O: Ops> {
    map_noise: NoiseEmbedding<O>,
    map_augment: Option<Linear<O>>,
    map_layer0: Linear<O>,
    map_layer1: Linear<O>,
    map_label: Option<Linear<O>>,
    enc: Vec<Enc<O>>,
    dec: Vec<UNetBlock<O>>,
    out_norm: GroupNorm<O>,
    out_conv: Conv2d<O>,
    cfg: DhariwalConfig,
}

impl<O: Ops> DhariwalUNet<O> {
    /// Requests every tensor under `vb` in registration order.
    pub fn new(vb: &Vb<O>, cfg: &DhariwalConfig) -> Result<Self> {
        let o = vb.ops();
        let emb_ch = cfg.model_channels * cfg.channel_mult_emb;
        // init = kaiming_uniform with init_weight = init_bias = sqrt(1/3); init_zero = all
        // zeros (still drawn) (SPEC §2.3)
        let k = (1.0f64 / 3.0).sqrt();
        let init = EdmInit {
            mode: InitMode::KaimingUniform,
            weight: k,
            bias: k,
        };
        let init_zero = EdmInit {
            mode: InitMode::KaimingUniform,
            weight: 0.0,
            bias: 0.0,
        };
        let bcfg = BlockCfg {
            emb_channels: emb_ch,
            num_heads: None,
            channels_per_head: 64,
            dropout: cfg.dropout,
            skip_scale: 1.0,
            eps: 1e-5,
            filter: vec![1.0, 1.0],
            resample_proj: false,
            adaptive_scale: true,
            init,
            init_zero,
            init_attn: init,
        };
        let map_noise = NoiseEmbedding::positional(o, cfg.model_channels, false)?;
        let map_augment = if cfg.augment_dim > 0 {
            Some(Linear::with_init(
                &vb.pp("map_augment"),
                cfg.augment_dim,
                cfg.model_channels,
                false,
                &init_zero,
            )?)
        } else {
            None
        };
        let map_layer0 = Linear::with_init(&vb.pp("map_layer0"), cfg.model_channels, emb_ch, true, &init)?;
        let map_layer1 = Linear::with_init(&vb.pp("map_layer1"), emb_ch, emb_ch, true, &init)?;
        let map_label = if cfg.label_dim > 0 {
            let li = EdmInit::new(InitMode::KaimingNormal, (cfg.label_dim as f64).sqrt());
            Some(Linear::with_init(
                &vb.pp("map_label"),
                cfg.label_dim,
                emb_ch,
                false,
                &li,
            )?)
        } else {
            None
        };
        let venc = vb.pp("enc");
        let mut enc = Vec::new();
        let mut skips = Vec::new();
        let mut cout = cfg.in_channels;
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            let res = cfg.img_resolution >> level;
            if level == 0 {
                let cin = cout;
                cout = cfg.model_channels * mult;
                enc.push(Enc::Conv(Conv2d::new(
                    &venc.pp(format!("{res}x{res}_conv")),
                    cin,
                    cout,
                    3,
                    &ConvOpts {
                        init,
                        ..Default::default()
                    },
                )?));
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
            }
            skips.push(cout);
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
                dec.push(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_in0")),
                    cout,
                    cout,
                    res,
                    false,
                    false,
                    true,
                    &bcfg,
                )?);
                dec.push(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_in1")),
                    cout,
                    cout,
                    res,
                    false,
                    false,
                    false,
                    &bcfg,
                )?);
            } else {
                dec.push(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_up")),
                    cout,
                    cout,
                    res,
                    true,
                    false,
                    false,
                    &bcfg,
                )?);
            }
            for idx in 0..=cfg.num_blocks {
                let cin = cout
                    + skips
                        .pop()
                        .ok_or_else(|| crate::ModelError::Config("skip stack underflow".into()))?;
                cout = cfg.model_channels * mult;
                let attn = cfg.attn_resolutions.contains(&res);
                dec.push(UNetBlock::new(
                    &vdec.pp(format!("{res}x{res}_block{idx}")),
                    cin,
                    cout,
                    res,
                    false,
                    false,
                    attn,
                    &bcfg,
                )?);
            }
        }
        let out_norm = GroupNorm::new(&vb.pp("out_norm"), cout, 1e-5)?;
        let out_conv = Conv2d::new(
            &vb.pp("out_conv"),
            cout,
            cfg.out_channels,
            3,
            &ConvOpts {
                init: init_zero,
                ..Default::default()
            },
        )?;
        Ok(DhariwalUNet {
            map_noise,
            map_augment,
            map_layer0,
            map_layer1,
            map_label,
            enc,
            dec,
            out_norm,
            out_conv,
            cfg: cfg.clone(),
        })
    }

    /// Same interface as SongUNet's forward.
    pub fn forward(
        &self,
        o: &O,
        x: &O::T,
        noise_labels: &O::T,
        class_labels: Option<&O::T>,
        augment_labels: Option<&O::T>,
        train: bool,
    ) -> Result<O::T> {
        let mut emb = self.map_noise.forward(o, noise_labels)?;
        if let (Some(ma), Some(al)) = (&self.map_augment, augment_labels) {
            emb = o.add(&emb, &ma.forward(o, al)?)?;
        }
        emb = o.silu(&self.map_layer0.forward(o, &emb)?)?;
        emb = self.map_layer1.forward(o, &emb)?;
        if let (Some(ml), Some(cl)) = (&self.map_label, class_labels) {
            emb = o.add(&emb, &ml.forward(o, cl)?)?;
        }
        emb = o.silu(&emb)?;
        let mut skips = Vec::new();
        let mut x = x.clone();
        let mut xc = self.cfg.in_channels;
        for b in &self.enc {
            match b {
                Enc::Conv(c) => {
                    x = c.forward(o, &x)?;
                    xc = c.cout;
                }
                Enc::Block(blk) => {
                    x = blk.forward(o, &x, &emb, train)?;
                    xc = blk.out_channels;
                }
            }
            skips.push(x.clone());
        }
        for blk in &self.dec {
            if xc != blk.in_channels {
                let s = skips.pop().expect("skip stack matches construction");
                x = o.concat(&[&x, &s], 1)?;
            }
            x = blk.forward(o, &x, &emb, train)?;
            xc = blk.out_channels;
        }
        self.out_conv.forward(o, &o.silu(&self.out_norm.forward(o, &x)?)?)
    }
}
