//! DhariwalUNet: the ADM backbone as EDM defines it (SPEC §2.3).

use super::layers::{BlockOptions, Conv2d, ConvOpts, EdmInit, GroupNorm, Linear, NoiseEmbedding};
use super::unet::{self, DecLayer, DecoderAttention, EncLayer, FirstConvWidth, NoAux, Skeleton};
use crate::backend::Ops;
use crate::config::DhariwalConfig;
use crate::vb::{InitMode, Vb};
use crate::Result;

/// DhariwalUNet with weights; fields in registration (state_dict) order.
pub struct DhariwalUNet<O: Ops> {
    map_noise: NoiseEmbedding<O>,
    map_augment: Option<Linear<O>>,
    map_layer0: Linear<O>,
    map_layer1: Linear<O>,
    map_label: Option<Linear<O>>,
    enc: Vec<EncLayer<O>>,
    dec: Vec<DecLayer<O>>,
    out_norm: GroupNorm<O>,
    out_conv: Conv2d<O>,
    cfg: DhariwalConfig,
}

/// init = kaiming_uniform with init_weight = init_bias = sqrt(1/3) (SPEC §2.3).
fn init() -> EdmInit {
    let k = (1.0f64 / 3.0).sqrt();
    EdmInit {
        mode: InitMode::KaimingUniform,
        weight: k,
        bias: k,
    }
}

/// init_zero = all zeros (still drawn) (SPEC §2.3).
fn init_zero() -> EdmInit {
    EdmInit {
        mode: InitMode::KaimingUniform,
        weight: 0.0,
        bias: 0.0,
    }
}

/// DhariwalUNet's `block_kwargs` (SPEC §2.3).
fn block_kwargs(cfg: &DhariwalConfig) -> BlockOptions {
    BlockOptions {
        emb_channels: cfg.model_channels * cfg.channel_mult_emb,
        num_heads: None,
        channels_per_head: 64,
        dropout: cfg.dropout,
        skip_scale: 1.0,
        eps: 1e-5,
        resample_filter: vec![1.0, 1.0],
        resample_proj: false,
        adaptive_scale: true,
        init: init(),
        init_zero: init_zero(),
        init_attn: init(),
    }
}

impl<O: Ops> DhariwalUNet<O> {
    /// Requests every tensor under `vb` in registration order.
    pub fn new(vb: &Vb<O>, cfg: &DhariwalConfig) -> Result<Self> {
        let emb_channels = cfg.model_channels * cfg.channel_mult_emb;
        let init_label = EdmInit::new(InitMode::KaimingNormal, (cfg.label_dim as f64).sqrt());
        let map_noise = NoiseEmbedding::positional(vb.ops(), cfg.model_channels, false)?;
        let map_augment = (cfg.augment_dim > 0)
            .then(|| {
                Linear::with_init(
                    &vb.pp("map_augment"),
                    cfg.augment_dim,
                    cfg.model_channels,
                    false,
                    &init_zero(),
                )
            })
            .transpose()?;
        let map_layer0 = Linear::with_init(
            &vb.pp("map_layer0"),
            cfg.model_channels,
            emb_channels,
            true,
            &init(),
        )?;
        let map_layer1 = Linear::with_init(&vb.pp("map_layer1"), emb_channels, emb_channels, true, &init())?;
        let map_label = (cfg.label_dim > 0)
            .then(|| {
                Linear::with_init(
                    &vb.pp("map_label"),
                    cfg.label_dim,
                    emb_channels,
                    false,
                    &init_label,
                )
            })
            .transpose()?;
        let skeleton = Skeleton {
            cfg,
            block: &block_kwargs(cfg),
            conv_init: init(),
            first_conv: FirstConvWidth::LevelWidth,
            decoder_attention: DecoderAttention::EveryBlock,
        };
        let (enc, skips, c) = skeleton.encoder(&vb.pp("enc"), &mut NoAux)?;
        let (dec, c) = skeleton.decoder(&vb.pp("dec"), skips, c, &mut NoAux)?;
        let out_norm = GroupNorm::new(&vb.pp("out_norm"), c, 1e-5)?;
        let out_conv = Conv2d::new(
            &vb.pp("out_conv"),
            c,
            cfg.out_channels,
            3,
            &ConvOpts::plain(init_zero()),
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

    /// Same interface as SongUNet's forward; the labels join the embedding after
    /// `map_layer1` (dropped per sample with probability `label_dropout` when `train`).
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
        if let (Some(map_augment), Some(augment)) = (&self.map_augment, augment_labels) {
            emb = o.add(&emb, &map_augment.forward(o, augment)?)?;
        }
        emb = o.silu(&self.map_layer0.forward(o, &emb)?)?;
        emb = self.map_layer1.forward(o, &emb)?;
        if let (Some(map_label), Some(labels)) = (&self.map_label, class_labels) {
            let labels = o.label_dropout(labels, x, self.cfg.label_dropout, train)?;
            emb = o.add(&emb, &map_label.forward(o, &labels)?)?;
        }
        emb = o.silu(&emb)?;
        let (x, _) = unet::run(o, &self.enc, &self.dec, x, self.cfg.in_channels, &emb, train)?;
        self.out_conv.forward(o, &o.silu(&self.out_norm.forward(o, &x)?)?)
    }
}
