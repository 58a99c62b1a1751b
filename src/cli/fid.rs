//! `tiw fid`: Fréchet Inception Distance as EDM's `fid.py` (`ref`, `calc`), plus mergeable
//! partial statistics (`stats`, `merge`), the distance between two statistics files, and
//! KID, precision/recall and the Inception Score (`--metrics`, [`tiw::fid::metrics`]) from
//! the same pass over the detector.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, Subcommand};

use tiw::data::images::ImageSet;
use tiw::device::DeviceSpec;
use tiw::fid::detector::{self, Detector, DetectorRuntime};
use tiw::fid::distance::{format_g, frechet_distance};
use tiw::fid::metrics::{self, Features, Metric, MetricOptions, ProductDtype, SetData};
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
        #[command(flatten)]
        metrics: MetricArgs,
    },
    /// FID of an image set against reference statistics; prints the value (`%g`) on stdout,
    /// or with `--metrics` one `name value` line per metric.
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
        #[command(flatten)]
        metrics: MetricArgs,
    },
    /// Partial statistics (n, Σf, Σffᵀ in f64) of an image set, mergeable with `tiw fid merge`.
    Stats {
        /// Images: folder, EDM dataset .zip, or .npz.
        #[arg(long)]
        images: PathBuf,
        /// Output .npz (`n`, `sum`, `sum_outer`; with --keep-features also `features`).
        #[arg(long)]
        dest: PathBuf,
        /// Also store the per-sample detector features (`features`, N×2048 f32, in subset
        /// order) for KID and precision/recall; `merge` concatenates them.
        #[arg(long)]
        keep_features: bool,
        /// Use a random subset of this many images (default: all; error if fewer exist).
        #[arg(long)]
        num: Option<usize>,
        /// Seed of the subset selection.
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[command(flatten)]
        det: DetectorArgs,
    },
    /// Adds partial statistics files (and concatenates their features when every part has them).
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
    /// FID between two statistics files (reference or partial); prints the value (`%g`), or
    /// with `--metrics fid,kid,prc[,is]` one `name value` line per metric (KID and
    /// precision/recall need the files' `features`).
    Distance {
        /// Generated set: statistics or features file.
        a: PathBuf,
        /// Reference set: statistics or features file.
        b: PathBuf,
        #[command(flatten)]
        metrics: MetricArgs,
        /// Detector weights (state dict) whose fc.weight gives the logits for `is`;
        /// default: $TIW_FID_DETECTOR.
        #[arg(long)]
        detector: Option<PathBuf>,
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

/// `--metrics` and the metric options (torch-fidelity's defaults).
#[derive(Debug, ClapArgs)]
struct MetricArgs {
    /// Comma-separated metrics: fid, kid (KID, kid_std), prc (precision, recall), is (is,
    /// is_std: Inception Score of the generated set from the detector's 1008-way
    /// logits_unbiased). Prints one `name value` line each. KID/PR keep the features in
    /// memory (N×2048 f32); with `ref`, kid/prc store them in the reference file.
    #[arg(long)]
    metrics: Option<String>,
    /// KID: number of random subset pairs.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// KID: vectors per subset (each set needs at least this many).
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// KID: polynomial kernel degree d in (γ·xᵀy + c)^d.
    #[arg(long, default_value_t = 3)]
    kid_degree: u32,
    /// KID: kernel scale γ (default 1/D).
    #[arg(long)]
    kid_gamma: Option<f64>,
    /// KID: kernel offset c.
    #[arg(long, default_value_t = 1.0)]
    kid_coef: f64,
    /// KID: seed of the subset draws (NumPy RandomState, as torch-fidelity's rng_seed).
    #[arg(long, default_value_t = 2020)]
    kid_seed: u32,
    /// Precision/recall: neighbourhood size k of the k-NN radii.
    #[arg(long, default_value_t = 3)]
    prc_k: usize,
    /// KID and precision/recall: element type of the feature matrix products, f64 or f32.
    /// f32 is about twice as fast for KID; kernels, distances and sums stay f64 (measured on
    /// 50,000 × 2048 synthetic features: KID moved by 2.5e-6 of its value, precision/recall
    /// not at all).
    #[arg(long, value_enum, default_value_t = ProductDtype::F64)]
    metrics_dtype: ProductDtype,
    /// IS: number of splits.
    #[arg(long, default_value_t = 10)]
    is_splits: usize,
    /// IS: seed of the sample shuffle before splitting.
    #[arg(long, default_value_t = 2020)]
    is_seed: u32,
}

impl MetricArgs {
    /// The requested metrics (`None` without `--metrics`).
    fn list(&self) -> Result<Option<Vec<Metric>>> {
        self.metrics.as_deref().map(Metric::parse_list).transpose()
    }

    fn options(&self) -> MetricOptions {
        let mut o = MetricOptions::default();
        o.kid.subsets = self.kid_subsets;
        o.kid.subset_size = self.kid_subset_size;
        o.kid.degree = self.kid_degree;
        o.kid.gamma = self.kid_gamma;
        o.kid.coef = self.kid_coef;
        o.kid.seed = self.kid_seed;
        o.prc.k = self.prc_k;
        o.kid.dtype = self.metrics_dtype;
        o.prc.dtype = self.metrics_dtype;
        o.is.splits = self.is_splits;
        o.is.seed = self.is_seed;
        o
    }
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
    /// The per-sample features in subset order (all ranks'), when kept.
    features: Option<Features>,
    /// Whether this process writes and prints (rank 0).
    writer: bool,
}

/// Opens the image set, selects the subset and computes the statistics (and, with `keep`,
/// the per-sample features); under a launcher each rank extracts its share of the images
/// (EDM fid.py's split), the f64 sums are added over ranks and the features gathered into
/// subset order, so every rank ends with the statistics of the whole subset.
fn image_stats(
    path: &Path,
    num: Option<usize>,
    seed: i64,
    d: &DetectorArgs,
    keep: bool,
) -> Result<RankStats> {
    let mut opts = d.opts()?;
    let ranks = d.dist.join(d.device)?;
    let (rank, world) = ranks.rank_world();
    let quiet = d.quiet || rank != 0;
    opts.progress &= !quiet;
    let set = ImageSet::open(path)?;
    let idx = fidlib::select(&set, num, seed)?;
    let det_path = detector::resolve_path(d.detector.as_deref())?;
    if !quiet {
        let over = if world > 1 {
            format!(" over {world} ranks")
        } else {
            String::new()
        };
        eprintln!(
            "fid: {} ({}), using {} images{over}",
            path.display(),
            set.describe(),
            idx.len()
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
    let fidlib::Extracted {
        mut stats,
        mut features,
    } = fidlib::extract(&set, &mine, &mut det, &opts, keep)?;
    if world > 1 {
        stats = sum_over_ranks(ranks.comm(), &mut stats)?;
        if let Some(f) = &features {
            let positions: Vec<usize> = (0..idx.len()).collect();
            let mine = fidlib::rank_share(&positions, opts.batch, rank, world);
            features = Some(gather_features(ranks.comm(), f, &mine, idx.len())?);
        }
    }
    Ok(RankStats {
        stats,
        features,
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

/// Every rank's features in subset order: this rank's rows go to `positions` of a zero
/// `total × D` matrix, which is summed over ranks (each row has one non-zero contributor,
/// so the sum is exact).
fn gather_features(
    comm: &dyn Collective,
    f: &Features,
    positions: &[usize],
    total: usize,
) -> Result<Features> {
    let d = f.dim;
    let mut all = vec![0f32; total * d];
    for (k, &p) in positions.iter().enumerate() {
        all[p * d..(p + 1) * d].copy_from_slice(f.row(k));
    }
    let t = tch::Tensor::from_slice(&all);
    comm.sum(&[&t])?;
    Features::from_rows(d, Vec::<f32>::try_from(&t).context("reading gathered features")?)
}

fn check_dim(dim: usize, path: &Path) -> Result<()> {
    let want = tiw_models::inception::FEATURE_DIM;
    if dim != want {
        bail!(
            "{}: reference statistics have dimension {dim}, but the Inception detector gives {want}-d features",
            path.display()
        );
    }
    Ok(())
}

/// The detector's `fc.weight` (for IS), read from the state-dict weights.
fn fc_weight(explicit: Option<&Path>) -> Result<Vec<f32>> {
    let path = detector::resolve_path(explicit)?;
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        bail!(
            "{}: the Inception Score needs the classifier weight fc.weight, which an .onnx detector lacks; pass the state-dict weights (.pth)",
            path.display()
        );
    }
    let (store, _) = tiw_models::load::read(&path)
        .with_context(|| format!("cannot read the detector weights {}", path.display()))?;
    tiw_models::inception::fc_weight(&store).with_context(|| format!("{}", path.display()))
}

/// Prints `name value` lines.
fn print_metrics(lines: &[(&str, f64)]) {
    for (name, v) in lines {
        println!("{name} {v}");
    }
}

/// `tiw fid ref`.
fn run_ref(
    data: &Path,
    dest: &Path,
    num: Option<usize>,
    seed: i64,
    det: &DetectorArgs,
    m: &MetricArgs,
) -> Result<()> {
    let list = m.list()?.unwrap_or_default();
    let keep = list.iter().any(|x| x.needs_features());
    let fc = if list.contains(&Metric::Is) {
        Some(fc_weight(det.detector.as_deref())?)
    } else {
        None
    };
    let mut r = image_stats(data, num, seed, det, keep)?;
    if !r.writer {
        return Ok(());
    }
    let ms = r.stats.mu_sigma()?;
    let store = list.iter().any(|x| matches!(x, Metric::Kid | Metric::Prc));
    statsfile::write_reference_with(dest, &ms, r.features.as_ref().filter(|_| store))?;
    if !det.quiet {
        eprintln!(
            "fid: wrote {} (mu, sigma{} of {} images)",
            dest.display(),
            if store { ", features" } else { "" },
            r.stats.count()
        );
    }
    if list.contains(&Metric::Is) {
        let g = SetData {
            stats: Some(&ms),
            features: r.features.as_ref(),
        };
        print_metrics(&metrics::evaluate(
            &[Metric::Is],
            g,
            None,
            fc.as_deref(),
            &m.options(),
        )?);
    }
    Ok(())
}

/// `tiw fid calc`.
fn run_calc(
    images: &Path,
    reference: &Path,
    num: usize,
    seed: i64,
    det: &DetectorArgs,
    m: &MetricArgs,
) -> Result<()> {
    let list = m.list()?;
    let metrics_list = list.clone().unwrap_or_else(|| vec![Metric::Fid]);
    // the reference is read first, so that a bad file fails before the long pass
    let (rs, rf) = statsfile::read_all(reference)?;
    let rms = match rs {
        StatsFile::Reference(s) => s,
        StatsFile::Partial(mut p) => p.mu_sigma().with_context(|| format!("{}", reference.display()))?,
    };
    check_dim(rms.dim(), reference)?;
    let pairwise = metrics_list
        .iter()
        .any(|x| matches!(x, Metric::Kid | Metric::Prc));
    if pairwise && rf.is_none() {
        statsfile::read_features(reference)?; // the error message
    }
    let fc = if metrics_list.contains(&Metric::Is) {
        Some(fc_weight(det.detector.as_deref())?)
    } else {
        None
    };
    let keep = metrics_list.iter().any(|x| x.needs_features());
    let mut r = image_stats(images, Some(num), seed, det, keep)?;
    if !r.writer {
        return Ok(());
    }
    let ms = r.stats.mu_sigma()?;
    if list.is_none() {
        println!("{}", format_g(frechet_distance(&ms, &rms)?.fid));
        return Ok(());
    }
    let g = SetData {
        stats: Some(&ms),
        features: r.features.as_ref(),
    };
    let rd = SetData {
        stats: Some(&rms),
        features: rf.as_ref(),
    };
    print_metrics(&metrics::evaluate(
        &metrics_list,
        g,
        Some(rd),
        fc.as_deref(),
        &m.options(),
    )?);
    Ok(())
}

/// `tiw fid stats`.
fn run_stats(
    images: &Path,
    dest: &Path,
    num: Option<usize>,
    seed: i64,
    det: &DetectorArgs,
    keep: bool,
) -> Result<()> {
    let mut r = image_stats(images, num, seed, det, keep)?;
    if !r.writer {
        return Ok(());
    }
    statsfile::write_partial_with(dest, &mut r.stats, r.features.as_ref())?;
    if !det.quiet {
        eprintln!(
            "fid: wrote {} (partial statistics{} of {} images)",
            dest.display(),
            if keep { " and features" } else { "" },
            r.stats.count()
        );
    }
    Ok(())
}

/// `tiw fid merge`: statistics added, features concatenated in argument order (kept only
/// when every part has them).
fn run_merge(parts: &[PathBuf], dest: &Path, mu_sigma: bool) -> Result<()> {
    let mut total: Option<(FeatureStats, Option<Features>)> = None;
    for p in parts {
        let (mut s, f) = match statsfile::read_all(p)? {
            (StatsFile::Partial(s), f) => (s, f),
            (StatsFile::Reference(_), _) => bail!(
                "{}: reference statistics (mu, sigma) cannot be merged; merge the partial files from `tiw fid stats`",
                p.display()
            ),
        };
        match &mut total {
            None => total = Some((s, f)),
            Some((t, tf)) => {
                t.merge(&mut s).with_context(|| format!("{}", p.display()))?;
                match (tf.as_mut(), f) {
                    (Some(a), Some(b)) => a.append(&b).with_context(|| format!("{}", p.display()))?,
                    (Some(_), None) => {
                        eprintln!(
                            "fid: {} has no features; the merged file will have none",
                            p.display()
                        );
                        *tf = None;
                    }
                    _ => {}
                }
            }
        }
    }
    let (mut t, f) = total.expect("at least one part");
    if mu_sigma {
        statsfile::write_reference_with(dest, &t.mu_sigma()?, f.as_ref())?;
    } else {
        statsfile::write_partial_with(dest, &mut t, f.as_ref())?;
    }
    eprintln!(
        "fid: merged {} file(s), {} feature vectors{} -> {}",
        parts.len(),
        t.count(),
        if f.is_some() { " (with features)" } else { "" },
        dest.display()
    );
    Ok(())
}

/// `tiw fid export`.
fn run_export(detector: Option<&Path>, dest: &Path, opset: i64) -> Result<()> {
    let path = detector::resolve_path(detector)?;
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
    tiw::onnx_export::write_onnx(&model, dest)?;
    eprintln!("fid: wrote {}", dest.display());
    Ok(())
}

/// `tiw fid distance`.
fn run_distance(a: &Path, b: &Path, m: &MetricArgs, detector: Option<&Path>) -> Result<()> {
    let list = m.list()?;
    let metrics_list = list.clone().unwrap_or_else(|| vec![Metric::Fid]);
    let read = |p: &Path| -> Result<(MuSigma, Option<Features>)> {
        let (s, f) = statsfile::read_all(p)?;
        let ms = match s {
            StatsFile::Reference(s) => s,
            StatsFile::Partial(mut s) => s.mu_sigma().with_context(|| format!("{}", p.display()))?,
        };
        Ok((ms, f))
    };
    let ((sa, fa), (sb, fb)) = (read(a)?, read(b)?);
    if sa.dim() != sb.dim() {
        bail!(
            "{} has dimension {} but {} has dimension {}",
            a.display(),
            sa.dim(),
            b.display(),
            sb.dim()
        );
    }
    for (p, f) in [(a, &fa), (b, &fb)] {
        let pairwise = metrics_list
            .iter()
            .any(|x| matches!(x, Metric::Kid | Metric::Prc));
        if pairwise && f.is_none() {
            statsfile::read_features(p)?; // the error message
        }
    }
    let Some(list) = list else {
        println!("{}", format_g(frechet_distance(&sa, &sb)?.fid));
        return Ok(());
    };
    let fc = if list.contains(&Metric::Is) {
        Some(fc_weight(detector)?)
    } else {
        None
    };
    let g = SetData {
        stats: Some(&sa),
        features: fa.as_ref(),
    };
    let r = SetData {
        stats: Some(&sb),
        features: fb.as_ref(),
    };
    print_metrics(&metrics::evaluate(
        &list,
        g,
        Some(r),
        fc.as_deref(),
        &m.options(),
    )?);
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
            metrics,
        } => run_ref(&data, &dest, num, seed, &det, &metrics),
        FidCommand::Calc {
            images,
            reference,
            num,
            seed,
            det,
            metrics,
        } => run_calc(&images, &reference, num, seed, &det, &metrics),
        FidCommand::Stats {
            images,
            dest,
            keep_features,
            num,
            seed,
            det,
        } => run_stats(&images, &dest, num, seed, &det, keep_features),
        FidCommand::Merge {
            parts,
            dest,
            mu_sigma,
        } => run_merge(&parts, &dest, mu_sigma),
        FidCommand::Export {
            detector,
            dest,
            opset,
        } => run_export(detector.as_deref(), &dest, opset),
        FidCommand::Distance {
            a,
            b,
            metrics,
            detector,
        } => run_distance(&a, &b, &metrics, detector.as_deref()),
    }
}
