//! Command definitions (clap) and dispatch.

mod compare;
mod convert;
mod dataset;
mod demo;
mod dist_check;
mod doctor;
mod eval;
mod fid;
mod forward;
mod generate;
mod guidance;
mod inspect;
mod ranks;
mod train;
mod train_classifier;
mod verify;

use clap::{Parser, Subcommand};

/// tiw — TIW-DSM / EDM toolkit: read PyTorch checkpoints safely (no pickle code is ever
/// executed), convert them, and (in later versions) export, sample, evaluate and train.
#[derive(Debug, Parser)]
// bin_name: `tiw` execs this binary (tiw-full); usage and help name the command users type
#[command(name = "tiw", bin_name = "tiw", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Describe a checkpoint: format, pickle globals (opaque ones flagged), object tree,
    /// recovered configuration and a tensor table. Reads .pkl, .pt (zip or legacy) and
    /// .safetensors; nothing in the file is executed.
    Inspect(inspect::Args),
    /// Convert a checkpoint to .safetensors (tensors named like PyTorch's state_dict, JSON
    /// config + source sha256 in the metadata), to a .pt state_dict loadable with
    /// `torch.load(path, weights_only=True)`, or export it to .onnx (`tiw export` is the same
    /// command). The output format follows OUT's extension.
    #[command(visible_alias = "export")]
    Convert(convert::Args),
    /// Run an EDM network (`D`, `F_x`) or the ADM extractor/discriminator on inputs from an
    /// .npz, loading .pkl/.pt/.safetensors directly — for parity checks against PyTorch.
    Forward(forward::Args),
    /// Discriminator-guidance gradient, log ratio, prediction and TIW weight correction.
    Guidance(guidance::Args),
    /// Sample images with the EDM sampler (Heun, churn, ablation options) into PNGs laid out
    /// like EDM's generate.py; per-seed latents identical to PyTorch's; shardable (`--shard I/N`).
    Generate(generate::Args),
    /// Compare two .npz files key by key (B is the reference); exit status 1 on failure.
    Compare(compare::Args),
    /// Fréchet Inception Distance as EDM's fid.py: `ref` (dataset statistics), `calc` (FID of
    /// an image set), `stats`/`merge` (mergeable partial statistics), `distance`.
    Fid(fid::Args),
    /// Evaluate a sample set: `proportions` (class proportions under an ONNX image classifier
    /// and their total-variation distance to a target, with bootstrap intervals).
    Eval(eval::Args),
    /// Train a score model (EDM / TIW-DSM) with libtorch: flags and defaults as the official
    /// train.py, snapshots as .safetensors (loadable by `tiw generate`), training states that
    /// resume bit-exactly on the CPU, and the official training-state .pt + .pkl as --resume.
    Train(train::Args),
    /// Check a converted checkpoint before deployment: run the same inputs through every
    /// available runtime (libtorch, ONNX Runtime CPU/CUDA, tract), compare them with each
    /// other and with PyTorch outputs (`--reference`, `tiw forward`'s .npz format); exit
    /// status 1 above the tolerance.
    Verify(verify::Args),
    /// The CPU end-to-end miniature of the paper's experiment: procedural long-tailed data,
    /// a discriminator, DSM vs TIW-DSM (official and corrected) score models, samples, and a
    /// report of class balance and Fréchet distance (`--quick`: a 2-minute pipeline check).
    Demo(demo::Args),
    /// Build training data from your own images: `convert` (EDM's dataset_tool.py: folder,
    /// zip, CIFAR tarball or npz to a dataset .zip) and `split` (a biased set and a balanced
    /// reference set with the score- and discriminator-training files).
    Dataset(dataset::Args),
    /// Train the time-dependent discriminator (train_classifier.py): real vs biased images,
    /// noised at importance-sampled VP times, through a frozen ADM feature extractor; BCE +
    /// Adam; checkpoints discriminator_{i+1}.pt, a resumable state and stats.jsonl.
    TrainClassifier(train_classifier::Args),
    /// Report the runtime environment: libtorch version and CUDA availability, ONNX Runtime
    /// library location.
    Doctor,
    /// Start this node's ranks of a data-parallel run (like torchrun): `tiw launch
    /// --nproc-per-node N -- train ...`.
    Launch(crate::launch::LaunchArgs),
    /// Check the data-parallel layer: join the run described by the launcher's environment
    /// (`tiw launch`, torchrun, srun) and verify every collective with exact values.
    #[command(hide = true)]
    DistCheck(dist_check::Args),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Forward(a) => forward::run(a),
        Command::Guidance(a) => guidance::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Fid(a) => fid::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Train(a) => train::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Demo(a) => demo::run(a),
        Command::TrainClassifier(a) => train_classifier::run(a),
        Command::Dataset(a) => dataset::run(a),
        Command::Doctor => doctor::run(),
        Command::DistCheck(a) => dist_check::run(a),
        Command::Launch(a) => match crate::launch::launch(&a)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
    }
}
