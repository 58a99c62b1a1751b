//! `tiw train-classifier`: train the time-dependent discriminator (SPEC §4).

use std::path::PathBuf;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use tiw::device::DeviceSpec;
use tiw::train::classifier::{run_on, ClassifierOpts};
use tiw::train::preempt::{self, StopSignals};

use super::ranks::DistArgs;

/// Arguments of `tiw train-classifier` (the flags of train_classifier.py).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference (real) images: .npz with `samples` uint8 (N, H, W, C), a dataset .zip or an
    /// image folder; label 1.
    #[arg(long = "ref")]
    ref_path: PathBuf,
    /// Biased (generated) images: .npz with `samples` (or the `images` of `tiw generate
    /// --out-npz`), a dataset .zip or an image folder (e.g. `tiw generate --outdir`); label 0.
    #[arg(long = "bias")]
    bias_path: PathBuf,
    /// ADM feature extractor (.pt or .safetensors), e.g. 32x32_classifier.pt.
    #[arg(long)]
    extractor: PathBuf,
    /// Output folder: discriminator_{i+1}.pt, training-state.safetensors, stats.jsonl.
    #[arg(long)]
    savedir: PathBuf,
    /// Image resolution (32 or 64; must match the extractor and the data).
    #[arg(long, default_value_t = 32)]
    img_resolution: usize,
    /// Iterations.
    #[arg(long, default_value_t = 20000)]
    iter: u64,
    /// Images per class per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// L2 weight decay added to the gradients.
    #[arg(long, default_value_t = 1e-7)]
    weight_decay: f64,
    /// Repeat the reference set this many times.
    #[arg(long, default_value_t = 20)]
    real_mul: usize,
    /// Checkpoint and statistics period (files discriminator_1, _501, ... for 500).
    #[arg(long, default_value_t = 500)]
    save_every: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Seed of the init, the noise draws and the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from SAVEDIR/training-state.safetensors; `--resume auto`: continue when that
    /// state exists and is readable, else start fresh (for requeued jobs).
    #[arg(long, value_name = "auto", num_args = 0..=1, default_missing_value = "yes", value_parser = ["yes", "auto"])]
    resume: Option<String>,
    /// Start from this discriminator (.pt / .safetensors) instead of a fresh init.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Rows per accumulation round on one rank (extension; default: the rank's whole share
    /// of the step's 2 × --batch-size rows).
    #[arg(long)]
    batch_gpu: Option<usize>,
    /// Signals that stop the run cleanly after the current iteration, with a training
    /// state (a second one aborts at once); `none` to keep the default actions.
    #[arg(long, value_name = "LIST", default_value = "TERM,INT,USR1")]
    stop_signals: StopSignals,
    /// 1: class-conditional discriminator (DG's `--cond 1`): labels from the npz `label` /
    /// `labels` arrays, dataset.json or class folders, fed through `label_emb`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    cond: u8,
    #[command(flatten)]
    dist: DistArgs,
}

/// Runs `tiw train-classifier`.
pub fn run(a: Args) -> Result<()> {
    let mut o = ClassifierOpts::new(a.ref_path, a.bias_path, a.extractor, a.savedir);
    o.img_resolution = a.img_resolution;
    o.iters = a.iter;
    o.batch_size = a.batch_size;
    o.batch_gpu = a.batch_gpu;
    o.lr = a.lr;
    o.weight_decay = a.weight_decay;
    o.real_mul = a.real_mul;
    o.save_every = a.save_every;
    o.cond = a.cond == 1;
    preempt::install(&a.stop_signals)?;
    let ranks = a.dist.join(a.device)?;
    o.device = ranks.device;
    let rank0 = ranks.rank_world().0 == 0;
    o.seed = a.seed;
    o.resume = resume_from(a.resume.as_deref(), &o.savedir, rank0);
    o.init = a.init;
    let bar = if rank0 {
        ProgressBar::new(o.iters)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} it {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let s = run_on(&o, ranks.comm(), &mut |p| {
        bar.set_position(p.done);
        bar.set_message(format!("bce {:.4} acc {:.3}", p.mean_loss, p.accuracy));
        if let Some(path) = &p.saved {
            bar.println(format!(
                "iter {}: bce {:.4} acc {:.3} -> {}",
                p.done,
                p.mean_loss,
                p.accuracy,
                path.display()
            ));
        }
    })?;
    bar.finish();
    if let (Some(sig), true) = (&s.stopped_by, rank0) {
        eprintln!(
            "Stopped by {sig} after iteration {}; the state is in {}; to continue, rerun the same command with --resume auto",
            s.iterations,
            o.savedir.display()
        );
        return Ok(());
    }
    if rank0 {
        println!(
            "{} iterations; {} checkpoints written",
            s.iterations,
            s.checkpoints.len()
        );
    }
    Ok(())
}

/// Whether to resume: `--resume` always; `--resume auto` when the save folder holds a
/// readable state (said on stderr by rank 0).
fn resume_from(arg: Option<&str>, savedir: &std::path::Path, rank0: bool) -> bool {
    match arg {
        None => false,
        Some("auto") => {
            let path = savedir.join(tiw::train::classifier::state::FILE);
            let ok = tiw::train::checkpoint::safetensors_kind(&path).as_deref()
                == Some("discriminator-training-state");
            if rank0 {
                if ok {
                    eprintln!("--resume auto: continuing from {}", path.display());
                } else {
                    eprintln!("--resume auto: no readable {} ; starting fresh", path.display());
                }
            }
            ok
        }
        Some(_) => true,
    }
}
