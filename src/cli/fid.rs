//! `tiw fid`: Fréchet Inception Distance as EDM's `fid.py` (`ref`, `calc`), plus mergeable
//! partial statistics (`stats`, `merge`) and the distance between two statistics files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand};

use tiw::data::images::ImageSet;
use tiw::device::DeviceSpec;
use tiw::fid::detector::{self, Detector, DetectorRuntime};
use tiw::fid::distance::{format_g, frechet_distance};
use tiw::fid::stats::{FeatureStats, MuSigma};
use tiw::fid::statsfile::{self, StatsFile};
use tiw::fid::{self as fidlib, ExtractOpts};
use tiw::train::parallel::Collective;

use super::ranks::DistArgs;

/// Arguments of `tiw fid`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: FidCommand,
}

#[derive(Debug, Subcommand)]
enum FidCommand {
    /// Reference statistics of a dataset (all its images): writes `mu`, `sigma` exactly as
    /// `np.savez(dest, mu=mu, sigma=sigma)` (EDM `fid.py ref`).
    Ref {
        /// Images: folder, EDM dataset .zip, or .npz (`samples`/`images` uint8 N×H×W×C).
        #[arg(long)]
        data: PathBuf,
        /// Output .npz.
        #[arg(long)]
        dest: PathBuf,
        /// Use a random subset of this many images (default: all).
        #[arg(long)]
        num: Option<usize>,
        /// Seed of the subset selection.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[command(flatten)]
        det: DetectorArgs,
    },
    /// FID of an image set against reference statistics; prints the value (`%g`) on stdout.
    Calc {
        /// Images: folder, EDM dataset .zip, or .npz (`samples`/`images` uint8 N×H×W×C).
        #[arg(long)]
        images: PathBuf,
        /// Reference statistics (.npz with mu/sigma, e.g. EDM's cifar10-32x32.npz; or a
        /// partial-statistics file).
        #[arg(long = "ref")]
        reference: PathBuf,
        /// Number of images: a random subset of this size (error if fewer exist).
        #[arg(long, default_value_t = 50000)]
        num: usize,
        /// Seed of the subset selection.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[command(flatten)]
        det: DetectorArgs,
    },
    /// Partial statistics (n, Σf, Σffᵀ in f64) of an image set, mergeable with `tiw fid merge`.
    Stats {
        /// Images: folder, EDM dataset .zip, or .npz.
        #[arg(long)]
        images: PathBuf,
        /// Output .npz (`n`, `sum`, `sum_outer`).
        #[arg(long)]
        dest: PathBuf,
        /// Use a random subset of this many images (default: all; error if fewer exist).
        #[arg(long)]
        num: Option<usize>,
        /// Seed of the subset selection.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[command(flatten)]
        det: DetectorArgs,
    },
    /// Adds partial statistics files.
    Merge {
        /// Partial statistics files (from `tiw fid stats` or `merge`).
        #[arg(required = true, num_args = 1..)]
        parts: Vec<PathBuf>,
        /// Output .npz.
        #[arg(long)]
        dest: PathBuf,
        /// Write reference statistics (`mu`, `sigma`, EDM layout) instead of partial sums.
        #[arg(long)]
        mu_sigma: bool,
    },
    /// FID between two statistics files (reference or partial); prints the value (`%g`).
    Distance {
        /// First statistics.
        a: PathBuf,
        /// Second statistics.
        b: PathBuf,
    },
    /// Writes the detector as an ONNX graph (input `x [N,3,299,299]` already resized and
    /// normalised, output `features [N,2048]`), usable as `--detector` with `--runtime ort`.
    Export {
        /// Inception-v3 FID weights (state dict); default: $TIW_FID_DETECTOR.
        #[arg(long)]
        detector: Option<PathBuf>,
        /// Output .onnx.
        #[arg(long)]
        dest: PathBuf,
        /// ONNX opset (17 to 21).
        #[arg(long, default_value_t = 17)]
        opset: i64,
    },
}

/// Detector and execution options shared by `ref`, `calc` and `stats`.
#[derive(Debug, ClapArgs)]
struct DetectorArgs {
    /// Inception-v3 FID weights (state dict .pth/.pt/.safetensors, or an exported .onnx);
    /// default: $TIW_FID_DETECTOR.
    #[arg(long)]
    detector: Option<PathBuf>,
    /// Runtime of the detector.
    #[arg(long, value_enum, default_value_t = DetectorRuntime::Ort)]
    runtime: DetectorRuntime,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Maximum images per detector call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Image decoding/resizing threads (default: cores, at most 8).
    #[arg(long)]
    workers: Option<usize>,
    /// No progress bar or timing line.
    #[arg(long, short)]
    quiet: bool,
    /// Memory limit in GB for the check before the first batch (default: the CPU's available
    /// memory, or the CUDA device's free memory).
    #[arg(long)]
    max_memory: Option<f64>,
    #[command(flatten)]
    dist: DistArgs,
}

impl DetectorArgs {
    fn opts(&self) -> Result<ExtractOpts> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let mut o = ExtractOpts {
            batch: self.batch,
            progress: !self.quiet,
            ..Default::default()
        };
        if let Some(w) = self.workers {
            o.workers = w.max(1);
        }
        Ok(o)
    }
}

/// Statistics of an image set computed by this process's rank, summed over all ranks.
struct RankStats {
    stats: FeatureStats,
    /// Whether this process writes and prints (rank 0).
    writer: bool,
}

/// Opens the image set, selects the subset and computes the statistics; under a launcher
/// each rank extracts its share of the images (EDM fid.py's split) and the f64 sums are
/// added over ranks, so every rank ends with the statistics of the whole subset.
fn image_stats(path: &Path, num: Option<usize>, seed: i64, d: &DetectorArgs) -> Result<RankStats> {
    let mut opts = d.opts()?;
    let ranks = d.dist.join(d.device)?;
    let (rank, world) = ranks.rank_world();
    let quiet = d.quiet || rank != 0;
    opts.progress &= !quiet;
    let set = ImageSet::open(path)?;
    let idx = fidlib::select(&set, num, seed)?;
    let det_path = detector::resolve_path(d.detector.as_deref())?;
    if !quiet {
        eprintln!(
            "fid: {} ({}), using {} images{}",
            path.display(),
            set.describe(),
            idx.len(),
            if world > 1 {
                format!(" over {world} ranks")
            } else {
                String::new()
            }
        );
        eprintln!("fid: loading detector {} ({:?})", det_path.display(), d.runtime);
    }
    let spec = match ranks.device {
        tch::Device::Cuda(n) => DeviceSpec::Cuda(n),
        _ => DeviceSpec::Cpu,
    };
    let mut det = Detector::load(&det_path, d.runtime, spec)?;
    let line = tiw::train::memory::guard_fid(d.runtime, opts.batch, opts.workers, spec, d.max_memory)?;
    if !quiet {
        eprintln!("fid: {line}");
    }
    let mine = fidlib::rank_share(&idx, opts.batch, rank, world);
    let mut stats = fidlib::extract_stats(&set, &mine, &mut det, &opts)?;
    if world > 1 {
        stats = sum_over_ranks(ranks.comm(), &mut stats)?;
    }
    Ok(RankStats {
        stats,
        writer: rank == 0,
    })
}

/// `n`, `Σf` and `Σffᵀ` (f64) added over ranks.
fn sum_over_ranks(comm: &dyn Collective, st: &mut FeatureStats) -> Result<FeatureStats> {
    let n = tch::Tensor::from_slice(&[st.count() as f64]);
    let sum = tch::Tensor::from_slice(st.sum());
    let outer = tch::Tensor::from_slice(&st.sum_outer());
    comm.sum(&[&n, &sum, &outer])?;
    let to_vec = |t: &tch::Tensor| Vec::<f64>::try_from(t).context("reading summed statistics");
    Ok(FeatureStats::from_parts(
        n.double_value(&[0]).round() as u64,
        to_vec(&sum)?,
        &to_vec(&outer)?,
    ))
}

fn check_dim(s: &MuSigma, path: &Path) -> Result<()> {
    let want = tiw_models::inception::FEATURE_DIM;
    if s.dim() != want {
        bail!(
            "{}: reference statistics have dimension {}, but the Inception detector gives {want}-d features",
            path.display(),
            s.dim()
        );
    }
    Ok(())
}

/// Runs `tiw fid`.
pub fn run(a: Args) -> Result<()> {
    // SIGTERM/SIGINT/SIGUSR1: stop at the next batch boundary, writing nothing (a second
    // signal: at once)
    tiw::train::preempt::install(&Default::default())?;
    match a.command {
        FidCommand::Ref {
            data,
            dest,
            num,
            seed,
            det,
        } => {
            let RankStats {
                stats: mut st,
                writer,
            } = image_stats(&data, num, seed, &det)?;
            if !writer {
                return Ok(());
            }
            let ms = st.mu_sigma()?;
            statsfile::write_reference(&dest, &ms)?;
            if !det.quiet {
                eprintln!(
                    "fid: wrote {} (mu, sigma of {} images)",
                    dest.display(),
                    st.count()
                );
            }
        }
        FidCommand::Calc {
            images,
            reference,
            num,
            seed,
            det,
        } => {
            // the reference is read first, so that a bad file fails before the long pass
            let r = statsfile::read_mu_sigma(&reference)?;
            check_dim(&r, &reference)?;
            let RankStats {
                stats: mut st,
                writer,
            } = image_stats(&images, Some(num), seed, &det)?;
            if writer {
                let ms = st.mu_sigma()?;
                let f = frechet_distance(&ms, &r)?;
                println!("{}", format_g(f.fid));
            }
        }
        FidCommand::Stats {
            images,
            dest,
            num,
            seed,
            det,
        } => {
            let RankStats {
                stats: mut st,
                writer,
            } = image_stats(&images, num, seed, &det)?;
            if !writer {
                return Ok(());
            }
            statsfile::write_partial(&dest, &mut st)?;
            if !det.quiet {
                eprintln!(
                    "fid: wrote {} (partial statistics of {} images)",
                    dest.display(),
                    st.count()
                );
            }
        }
        FidCommand::Merge {
            parts,
            dest,
            mu_sigma,
        } => {
            let mut total: Option<FeatureStats> = None;
            for p in &parts {
                let mut s = match statsfile::read(p)? {
                    StatsFile::Partial(s) => s,
                    StatsFile::Reference(_) => bail!(
                        "{}: reference statistics (mu, sigma) cannot be merged; merge the partial files from `tiw fid stats`",
                        p.display()
                    ),
                };
                match &mut total {
                    None => total = Some(s),
                    Some(t) => t.merge(&mut s).with_context(|| format!("{}", p.display()))?,
                }
            }
            let mut t = total.expect("at least one part");
            if mu_sigma {
                statsfile::write_reference(&dest, &t.mu_sigma()?)?;
            } else {
                statsfile::write_partial(&dest, &mut t)?;
            }
            eprintln!(
                "fid: merged {} file(s), {} feature vectors -> {}",
                parts.len(),
                t.count(),
                dest.display()
            );
        }
        FidCommand::Export {
            detector,
            dest,
            opset,
        } => {
            let path = detector::resolve_path(detector.as_deref())?;
            let (store, _) = tiw_models::load::read(&path)
                .with_context(|| format!("cannot read the detector weights {}", path.display()))?;
            let meta = vec![
                (
                    "tiw.source".to_string(),
                    path.file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                (
                    "tiw.exporter".to_string(),
                    format!("tiw {}", env!("CARGO_PKG_VERSION")),
                ),
            ];
            let model = tiw_models::inception::export_onnx(&store, opset, &meta)
                .with_context(|| format!("{}", path.display()))?;
            tiw::onnx_export::write_onnx(&model, &dest)?;
            eprintln!("fid: wrote {}", dest.display());
        }
        FidCommand::Distance { a, b } => {
            let sa = statsfile::read_mu_sigma(&a)?;
            let sb = statsfile::read_mu_sigma(&b)?;
            if sa.dim() != sb.dim() {
                bail!(
                    "{} has dimension {} but {} has dimension {}",
                    a.display(),
                    sa.dim(),
                    b.display(),
                    sb.dim()
                );
            }
            println!("{}", format_g(frechet_distance(&sa, &sb)?.fid));
        }
    }
    Ok(())
}
