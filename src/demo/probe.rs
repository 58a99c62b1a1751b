//! The demo's probe: a small CNN classifier of the [`shapes`](super::shapes) classes, trained
//! on clean labelled images, that labels generated samples and supplies the feature space of
//! the demo's Fréchet distance.
//!
//! Architecture (plain `tch::nn`), input `[N, 3, 16, 16]` f32 in [−1, 1]:
//! `conv3×3(3→16) → ReLU → maxpool2 → conv3×3(16→32) → ReLU → maxpool2 → conv3×3(32→64) →
//! ReLU → global mean pool` = the 64-d **features**, then `linear(64→4)` = the logits.
//! Trained with Adam on the mean cross-entropy; initialisation (`tch::manual_seed`) and batch
//! order (ChaCha8) come from the seed.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::shapes::{nhwc_u8_to_nchw_f32, LabeledImages, CHANNELS, IMAGE_BYTES, NUM_CLASSES, RES};

/// Dimension of [`Probe::features`].
pub const FEATURE_DIM: usize = 64;
/// Images per forward pass at evaluation.
const EVAL_BATCH: usize = 1024;

/// Training settings of the probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Seed of the initialisation and of the batch order.
    pub seed: u64,
}

impl Default for ProbeConfig {
    /// 4 epochs, batch 64, lr 3e-3, seed 0.
    fn default() -> Self {
        ProbeConfig {
            epochs: 4,
            batch: 64,
            lr: 3e-3,
            seed: 0,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimiser steps.
    pub steps: usize,
    /// Mean cross-entropy over the last epoch.
    pub last_epoch_loss: f64,
    /// Wall time in seconds.
    pub seconds: f64,
}

#[derive(Debug)]
struct Net {
    c1: nn::Conv2D,
    c2: nn::Conv2D,
    c3: nn::Conv2D,
    fc: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path) -> Net {
        let cfg = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Net {
            c1: nn::conv2d(p / "c1", CHANNELS as i64, 16, 3, cfg),
            c2: nn::conv2d(p / "c2", 16, 32, 3, cfg),
            c3: nn::conv2d(p / "c3", 32, FEATURE_DIM as i64, 3, cfg),
            fc: nn::linear(
                p / "fc",
                FEATURE_DIM as i64,
                NUM_CLASSES as i64,
                Default::default(),
            ),
        }
    }

    fn features(&self, x: &Tensor) -> Tensor {
        x.apply(&self.c1)
            .relu()
            .max_pool2d_default(2)
            .apply(&self.c2)
            .relu()
            .max_pool2d_default(2)
            .apply(&self.c3)
            .relu()
            .mean_dim(&[2i64, 3][..], false, Kind::Float)
    }
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.features(x).apply(&self.fc)
    }
}

/// The probe classifier (weights in a `tch` `VarStore`).
#[derive(Debug)]
pub struct Probe {
    vs: nn::VarStore,
    net: Net,
}

/// uint8 NHWC 16×16 RGB images as an f32 NCHW tensor in [−1, 1] on `device`.
pub fn images_tensor(images: &[u8], device: Device) -> Result<Tensor> {
    if images.len() % IMAGE_BYTES != 0 {
        bail!(
            "image buffer of {} bytes is not a whole number of {RES}×{RES}×{CHANNELS} images",
            images.len()
        );
    }
    let n = images.len() / IMAGE_BYTES;
    let x = nhwc_u8_to_nchw_f32(images, CHANNELS, RES, RES);
    Ok(Tensor::f_from_slice(&x)?
        .f_reshape([n as i64, CHANNELS as i64, RES as i64, RES as i64])?
        .f_to_device(device)?)
}

impl Probe {
    /// A freshly initialised probe (`tch::manual_seed(seed)` first).
    pub fn new(device: Device, seed: u64) -> Probe {
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root());
        Probe { vs, net }
    }

    /// Loads weights saved by [`Probe::save`] (`.safetensors`, or libtorch's format for
    /// other extensions).
    pub fn load(path: &Path, device: Device) -> Result<Probe> {
        let mut p = Probe::new(device, 0);
        p.vs.load(path)
            .with_context(|| format!("{}: not a probe classifier weights file", path.display()))?;
        Ok(p)
    }

    /// Saves the weights (format by extension, `.safetensors` recommended).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.vs
            .save(path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Trains on `data` with Adam and cross-entropy (see [`ProbeConfig`]).
    pub fn train(&mut self, data: &LabeledImages, cfg: &ProbeConfig) -> Result<TrainSummary> {
        if data.is_empty() {
            bail!("probe training set is empty");
        }
        let t0 = Instant::now();
        let dev = self.vs.device();
        let x = images_tensor(&data.images, dev)?;
        let y = Tensor::f_from_slice(&data.labels.iter().map(|&l| l as i64).collect::<Vec<_>>())?
            .f_to_device(dev)?;
        let mut opt = nn::Adam::default().build(&self.vs, cfg.lr)?;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut order: Vec<i64> = (0..data.len() as i64).collect();
        let (mut steps, mut last) = (0usize, f64::NAN);
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            let (mut sum, mut count) = (0f64, 0usize);
            for chunk in order.chunks(cfg.batch.max(1)) {
                let idx = Tensor::f_from_slice(chunk)?.f_to_device(dev)?;
                let logits = self.net.forward(&x.f_index_select(0, &idx)?);
                let loss = logits.cross_entropy_for_logits(&y.f_index_select(0, &idx)?);
                opt.backward_step(&loss);
                sum += loss.f_double_value(&[])? * chunk.len() as f64;
                count += chunk.len();
                steps += 1;
            }
            last = sum / count as f64;
        }
        Ok(TrainSummary {
            steps,
            last_epoch_loss: last,
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    fn check_input(x: &Tensor) -> Result<()> {
        let s = x.size();
        if s.len() != 4 || s[1..] != [CHANNELS as i64, RES as i64, RES as i64] {
            bail!("probe input has shape {s:?}; expected [N, {CHANNELS}, {RES}, {RES}]");
        }
        Ok(())
    }

    /// Applies `f` to batches of at most 1024 images of `x` (no autograd) and concatenates.
    fn batched(&self, x: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Result<Tensor> {
        Self::check_input(x)?;
        let _g = tch::no_grad_guard();
        let x = x.f_to_device(self.vs.device())?.f_to_kind(Kind::Float)?;
        let n = x.size()[0];
        let mut parts = Vec::new();
        let mut s = 0;
        while s < n {
            let len = (EVAL_BATCH as i64).min(n - s);
            parts.push(f(&x.f_narrow(0, s, len)?));
            s += len;
        }
        if parts.is_empty() {
            return Ok(f(&x));
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    /// Logits `[N, 4]` of `x` = `[N, 3, 16, 16]` f32 in [−1, 1].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.batched(x, |b| self.net.forward(b))
    }

    /// Predicted class (argmax of the logits) of each image of `x` (NCHW f32 in [−1, 1]).
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        let a = self.logits(x)?.f_argmax(1, false)?.f_to_device(Device::Cpu)?;
        Ok(Vec::<i64>::try_from(&a)?.into_iter().map(|v| v as u32).collect())
    }

    /// Penultimate-layer features, row-major `[N, FEATURE_DIM]` in f64.
    pub fn features(&self, x: &Tensor) -> Result<Vec<f64>> {
        let f = self
            .batched(x, |b| self.net.features(b))?
            .f_to_kind(Kind::Double)?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?;
        Ok(Vec::<f64>::try_from(&f)?)
    }

    /// [`Probe::predict`] of uint8 NHWC images.
    pub fn predict_images(&self, images: &[u8]) -> Result<Vec<u32>> {
        self.predict(&images_tensor(images, self.vs.device())?)
    }

    /// [`Probe::features`] of uint8 NHWC images.
    pub fn features_images(&self, images: &[u8]) -> Result<Vec<f64>> {
        self.features(&images_tensor(images, self.vs.device())?)
    }

    /// Fraction of `data` classified correctly.
    pub fn accuracy(&self, data: &LabeledImages) -> Result<f64> {
        let pred = self.predict_images(&data.images)?;
        let right = pred.iter().zip(&data.labels).filter(|(a, b)| a == b).count();
        Ok(right as f64 / data.len().max(1) as f64)
    }
}
