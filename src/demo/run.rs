//! `tiw demo`: the paper's debiasing experiment in miniature, end to end on the CPU.
//!
//! 1. Data ([`super::shapes`]): a long-tailed biased set (class frequencies ∝ [1, 0.3, 0.1,
//!    0.03]) and a balanced reference of 5% of its size; observed = biased ∪ reference, written
//!    as an EDM `dataset.zip`, and the discriminator's `.npz` files (`samples`).
//! 2. A small ADM feature extractor with PyTorch's default initialisation (frozen, random:
//!    enough at this scale) and the time-dependent discriminator trained on reference (1) vs
//!    biased (0) by `train-classifier`'s code; held-out accuracy at a few noise levels.
//! 3. Three score models of identical size, initialisation, batch order and noise draws (same
//!    seed): DSM (`--precond edm`) on the observed data, TIW-DSM official and TIW-DSM corrected; the corrected model is
//!    sampled a second time with discriminator guidance ([`DG_ROW`], weight [`DEMO_DG_WEIGHT`]).
//! 4. Samples from each EMA snapshot with the EDM sampler (ONNX Runtime by default), the same
//!    latents for all models.
//! 5. A probe classifier trained on clean labelled data classifies the samples; the report
//!    ([`super::report`]) gives class proportions, the total-variation distance to uniform, the
//!    Fréchet distance in the probe's feature space against a balanced reference, and the
//!    paired differences to DSM.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use tiw_models::adm::EncoderConfig;
use tiw_models::guidance::Discriminator;
use tiw_models::tch_ops::TchOps;
use tiw_models::vpsde::VpSde;

use super::probe::{images_tensor, Probe, ProbeConfig};
use super::report::{self, ModelSamples, ReportInputs};
use super::shapes::{demo_sets, DemoSizes, LabeledImages, NUM_CLASSES, RES};
use crate::device::DeviceSpec;
use crate::runtime::{Backend, Runtime};
use crate::sample::denoiser::NetDenoiser;
use crate::sample::dg::{generate_images_dg, DgGuide, DgSettings};
use crate::train::classifier::{self, ClassifierOpts};
use crate::train::loss::{TiwCorrection, TiwWeighting};
use crate::train::options::{PrecondChoice, TrainOptions};

/// Which runtime samples the trained models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleRuntime {
    /// ONNX Runtime (the snapshot is exported to ONNX in memory).
    Ort,
    /// tract (pure Rust ONNX).
    Tract,
    /// libtorch.
    Tch,
}

impl From<SampleRuntime> for Runtime {
    fn from(r: SampleRuntime) -> Runtime {
        match r {
            SampleRuntime::Ort => Runtime::Ort,
            SampleRuntime::Tract => Runtime::Tract,
            SampleRuntime::Tch => Runtime::Tch,
        }
    }
}

/// Options of `tiw demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Output folder.
    pub outdir: PathBuf,
    /// The ≤ 2-minute version (smaller sets, fewer steps): checks the pipeline, not the science.
    pub quick: bool,
    /// Device for training.
    pub device: DeviceSpec,
    /// Seed of everything.
    pub seed: u64,
    /// Sampling runtime.
    pub runtime: SampleRuntime,
    /// Show progress bars.
    pub progress: bool,
}

/// Name of the demo's fourth row.
pub const DG_ROW: &str = "TIW-DSM corrected + DG";

/// Weight `w₁` of the demo's discriminator guidance, chosen once (not tuned on the report's
/// metrics, which would tune on the evaluation): 1, the weight at which DG's correction is
/// exact — `∇log p + ∇log(d/(1−d))` is the score of `p·d/(1−d)` when d is the Bayes-optimal
/// discriminator. The demo's discriminator separates reference (1) from *biased data* (0),
/// not from model samples, so for the TIW-DSM model (already aimed at the reference
/// distribution) this row shows what adding the same density-ratio estimate at sampling
/// time does on top of training with it.
pub const DEMO_DG_WEIGHT: f64 = 1.0;

/// Sizes and budgets of one demo run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Data set sizes.
    pub sizes: DemoSizes,
    /// Discriminator iterations.
    pub disc_iters: u64,
    /// Images per class per discriminator step.
    pub disc_batch: usize,
    /// Score-model optimiser steps.
    pub score_steps: u64,
    /// Score-model batch.
    pub score_batch: usize,
    /// Samples per model.
    pub samples: usize,
    /// Sampler noise levels.
    pub sampler_steps: usize,
    /// Probe epochs.
    pub probe_epochs: usize,
}

impl Plan {
    /// The full demo (≤ 10 minutes on 2 cores).
    pub fn full() -> Self {
        Plan {
            sizes: DemoSizes::default(),
            disc_iters: 400,
            disc_batch: 32,
            score_steps: 600,
            score_batch: 64,
            samples: 800,
            sampler_steps: 18,
            probe_epochs: 4,
        }
    }

    /// The quick pipeline check (≤ 2 minutes).
    pub fn quick() -> Self {
        Plan {
            sizes: DemoSizes {
                biased_total: 800,
                reference_fraction: 0.05,
                probe_train_per_class: 150,
                probe_test_per_class: 50,
                frechet_ref_per_class: 50,
            },
            disc_iters: 20,
            disc_batch: 16,
            score_steps: 24,
            score_batch: 16,
            samples: 64,
            sampler_steps: 8,
            probe_epochs: 2,
        }
    }
}

/// The frozen feature extractor of the demo: an ADM `EncoderUNetModel` for 16×16 images
/// (width 32 — ADM's GroupNorm32 needs multiples of 32 — multipliers [1, 2], one residual
/// block per level, attention at 8×8 with ADM's 64 channels per head) → features
/// [N, 64, 8, 8].
pub fn extractor_config() -> EncoderConfig {
    EncoderConfig {
        image_size: 16,
        in_channels: 3,
        model_channels: 32,
        out_channels: 8,
        num_res_blocks: 1,
        channel_mult: vec![1, 2],
        attention_ds: vec![2],
        num_head_channels: 64,
        num_class: None,
    }
}

/// The demo's discriminator: the official layout (`load_discriminator`: ADM encoder on the
/// 8×8 feature map, attention, one logit) at width 64 with one residual block, instead of
/// width 128 and two blocks — the official size would dominate the CPU budget here.
pub fn discriminator_config(extractor: &EncoderConfig) -> EncoderConfig {
    let mut c = classifier::discriminator_config(extractor);
    c.model_channels = 64;
    c.num_res_blocks = 1;
    c
}

/// Balanced held-out accuracy of the discriminator (reference = 1, biased = 0) at VP times
/// `ts`; returns `(σ, accuracy)` with σ = s(t)/α(t), the VE noise level of that time.
fn discriminator_accuracy(
    fe: &Path,
    dis: &Path,
    reference: &LabeledImages,
    biased: &LabeledImages,
    ts: &[f64],
    seed: u64,
) -> Result<Vec<(f64, f64)>> {
    let ops = TchOps::new(Device::Cpu);
    let extractor = tiw_models::load::encoder(&ops, fe, Some(16))?;
    let discriminator = tiw_models::load::encoder(&ops, dis, None)?;
    let d = Discriminator {
        ops,
        extractor: &extractor,
        discriminator: &discriminator,
    };
    let sde = VpSde::default();
    let to_x = |set: &LabeledImages| -> Result<Tensor> { images_tensor(&set.images, Device::Cpu) };
    let (xr, xb) = (to_x(reference)?, to_x(biased)?);
    let mut out = Vec::new();
    tch::manual_seed(seed as i64);
    for &t in ts {
        let (a, s) = sde.marginal_prob(t);
        let mut acc = 0.0;
        for (x, label) in [(&xr, 1.0), (&xb, 0.0)] {
            let n = x.size()[0];
            let xt = x * a + Tensor::randn_like(x) * s;
            let tt = Tensor::full([n], t, (Kind::Float, Device::Cpu));
            let p = tch::no_grad(|| d.predict(&xt, &tt, None))?;
            let right = if label > 0.5 { p.gt(0.5) } else { p.le(0.5) };
            acc += right.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) / 2.0;
        }
        out.push((s / a, acc));
    }
    Ok(out)
}

/// One score-model run of the demo.
struct ScoreRun {
    name: &'static str,
    precond: PrecondChoice,
    switches: (TiwWeighting, TiwCorrection),
}

/// The demo's data sets and the files written from them (stage 1).
struct DemoFiles {
    sets: super::shapes::DemoData,
    observed: LabeledImages,
    zip: PathBuf,
    ref_npz: PathBuf,
    bias_npz: PathBuf,
}

/// The frozen extractor, the trained discriminator and its held-out accuracy (stage 2).
struct DemoGuide {
    extractor: PathBuf,
    discriminator: PathBuf,
    accuracy: Vec<(f64, f64)>,
}

/// One demo run in progress: options, budgets, output folder and stage timings.
struct Demo<'a> {
    opts: &'a DemoOptions,
    plan: Plan,
    /// The training device (`opts.device`, selected).
    device: Device,
    out: &'a Path,
    stages: Vec<(String, f64)>,
}

/// Runs the demo; returns the report folder's `report.json` path.
pub fn run(opts: &DemoOptions) -> Result<PathBuf> {
    let t_all = Instant::now();
    let device = crate::device::select(opts.device)?;
    if opts.runtime == SampleRuntime::Ort {
        // fail before minutes of training, not at the sampling stage
        crate::runtime::ort_rt::environment()
            .context("--runtime ort (use --runtime tract or tch without ONNX Runtime)")?;
    }
    let out = opts.outdir.as_path();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut demo = Demo {
        opts,
        plan: if opts.quick { Plan::quick() } else { Plan::full() },
        device,
        out,
        stages: Vec::new(),
    };
    let data = demo.stage("data", Demo::data)?;
    let guide = demo.stage("discriminator", |d| d.discriminator(&data))?;
    let snapshots = demo.score_models(&data, &guide)?;
    let mut models = demo.stage("sampling", |d| d.samples(&snapshots))?;
    models.push(demo.stage("sampling with DG", |d| d.guided_samples(&snapshots, &guide))?);
    demo.report(&data, guide.accuracy, models, t_all)
}

impl Demo<'_> {
    /// Runs one stage, recording its wall time under `name`.
    fn stage<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f(self)?;
        self.stages.push((name.into(), t.elapsed().as_secs_f64()));
        Ok(r)
    }

    /// Stage 1: the procedural data sets, written as an EDM dataset zip and two samples npz files.
    fn data(&mut self) -> Result<DemoFiles> {
        say("[1/5] data: procedural 16×16 shapes, 4 classes");
        let data_dir = self.out.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let sets = demo_sets(&self.plan.sizes, self.opts.seed);
        let observed = sets.observed();
        let (r, c) = (RES, 3usize);
        let zip = data_dir.join("observed.zip");
        crate::data::writer::write_dataset_zip(
            &zip,
            &observed.images,
            observed.len(),
            r,
            r,
            c,
            Some(&observed.labels),
        )?;
        let ref_npz = data_dir.join("reference.npz");
        let bias_npz = data_dir.join("biased.npz");
        crate::data::writer::write_samples_npz(
            &ref_npz,
            &sets.reference.images,
            sets.reference.len(),
            r,
            r,
            c,
        )?;
        crate::data::writer::write_samples_npz(&bias_npz, &sets.biased.images, sets.biased.len(), r, r, c)?;
        say(&format!(
            "      biased {} images (classes {:?}), reference {} (balanced), observed {}",
            sets.biased.len(),
            sets.biased.class_counts(),
            sets.reference.len(),
            observed.len()
        ));
        Ok(DemoFiles {
            sets,
            observed,
            zip,
            ref_npz,
            bias_npz,
        })
    }

    /// Stage 2: a fresh frozen extractor and the discriminator trained by `train-classifier`'s
    /// code, with its held-out accuracy.
    fn discriminator(&mut self, data: &DemoFiles) -> Result<DemoGuide> {
        let (plan, seed, out) = (&self.plan, self.opts.seed, self.out);
        say(&format!(
            "[2/5] discriminator: random frozen ADM extractor, {} iterations of 2×{} images",
            plan.disc_iters, plan.disc_batch
        ));
        let fe = out.join("extractor.pt");
        crate::train::init::save_fresh_encoder(&extractor_config(), seed ^ 0x5EED, &fe)?;
        let dis_init = out.join("discriminator_init.pt");
        crate::train::init::save_fresh_encoder(
            &discriminator_config(&extractor_config()),
            seed ^ 0xD15C,
            &dis_init,
        )?;
        let mut copts = ClassifierOpts::new(
            data.ref_npz.clone(),
            data.bias_npz.clone(),
            fe.clone(),
            out.join("discriminator"),
        );
        copts.img_resolution = RES;
        // checkpoints are written after iterations i with i % save_every == 0 (as
        // discriminator_{i+1}.pt); one extra iteration makes the last one discriminator_{N+1}.pt
        copts.iters = plan.disc_iters + 1;
        copts.batch_size = plan.disc_batch;
        let (biased, reference) = (data.sets.biased.len(), data.sets.reference.len());
        copts.real_mul = ((biased as f64 / reference.max(1) as f64).round() as usize).max(1);
        copts.save_every = plan.disc_iters;
        copts.device = self.device;
        copts.seed = seed;
        copts.init = Some(dis_init);
        let disc_bar = bar(self.opts.progress, plan.disc_iters + 1, "discriminator");
        let summary = classifier::run(&copts, &mut |p| {
            disc_bar.set_position(p.done);
            disc_bar.set_message(format!("BCE {:.3} acc {:.3}", p.mean_loss, p.accuracy));
        })?;
        disc_bar.finish_and_clear();
        let dis = summary
            .checkpoints
            .last()
            .cloned()
            .context("the discriminator run wrote no checkpoint")?;
        // held-out sets: fresh draws from the reference (balanced) and biased distributions
        let held_sizes = DemoSizes {
            biased_total: plan.sizes.biased_total / 4,
            ..plan.sizes.clone()
        };
        let held = demo_sets(&held_sizes, seed ^ 0xBEEF);
        let ts = [0.05, 0.2, 0.5, 0.8];
        let accuracy = discriminator_accuracy(&fe, &dis, &held.frechet_ref, &held.biased, &ts, seed)?;
        for (s, a) in &accuracy {
            say(&format!("      held-out accuracy at σ = {s:.3}: {a:.3}"));
        }
        Ok(DemoGuide {
            extractor: fe,
            discriminator: dis,
            accuracy,
        })
    }

    /// Stage 3: the three score models (same initialisation, batch order and noise draws); returns
    /// `(name, EMA snapshot)` per model.
    fn score_models(&mut self, data: &DemoFiles, guide: &DemoGuide) -> Result<Vec<(&'static str, PathBuf)>> {
        let runs = [
            ScoreRun {
                name: "DSM",
                precond: PrecondChoice::Edm,
                switches: (TiwWeighting::Official, TiwCorrection::Official),
            },
            ScoreRun {
                name: "TIW-DSM official",
                precond: PrecondChoice::TiwEdm,
                switches: (TiwWeighting::Official, TiwCorrection::Official),
            },
            ScoreRun {
                name: "TIW-DSM corrected",
                precond: PrecondChoice::TiwEdm,
                switches: (TiwWeighting::PerSample, TiwCorrection::Derived),
            },
        ];
        let mut snapshots = Vec::new();
        for (k, run) in runs.iter().enumerate() {
            let stage = format!("train {}", run.name);
            let snap = self.stage(&stage, |d| d.score_model(k, run, data, guide))?;
            snapshots.push((run.name, snap));
        }
        Ok(snapshots)
    }

    /// The training options of demo score model `run`.
    fn score_options(&self, run: &ScoreRun, data: &DemoFiles, guide: &DemoGuide) -> TrainOptions {
        let out = self.out;
        let mut o = TrainOptions::new(data.zip.clone(), out.join("runs"));
        o.run_dir = Some(out.join("runs").join(report::file_stem(run.name)));
        o.precond = run.precond;
        (o.tiw_weighting, o.tiw_correction) = run.switches;
        if run.precond == PrecondChoice::TiwEdm {
            o.extractor = Some(guide.extractor.clone());
            o.discriminator = Some(guide.discriminator.clone());
        }
        o.cbase = Some(16);
        o.cres = Some(vec![1, 2]);
        o.num_blocks = Some(1);
        o.attn = Some(vec![]); // no self-attention: the tiny net at 16×16 and 8×8
        o.batch = self.plan.score_batch;
        let nimg = self.plan.score_steps * self.plan.score_batch as u64;
        o.duration_mimg = nimg as f64 / 1e6;
        o.lr = 2e-3;
        o.lr_rampup_kimg = nimg as f64 / 1000.0 * 0.05;
        o.ema_mimg = nimg as f64 / 1e6 * 0.1;
        o.dropout = 0.1;
        o.augment = 0.0;
        o.tick_kimg = nimg as f64 / 1000.0 / 4.0;
        o.snap = 0;
        o.dump = 0;
        o.seed = self.opts.seed;
        o.progress = self.opts.progress;
        o
    }

    /// Trains score model `k` of the demo; returns its EMA snapshot (safetensors).
    fn score_model(
        &mut self,
        k: usize,
        run: &ScoreRun,
        data: &DemoFiles,
        guide: &DemoGuide,
    ) -> Result<PathBuf> {
        say(&format!(
            "[3/5] score model {}/3: {} ({} steps of {} images)",
            k + 1,
            run.name,
            self.plan.score_steps,
            self.plan.score_batch
        ));
        let o = self.score_options(run, data, guide);
        let progress = self.opts.progress;
        let s = crate::train::run::train_from_files(&o, self.device, &mut |l| {
            if !progress {
                eprintln!("      {l}")
            }
        })?;
        let snap = s
            .snapshots
            .iter()
            .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .cloned()
            .context("no snapshot")?;
        let losses: Vec<f64> = s
            .tick_losses
            .iter()
            .map(|l| (l * 1000.0).round() / 1000.0)
            .collect();
        say(&format!("      loss per tick {losses:?}"));
        Ok(snap)
    }

    /// The latents' seeds, the same for every model.
    fn seeds(&self) -> Vec<u64> {
        (0..self.plan.samples as u64).collect()
    }

    /// Stage 4: samples of every model, same latents.
    fn samples(&mut self, snapshots: &[(&'static str, PathBuf)]) -> Result<Vec<ModelSamples>> {
        let (plan, opts) = (&self.plan, self.opts);
        say(&format!(
            "[4/5] sampling {} images per model ({} noise levels, {:?})",
            plan.samples, plan.sampler_steps, opts.runtime
        ));
        let seeds = self.seeds();
        let mut models = Vec::new();
        for (name, snap) in snapshots {
            let mut den = load_denoiser(snap, opts.runtime, opts.device)?;
            let bar = bar(opts.progress, seeds.len() as u64, name);
            let images = crate::sample::generate_images(&mut den, &seeds, 250, plan.sampler_steps, |n| {
                bar.inc(n as u64)
            })?;
            bar.finish_and_clear();
            models.push(ModelSamples {
                name: name.to_string(),
                images,
            });
        }
        Ok(models)
    }

    /// Stage 4b: the corrected model once more, with discriminator guidance from the demo's own
    /// discriminator (same latents).
    fn guided_samples(
        &mut self,
        snapshots: &[(&'static str, PathBuf)],
        guide: &DemoGuide,
    ) -> Result<ModelSamples> {
        let (plan, opts) = (&self.plan, self.opts);
        let (_, corrected) = snapshots
            .iter()
            .find(|(n, _)| *n == "TIW-DSM corrected")
            .context("no corrected model")?;
        say(&format!(
            "[4/5] sampling TIW-DSM corrected with discriminator guidance (weight {DEMO_DG_WEIGHT})"
        ));
        let mut den = load_denoiser(corrected, opts.runtime, opts.device)?;
        let dg_guide = DgGuide::load(&guide.extractor, &guide.discriminator, opts.device, RES)?;
        let dg = DgSettings {
            w1: DEMO_DG_WEIGHT,
            ..Default::default()
        };
        let seeds = self.seeds();
        let bar = bar(opts.progress, seeds.len() as u64, DG_ROW);
        let images = generate_images_dg(&mut den, &dg_guide, &dg, &seeds, 250, plan.sampler_steps, |n| {
            bar.inc(n as u64)
        })?;
        bar.finish_and_clear();
        Ok(ModelSamples {
            name: DG_ROW.to_string(),
            images,
        })
    }

    /// The settings table of the report.
    fn settings(&self, data: &DemoFiles) -> Vec<(String, String)> {
        let (plan, sets) = (&self.plan, &data.sets);
        vec![
            (
                "biased / reference images".into(),
                format!("{} / {}", sets.biased.len(), sets.reference.len()),
            ),
            ("discriminator iterations".into(), plan.disc_iters.to_string()),
            (
                "score model".into(),
                format!(
                    "DDPM++ SongUNet, 16 channels, mult [1,2], 1 block; {} steps × {} images",
                    plan.score_steps, plan.score_batch
                ),
            ),
            (
                "samples per model".into(),
                format!(
                    "{} ({} noise levels, {:?})",
                    plan.samples, plan.sampler_steps, self.opts.runtime
                ),
            ),
        ]
    }

    /// Stage 5: the probe classifier and the report; returns `report.json`'s path.
    fn report(
        mut self,
        data: &DemoFiles,
        discriminator_accuracy: Vec<(f64, f64)>,
        models: Vec<ModelSamples>,
        t_all: Instant,
    ) -> Result<PathBuf> {
        let (opts, out) = (self.opts, self.out);
        let (probe, probe_accuracy) = self.stage("probe", |d| {
            say("[5/5] probe classifier on clean labelled data, report");
            let mut probe = Probe::new(Device::Cpu, opts.seed);
            let config = ProbeConfig {
                epochs: d.plan.probe_epochs,
                seed: opts.seed,
                ..Default::default()
            };
            probe.train(&data.sets.probe_train, &config)?;
            let probe_accuracy = probe.accuracy(&data.sets.probe_test)?;
            say(&format!("      probe held-out accuracy {probe_accuracy:.4}"));
            Ok((probe, probe_accuracy))
        })?;
        let inputs = ReportInputs {
            title: format!("TIW-DSM demo{}", if opts.quick { " (quick)" } else { "" }),
            seed: opts.seed,
            settings: self.settings(data),
            target_proportions: vec![1.0 / NUM_CLASSES as f64; NUM_CLASSES],
            data_proportions: data.observed.class_proportions().to_vec(),
            data_images: Some(data.observed.images.clone()),
            reference_images: data.sets.frechet_ref.images.clone(),
            models,
            baseline: Some("DSM".into()),
            probe_accuracy,
            discriminator_accuracy,
            stage_seconds: self.stages.clone(),
            total_seconds: t_all.elapsed().as_secs_f64(),
            bootstrap: 200,
        };
        let (_, files) = report::write(&inputs, &probe, out)?;
        say(&format!("      {}", out.join("report.md").display()));
        for (name, secs) in &self.stages {
            say(&format!("      {name:<28} {secs:>7.1} s"));
        }
        say(&format!("      total {:.1} s", t_all.elapsed().as_secs_f64()));
        if !files.json.is_file() {
            bail!("the report was not written");
        }
        Ok(files.json)
    }
}

/// A snapshot's denoiser on the demo's sampling runtime.
fn load_denoiser(snap: &Path, runtime: SampleRuntime, device: DeviceSpec) -> Result<NetDenoiser> {
    NetDenoiser::load(snap, Backend::new(runtime.into(), device))
}

fn say(s: &str) {
    eprintln!("{s}");
}

fn bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}
