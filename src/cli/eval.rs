//! `tiw eval proportions`: class proportions of a sample set under an image classifier (ONNX,
//! or TorchScript on libtorch), the total-variation distance to a target distribution and
//! bootstrap intervals ([`tiw::eval`]).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand};

use tiw::data::images::ImageSet;
use tiw::device::DeviceSpec;
use tiw::eval::classifier::{classify_set, Classifier, ClassifierRuntime, InputRange};
use tiw::eval::proportions::{parse_target, proportion_report};

/// Arguments of `tiw eval`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Class proportions of a sample set under an image classifier and their total-variation
    /// distance TV = ½ Σ|p_k − q_k| to a target q, with percentile-bootstrap 95% intervals.
    /// Prints `class NAME COUNT PROPORTION TARGET [LO HI]` lines, then `tv VALUE [LO HI]`.
    ///
    /// The classifier is an ONNX graph (`.onnx`; PyTorch models: export them with
    /// torch.onnx.export) with one input [N, C, H, W] f32 — C, H, W those of the images, no
    /// resizing — and a first output [N, K] of logits or probabilities (class = arg-max).
    /// With `--runtime torchscript` it is a TorchScript file (torch.jit.save) whose forward
    /// keeps that contract, run by libtorch: TorchScript is code from the file, so use this
    /// only for files you trust.
    /// Pixel values are fed as v/255 in [0, 1] (`--range unit`), v/127.5 − 1 in [−1, 1]
    /// (`signed`) or v in [0, 255] (`byte`).
    Proportions {
        /// Images: folder, EDM dataset .zip, or .npz (`samples`/`images` uint8 N×H×W×C).
        #[arg(long)]
        images: PathBuf,
        /// Image classifier: `.onnx`, or a TorchScript `.pt` with --runtime torchscript (see
        /// above).
        #[arg(long)]
        classifier: PathBuf,
        /// Class names, comma-separated, or a file with one name per line (default: 0..K-1).
        #[arg(long)]
        labels: Option<String>,
        /// Target distribution: `uniform`, or a file of K non-negative numbers (normalised).
        #[arg(long, default_value = "uniform")]
        target: String,
        /// Bootstrap resamples of the images for the intervals (0: none).
        #[arg(long, default_value_t = 1000)]
        bootstrap: usize,
        /// Seed of the bootstrap resamples.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Input value range of the classifier.
        #[arg(long, value_enum, default_value_t = InputRange::Unit)]
        range: InputRange,
        /// Runtime of the classifier.
        #[arg(long, value_enum, default_value_t = ClassifierRuntime::Tract)]
        runtime: ClassifierRuntime,
        /// cpu, cuda or cuda:N (ort and torchscript).
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Images per classifier call.
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
}

/// Class names from `--labels` (a comma-separated list, or a file with one per line).
fn class_names(spec: Option<&str>, k: usize) -> Result<Vec<String>> {
    let Some(spec) = spec else {
        return Ok((0..k).map(|i| i.to_string()).collect());
    };
    let path = std::path::Path::new(spec);
    let names: Vec<String> = if path.is_file() {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    } else {
        spec.split(',').map(|s| s.trim().to_string()).collect()
    };
    if names.len() != k {
        bail!(
            "--labels names {} classes but the classifier has {k}",
            names.len()
        );
    }
    Ok(names)
}

/// The target distribution over `k` classes.
fn target(spec: &str, k: usize) -> Result<Vec<f64>> {
    if spec == "uniform" {
        return Ok(vec![1.0 / k as f64; k]);
    }
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("cannot read the target file {spec}"))?;
    let t = parse_target(&text).with_context(|| spec.to_string())?;
    if t.len() != k {
        bail!(
            "{spec}: {} target proportions but the classifier has {k} classes",
            t.len()
        );
    }
    Ok(t)
}

/// Runs `tiw eval`.
pub fn run(a: Args) -> Result<()> {
    let EvalCommand::Proportions {
        images,
        classifier,
        labels,
        target: target_spec,
        bootstrap,
        seed,
        range,
        runtime,
        device,
        batch,
    } = a.command;
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let set = ImageSet::open(&images)?;
    if set.is_empty() {
        bail!("{}: no images", images.display());
    }
    let mut clf = Classifier::load(&classifier, runtime, device)?;
    eprintln!(
        "eval: {} ({}), {} images, classifier {} on {}",
        images.display(),
        set.describe(),
        set.len(),
        classifier.display(),
        clf.describe()
    );
    let (pred, k) = classify_set(&set, &mut clf, range, batch)?;
    let names = class_names(labels.as_deref(), k)?;
    let q = target(&target_spec, k)?;
    let r = proportion_report(&pred, &q, bootstrap, seed)?;
    let ci = |c: Option<&(f64, f64)>| c.map(|(lo, hi)| format!(" {lo} {hi}")).unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        println!(
            "class {name} {} {} {}{}",
            r.counts[i],
            r.proportions[i],
            r.target[i],
            ci(r.proportion_ci95.get(i))
        );
    }
    println!("tv {}{}", r.tv, ci(r.tv_ci95.as_ref()));
    Ok(())
}
