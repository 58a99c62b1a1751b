//! `tiw train`: score-model training (EDM / TIW-DSM) with libtorch, flags and defaults as
//! the official train.py.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tiw::device::DeviceSpec;
use tiw::train::loss::{TiwCorrection, TiwWeighting};
use tiw::train::options::{ArchChoice, PrecondChoice, SamplerSplit, TiwMode, TrainOptions};
use tiw::train::preempt::{self, StopSignals};

use super::ranks::DistArgs;

/// Arguments of `tiw train`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// Training data: an EDM dataset.zip (dataset_tool.py layout) or an image folder.
    #[arg(long, value_name = "ZIP|DIR")]
    data: PathBuf,
    /// Where to make the run directory `<NNNNN>-<dataset>-<cond|uncond>-<arch>-<precond>-gpus<N>-batch<B>-fp32[-desc]`.
    #[arg(long, value_name = "DIR")]
    outdir: PathBuf,
    /// Use exactly this run directory (no numbering).
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Preconditioning and loss: tiw_edm (TIW-DSM), edm (DSM), vp, ve.
    #[arg(long, value_enum, default_value = "tiw_edm")]
    precond: PrecondChoice,
    /// Network architecture preset.
    #[arg(long, value_enum, default_value = "ddpmpp")]
    arch: ArchChoice,
    /// Channel multiplier (model_channels; preset 128, adm 192).
    #[arg(long)]
    cbase: Option<usize>,
    /// Channels per resolution, e.g. 1,2,2,2 (preset 2,2,2; adm 1,2,3,4).
    #[arg(long, value_delimiter = ',')]
    cres: Option<Vec<usize>>,
    /// Residual blocks per resolution (extension; architecture default 4, adm 3).
    #[arg(long)]
    num_blocks: Option<usize>,
    /// Resolutions with self-attention, e.g. 16 or 32,16, or `none` (extension; default 16,
    /// adm 32,16,8).
    #[arg(long, value_parser = parse_resolutions)]
    attn: Option<Resolutions>,
    /// Class-conditional training (labels from dataset.json).
    #[arg(long)]
    cond: bool,
    /// Total batch size over all ranks (each of N ranks takes batch / N per step).
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Limit the batch per accumulation round on one rank.
    #[arg(long)]
    batch_gpu: Option<usize>,
    /// Training duration in Mimg.
    #[arg(long, default_value_t = 200.0)]
    duration: f64,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Learning-rate ramp-up in kimg (fixed at 10000 in the official code).
    #[arg(long, default_value_t = 10_000.0)]
    lr_rampup: f64,
    /// EMA half-life in Mimg.
    #[arg(long, default_value_t = 0.5)]
    ema: f64,
    /// EMA ramp-up ratio (0 = off).
    #[arg(long, default_value_t = 0.05)]
    ema_rampup: f64,
    /// Dropout probability.
    #[arg(long, default_value_t = 0.13)]
    dropout: f64,
    /// Mixed precision (network use_fp16: f16 compute on CUDA; the CPU runs f32 as the
    /// official code does).
    #[arg(long, default_value = "0", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, value_name = "BOOL")]
    fp16: bool,
    /// Loss scaling (the loss is multiplied by it before the backward pass).
    #[arg(long, default_value_t = 1.0)]
    ls: f64,
    /// cuDNN benchmark mode (CUDA).
    #[arg(long, default_value = "1", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, value_name = "BOOL")]
    bench: bool,
    /// Allow TF32 in cuDNN convolutions (extension; the official loop switches TF32 off).
    #[arg(long)]
    tf32: bool,
    /// Augment probability (0 = no augmentation).
    #[arg(long, default_value_t = 0.12)]
    augment: f64,
    /// Enable dataset x-flips.
    #[arg(long)]
    xflip: bool,
    /// TIW: ADM feature extractor (e.g. 32x32_classifier.pt).
    #[arg(long, value_name = "FE.pt")]
    extractor: Option<PathBuf>,
    /// TIW: time-dependent discriminator (e.g. discriminator_501.pt).
    #[arg(long, value_name = "DIS.pt")]
    discriminator: Option<PathBuf>,
    /// TIW weighting: official = the published code's batch broadcast (every sample weighted
    /// by Σ 2d, SPEC §9.2); per-sample = 2·dᵢ on sample i.
    #[arg(long, value_enum)]
    tiw_weighting: Option<TiwWeighting>,
    /// TIW target: official = y − σ²∇d (the code); derived = y + σ²∇ log d.
    #[arg(long, value_enum)]
    tiw_correction: Option<TiwCorrection>,
    /// Both TIW switches at once: official, or corrected (= per-sample + derived).
    #[arg(long, value_enum, default_value = "official")]
    tiw_mode: TiwMode,
    /// Progress interval in kimg.
    #[arg(long, default_value_t = 50.0)]
    tick: f64,
    /// Snapshot interval in ticks (0: only at the end).
    #[arg(long, default_value_t = 50)]
    snap: u64,
    /// Training-state interval in ticks (0: only at the end).
    #[arg(long, default_value_t = 500)]
    dump: u64,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Resume: `auto` (the newest run of these options in --outdir, or --run-dir, with a
    /// readable training state; a fresh start when there is none — for requeued jobs), a
    /// training-state-*.safetensors, a run directory (its newest state; the run continues
    /// in that directory), or the official training-state-*.pt with its
    /// network-snapshot-*.pkl beside it.
    #[arg(long, value_name = "auto|STATE")]
    resume: Option<PathBuf>,
    /// Start from these network weights (.pkl/.pt/.safetensors; EMA ramp-up off).
    #[arg(long, value_name = "NET")]
    transfer: Option<PathBuf>,
    /// String to include in the run directory name.
    #[arg(long)]
    desc: Option<String>,
    /// Also write snapshots as .pt state_dicts (torch.load(weights_only=True)).
    #[arg(long)]
    save_pt: bool,
    /// Stop (with a training state) once this many kimg are reached; resume later.
    #[arg(long, value_name = "KIMG")]
    stop_kimg: Option<f64>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Threads for libtorch on the CPU (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// How ranks share the dataset stream: global = one stream, rank k taking the k-th
    /// block of every step (the same data, draws and network calls as one process with the
    /// same --batch-gpu, on any world size); rank = the official per-rank sampler copies
    /// (positions ≡ k mod N; the data order depends on the world size).
    #[arg(long, value_enum, default_value = "global")]
    sampler_split: SamplerSplit,
    /// Signals that stop the run cleanly after the current optimizer step, with a training
    /// state (a second one aborts at once); `none` to keep the default actions.
    #[arg(long, value_name = "LIST", default_value = "TERM,INT,USR1")]
    stop_signals: StopSignals,
    /// Memory limit in GB for the memory guard (default: detected — MemAvailable or the
    /// cgroup limit on the CPU; unchecked on CUDA).
    #[arg(long, value_name = "GB")]
    max_memory: Option<f64>,
    #[command(flatten)]
    dist: DistArgs,
}

/// A list of resolutions (`--attn`).
#[derive(Debug, Clone)]
struct Resolutions(Vec<usize>);

fn parse_resolutions(s: &str) -> std::result::Result<Resolutions, String> {
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(Resolutions(vec![]));
    }
    s.split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Resolutions)
}

const AFTER_HELP: &str = "\
TIW switches (see README, 'TIW-DSM: official code vs. corrected'):
  --tiw-mode official    reproduces the published code (default; matches the released models)
  --tiw-mode corrected   per-sample 2·d weighting and the target y + σ²∇log d
  --tiw-weighting / --tiw-correction override either switch alone.

Examples (the paper's CIFAR-10-LT 5% run; 4 GPUs in the paper, batch 256):
  tiw train --data cifar10/score_training/500_10000/dataset.zip --outdir runs \\
      --arch ddpmpp --batch 256 --tick 5 --duration 11 \\
      --extractor 32x32_classifier.pt --discriminator discriminator_501.pt --device cuda";

impl Args {
    fn options(&self) -> TrainOptions {
        let mut o = TrainOptions::new(self.data.clone(), self.outdir.clone());
        o.run_dir = self.run_dir.clone();
        o.precond = self.precond;
        o.arch = self.arch;
        o.cbase = self.cbase;
        o.cres = self.cres.clone();
        o.num_blocks = self.num_blocks;
        o.attn = self.attn.as_ref().map(|r| r.0.clone());
        o.cond = self.cond;
        o.batch = self.batch;
        o.batch_gpu = self.batch_gpu;
        o.duration_mimg = self.duration;
        o.lr = self.lr;
        o.lr_rampup_kimg = self.lr_rampup;
        o.ema_mimg = self.ema;
        o.ema_rampup = (self.ema_rampup > 0.0).then_some(self.ema_rampup);
        o.dropout = self.dropout;
        o.fp16 = self.fp16;
        o.loss_scaling = self.ls;
        o.cudnn_benchmark = self.bench;
        o.tf32 = self.tf32;
        o.augment = self.augment;
        o.xflip = self.xflip;
        o.extractor = self.extractor.clone();
        o.discriminator = self.discriminator.clone();
        let (w, c) = self.tiw_mode.switches();
        o.tiw_weighting = self.tiw_weighting.unwrap_or(w);
        o.tiw_correction = self.tiw_correction.unwrap_or(c);
        o.tick_kimg = self.tick;
        o.snap = self.snap;
        o.dump = self.dump;
        o.seed = self.seed;
        // `auto` is a keyword (a state file named `auto` can be given as ./auto)
        o.resume_auto = self.resume.as_deref() == Some(std::path::Path::new("auto"));
        o.resume = self.resume.clone().filter(|_| !o.resume_auto);
        o.transfer = self.transfer.clone();
        o.desc = self.desc.clone();
        o.save_pt = self.save_pt;
        o.stop_kimg = self.stop_kimg;
        o.progress = !self.quiet;
        o.sampler_split = self.sampler_split;
        o.max_memory_gb = self.max_memory;
        o
    }
}

/// Runs `tiw train`.
pub fn run(a: Args) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    preempt::install(&a.stop_signals)?;
    let ranks = a.dist.join(a.device)?;
    let opts = a.options();
    let summary =
        tiw::train::run::train_from_files_on(&opts, ranks.device, ranks.comm(), &mut |l| eprintln!("{l}"))
            .with_context(|| format!("training on {}", opts.data.display()))?;
    if ranks.rank_world().0 == 0 {
        if let Some(sig) = &summary.stopped_by {
            eprintln!(
                "Stopped by {sig} at {:.3} kimg; to continue, rerun the same command with --resume auto (or --resume {})",
                summary.cur_nimg as f64 / 1000.0,
                summary.run_dir.display()
            );
        }
        println!("{}", summary.run_dir.display());
    }
    Ok(())
}
