//! `tiw verify`: the command line of [`tiw::verify`] (every runtime on the same inputs, a
//! parity table, failure above the tolerance).

use std::path::PathBuf;

use anyhow::Result;
use tiw::device::DeviceSpec;
use tiw::verify::VerifyOptions;

/// Arguments of `tiw verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// EDM network: snapshot .pkl, training-state .pt, .safetensors made by `tiw convert`, or
    /// an .onnx exported by `tiw export` (then libtorch is skipped). Output checked: `D`.
    #[arg(long, conflicts_with = "extractor", required_unless_present = "extractor")]
    network: Option<PathBuf>,
    /// ADM feature extractor (.pt or .onnx). Output checked: `features`.
    #[arg(long)]
    extractor: Option<PathBuf>,
    /// Time-dependent discriminator (.pt or .onnx) on the extractor's features. Output
    /// checked: `dis_logits`.
    #[arg(long, requires = "extractor")]
    discriminator: Option<PathBuf>,
    /// PyTorch outputs in `tiw forward`'s .npz format: inputs `x`, `sigma` [, `class_labels`]
    /// [, `augment_labels`] and output `D` (networks; `D_augment`, if present, is the output
    /// with `augment_labels` and `D` the one without, as in the official fixtures), or inputs
    /// `x`, `t` [, condition] and outputs `features` [, `dis_logits`] (extractor). Without
    /// it, seeded inputs are generated and the runtimes are only compared with each other.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Number of generated inputs (without --reference).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Largest accepted normalised error.
    #[arg(long, default_value_t = 1e-4)]
    tol: f64,
    /// Device of libtorch (and, for cuda, of an extra ONNX Runtime CUDA-EP run): cpu, cuda,
    /// cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Seed of the generated inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Extractor image resolution, if its layout is ambiguous from the weights.
    #[arg(long)]
    img_resolution: Option<usize>,
    /// Key of the conditional discriminator's labels in --reference.
    #[arg(long)]
    condition_key: Option<String>,
}

/// Runs `tiw verify`; fails when an error exceeds `--tol` or nothing could be compared.
pub fn run(a: Args) -> Result<()> {
    tiw::verify::run(&VerifyOptions {
        network: a.network,
        extractor: a.extractor,
        discriminator: a.discriminator,
        reference: a.reference,
        batch: a.batch,
        tol: a.tol,
        device: a.device,
        seed: a.seed,
        img_resolution: a.img_resolution,
        condition_key: a.condition_key,
    })
}
