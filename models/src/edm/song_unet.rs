//! SongUNet: the DDPM++ / NCSN++ backbone (SPEC §2.2).

use super::layers::{BlockOptions, Conv2d, ConvOpts, EdmInit, GroupNorm, Linear, NoiseEmbedding, Resample};
use super::unet::{self, AuxLayers, DecLayer, DecoderAttention, EncLayer, FirstConvWidth, Skeleton};
use crate::backend::Ops;
use crate::config::{DecoderType, EmbeddingType, EncoderType, SongConfig};
use crate::vb::{InitMode, Vb};
use crate::{ModelError, Result};

/// SongUNet with weights; fields in registration (state_dict) order.
pub struct SongUNet<O: Ops> {
    map_noise: NoiseEmbedding<O>,
    map_label: Option<Linear<O>>,
    map_augment: Option<Linear<O>>,
    map_layer0: Linear<O>,
    map_layer1: Linear<O>,
    enc: Vec<EncLayer<O>>,
    dec: Vec<DecLayer<O>>,
    cfg: SongConfig,
}

/// init = xavier_uniform; init_zero = ×1e-5; init_attn = ×sqrt(0.2) (SPEC §2.2).
fn init() -> EdmInit {
    EdmInit::new(InitMode::XavierUniform, 1.0)
}
fn init_zero() -> EdmInit {
    EdmInit::new(InitMode::XavierUniform, 1e-5)
}
fn init_attn() -> EdmInit {
    EdmInit::new(InitMode::XavierUniform, 0.2f64.sqrt())
}

/// SongUNet's `block_kwargs` (SPEC §2.2).
fn block_kwargs(cfg: &SongConfig) -> BlockOptions {
    BlockOptions {
        emb_channels: cfg.model_channels * cfg.channel_mult_emb,
        num_heads: Some(1),
        channels_per_head: 64,
        dropout: cfg.dropout,
        skip_scale: 0.5f64.sqrt(),
        eps: 1e-6,
        resample_filter: cfg.resample_filter.clone(),
        resample_proj: true,
        adaptive_scale: false,
        init: init(),
        init_zero: init_zero(),
        init_attn: init_attn(),
    }
}

impl<O: Ops> SongUNet<O> {
    /// Requests every tensor under `vb` in registration order.
    pub fn new(vb: &Vb<O>, cfg: &SongConfig) -> Result<Self> {
        let emb_channels = cfg.model_channels * cfg.channel_mult_emb;
        let noise_channels = cfg.model_channels * cfg.channel_mult_noise;
        let map_noise = match cfg.embedding_type {
            EmbeddingType::Positional => NoiseEmbedding::positional(vb.ops(), noise_channels, true)?,
            EmbeddingType::Fourier => NoiseEmbedding::fourier(&vb.pp("map_noise"), noise_channels)?,
        };
        let map_label = (cfg.label_dim > 0)
            .then(|| Linear::with_init(&vb.pp("map_label"), cfg.label_dim, noise_channels, true, &init()))
            .transpose()?;
        let map_augment = (cfg.augment_dim > 0)
            .then(|| {
                Linear::with_init(
                    &vb.pp("map_augment"),
                    cfg.augment_dim,
                    noise_channels,
                    false,
                    &init(),
                )
            })
            .transpose()?;
        let map_layer0 =
            Linear::with_init(&vb.pp("map_layer0"), noise_channels, emb_channels, true, &init())?;
        let map_layer1 = Linear::with_init(&vb.pp("map_layer1"), emb_channels, emb_channels, true, &init())?;
        let skeleton = Skeleton {
            cfg,
            block: &block_kwargs(cfg),
            conv_init: init(),
            first_conv: FirstConvWidth::ModelChannels,
            decoder_attention: DecoderAttention::LastBlock,
        };
        let mut aux = SongAux {
            cfg,
            aux_channels: cfg.in_channels,
        };
        let (enc, skips, c) = skeleton.encoder(&vb.pp("enc"), &mut aux)?;
        let (dec, _) = skeleton.decoder(&vb.pp("dec"), skips, c, &mut aux)?;
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
    /// optional `augment_labels [N, A]` → `[N, out, R, R]`. With `train`, class labels are
    /// dropped per sample with probability `label_dropout` ([`Ops::label_dropout`]).
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
        if let (Some(map_label), Some(labels)) = (&self.map_label, class_labels) {
            let labels = o.label_dropout(labels, x, self.cfg.label_dropout, train)?;
            let scaled = o.mul_scalar(&labels, (map_label.in_features as f64).sqrt())?;
            emb = o.add(&emb, &map_label.forward(o, &scaled)?)?;
        }
        if let (Some(map_augment), Some(augment)) = (&self.map_augment, augment_labels) {
            emb = o.add(&emb, &map_augment.forward(o, augment)?)?;
        }
        emb = o.silu(&self.map_layer0.forward(o, &emb)?)?;
        emb = o.silu(&self.map_layer1.forward(o, &emb)?)?;
        let (_, aux) = unet::run(o, &self.enc, &self.dec, x, self.cfg.in_channels, &emb, train)?;
        aux.ok_or_else(|| ModelError::Config("SongUNet: the decoder has no aux_conv".into()))
    }
}

/// SongUNet's aux entries: the encoder's input pyramid (`encoder_type` skip / residual, with
/// `aux_channels` = `caux`) and the decoder's `aux_norm` / `aux_conv` outputs (every level
/// for `decoder_type` skip, with `aux_up` between them; level 0 otherwise).
struct SongAux<'a> {
    cfg: &'a SongConfig,
    aux_channels: usize,
}

impl<O: Ops> AuxLayers<O> for SongAux<'_> {
    fn after_down(&mut self, enc: &Vb<O>, res: usize, c: usize) -> Result<Vec<EncLayer<O>>> {
        let key = |name: &str| enc.pp(format!("{res}x{res}_{name}"));
        let down = ConvOpts::resample(Resample::Down, &self.cfg.resample_filter, init());
        let caux = self.aux_channels;
        Ok(match self.cfg.encoder_type {
            EncoderType::Standard => vec![],
            EncoderType::Skip => vec![
                EncLayer::AuxDown(Conv2d::new(&key("aux_down"), caux, caux, 0, &down)?),
                EncLayer::AuxSkip(Conv2d::new(
                    &key("aux_skip"),
                    caux,
                    c,
                    1,
                    &ConvOpts::plain(init()),
                )?),
            ],
            EncoderType::Residual => {
                let fused = ConvOpts { fused: true, ..down };
                self.aux_channels = c;
                vec![EncLayer::AuxResidual(Conv2d::new(
                    &key("aux_residual"),
                    caux,
                    c,
                    3,
                    &fused,
                )?)]
            }
        })
    }

    fn after_level(&mut self, dec: &Vb<O>, level: usize, res: usize, c: usize) -> Result<Vec<DecLayer<O>>> {
        let key = |name: &str| dec.pp(format!("{res}x{res}_{name}"));
        let (skip, top) = (
            self.cfg.decoder_type == DecoderType::Skip,
            self.cfg.channel_mult.len() - 1,
        );
        let out = self.cfg.out_channels;
        let mut layers = Vec::new();
        if skip && level < top {
            let up = ConvOpts::resample(Resample::Up, &self.cfg.resample_filter, init());
            layers.push(DecLayer::AuxUp(Conv2d::new(&key("aux_up"), out, out, 0, &up)?));
        }
        if skip || level == 0 {
            layers.push(DecLayer::AuxNorm(GroupNorm::new(&key("aux_norm"), c, 1e-6)?));
            let conv = Conv2d::new(&key("aux_conv"), c, out, 3, &ConvOpts::plain(init_zero()))?;
            layers.push(DecLayer::AuxConv(conv));
        }
        Ok(layers)
    }
}
