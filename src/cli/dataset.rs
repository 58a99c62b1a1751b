//! `tiw dataset convert|split`: your own images to the training inputs (SPEC §5.4).

use std::path::PathBuf;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tiw::data::dataset_tool::{convert, ConvertOptions, Transform};
use tiw::data::split::{split, Ratios, SplitOptions};

/// Arguments of `tiw dataset`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// EDM's `dataset_tool.py convert`: an image folder (class sub-folders or a dataset.json
    /// give labels), a dataset .zip, cifar-10-python.tar.gz or a uint8 .npz to a dataset .zip
    /// (`00000/img00000000.png`…, dataset.json), resized with PIL's Lanczos.
    Convert(ConvertArgs),
    /// A biased set (long-tailed or given class ratios) and a disjoint class-balanced reference
    /// set from a labelled dataset .zip: score_training/dataset.zip, discriminator_training/
    /// {bias/fake_data.npz, reference/real_data.npz} and split.json.
    Split(SplitArgs),
}

#[derive(Debug, clap::ValueEnum, Clone, Copy)]
enum TransformArg {
    CenterCrop,
    CenterCropWide,
}

/// `tiw dataset convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Image folder, dataset .zip, CIFAR python .tar.gz or .npz (`samples`/`images` uint8).
    #[arg(long, value_name = "DIR|ZIP|TAR.GZ|NPZ")]
    source: PathBuf,
    /// Output dataset .zip (written to a temporary file, renamed at the end).
    #[arg(long, value_name = "OUT.zip")]
    dest: PathBuf,
    /// Output resolution WxH (e.g. 32x32): images are resized with PIL's Lanczos.
    #[arg(long, value_name = "WxH", value_parser = parse_wxh)]
    resolution: Option<(usize, usize)>,
    /// Crop before resizing (needs --resolution).
    #[arg(long, value_enum)]
    transform: Option<TransformArg>,
    /// Convert only the first N source images.
    #[arg(long, value_name = "N")]
    max_images: Option<usize>,
    /// Leave out unreadable images and images whose size differs from the first (counted),
    /// instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Worker threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// `tiw dataset split`.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// Labelled dataset .zip (from `tiw dataset convert`).
    #[arg(long, value_name = "ZIP")]
    source: PathBuf,
    /// |D_ref| / |D_bias| (the paper's "5%" = 0.05).
    #[arg(long, value_name = "F")]
    reference_fraction: f64,
    /// Biased-set class profile: one value per class (normalised by the largest).
    #[arg(
        long,
        value_delimiter = ',',
        conflicts_with = "long_tail",
        value_name = "R0,R1,…"
    )]
    class_ratios: Option<Vec<f64>>,
    /// Exponential long tail n_c = n_max · FACTOR^(−c/(C−1)) (CIFAR-10-LT; class 0 largest).
    #[arg(long, value_name = "FACTOR")]
    long_tail: Option<f64>,
    /// Biased images of the head class (default: the largest that fits beside the reference
    /// set).
    #[arg(long, value_name = "N")]
    max_per_class: Option<usize>,
    /// Seed of the choice of images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (absent or empty).
    #[arg(long, value_name = "DIR")]
    outdir: PathBuf,
}

fn parse_wxh(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', ','])
        .ok_or_else(|| format!("cannot parse {s:?} as WxH"))?;
    let p = |v: &str| {
        v.parse::<usize>()
            .map_err(|_| format!("cannot parse {s:?} as WxH"))
    };
    Ok((p(w)?, p(h)?))
}

/// Runs `work` with a progress bar named `what` that its `(done, total)` reports drive,
/// cleared when it returns.
fn with_progress<T>(what: &str, work: impl FnOnce(&mut dyn FnMut(usize, usize)) -> Result<T>) -> Result<T> {
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} images {{per_sec}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let out = work(&mut |done, total| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    });
    b.finish_and_clear();
    out
}

/// Runs `tiw dataset`.
pub fn run(a: Args) -> Result<()> {
    match a.command {
        Sub::Convert(c) => run_convert(c),
        Sub::Split(s) => run_split(s),
    }
}

fn run_convert(a: ConvertArgs) -> Result<()> {
    let opts = ConvertOptions {
        resolution: a.resolution,
        transform: a.transform.map(|t| match t {
            TransformArg::CenterCrop => Transform::CenterCrop,
            TransformArg::CenterCropWide => Transform::CenterCropWide,
        }),
        max_images: a.max_images,
        skip_bad: a.skip_bad,
        threads: a.threads,
    };
    let s = with_progress("convert", |p| convert(&a.source, &a.dest, &opts, p))?;
    let (w, h, c) = s.shape;
    eprintln!(
        "{}: {} images {w}×{h}×{c}, labels: {}",
        a.dest.display(),
        s.written,
        if s.labelled {
            "yes"
        } else {
            "none (dataset.json: null)"
        }
    );
    if s.unlabelled > 0 && s.unlabelled < s.written {
        eprintln!(
            "warning: {} of {} images have no label, so dataset.json has none",
            s.unlabelled, s.written
        );
    }
    if s.skipped_small > 0 {
        eprintln!(
            "{} images were too small for center-crop-wide and left out",
            s.skipped_small
        );
    }
    if s.skipped_bad > 0 {
        eprintln!("--skip-bad left out {} images, e.g.:", s.skipped_bad);
        for e in &s.skipped_examples {
            eprintln!("  {e}");
        }
    }
    Ok(())
}

fn run_split(a: SplitArgs) -> Result<()> {
    let ratios = match (a.class_ratios, a.long_tail) {
        (Some(v), None) => Ratios::Explicit(v),
        (None, Some(f)) => Ratios::LongTail(f),
        (None, None) => Ratios::Uniform,
        (Some(_), Some(_)) => bail!("give --class-ratios or --long-tail, not both"),
    };
    let opts = SplitOptions {
        reference_fraction: a.reference_fraction,
        ratios,
        max_per_class: a.max_per_class,
        seed: a.seed,
    };
    let s = with_progress("split", |p| split(&a.source, &a.outdir, &opts, p))?;
    let p = &s.plan;
    eprintln!(
        "{}: biased {} images {:?} per class, reference {} {:?} per class (n_max {})",
        a.outdir.display(),
        p.bias.iter().sum::<usize>(),
        p.bias,
        p.reference.iter().sum::<usize>(),
        p.reference,
        p.max_per_class
    );
    Ok(())
}
