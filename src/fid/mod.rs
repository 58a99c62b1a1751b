//! FID as EDM's `fid.py` computes it (SPEC §7), with the detector run by ONNX Runtime or
//! libtorch.
//!
//! Pipeline: [`images`] lists an image set (folder, EDM `dataset.zip`, or `.npz`) →
//! [`select`] keeps `ImageFolderDataset(max_size=num, random_seed=seed)`'s subset
//! ([`random`]: NumPy's legacy `RandomState`) → worker threads decode and
//! [`preprocess`] (TF1 bilinear resize to 299, `(x − 128)/128`) whole batches → the
//! [`detector`] maps them to 2048-d features → [`stats`] accumulates `n, Σf, Σffᵀ` in f64 →
//! `mu`, `sigma` → [`distance`] (Fréchet distance via symmetric eigendecompositions).
//! [`statsfile`] reads/writes the reference `.npz` (byte-identical to `np.savez`) and the
//! mergeable partial statistics.

pub mod detector;
pub mod distance;
pub mod metrics;
pub mod outer;
pub mod preprocess;
pub mod stats;
pub mod statsfile;

use std::sync::mpsc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use crate::data::{images, random};
use detector::Detector;
use images::ImageSet;
use metrics::Features;
use stats::FeatureStats;

/// The indices of `set` that `fid.py` evaluates: `ImageFolderDataset(max_size=num,
/// random_seed=seed)`'s subset, failing like `fid.py` when fewer than `num` (if given) or
/// fewer than 2 images are available.
pub fn select(set: &ImageSet, num: Option<usize>, seed: i64) -> Result<Vec<usize>> {
    let idx = random::subset_indices(set.len(), num, seed);
    if let Some(n) = num {
        if idx.len() < n {
            bail!(
                "{}: found {} images, but expected at least {n} (--num)",
                set.path().display(),
                idx.len()
            );
        }
    }
    if idx.len() < 2 {
        bail!(
            "{}: found {} image(s), but need at least 2 to compute statistics",
            set.path().display(),
            idx.len()
        );
    }
    Ok(idx)
}

/// Batch boundaries as `fid.py` makes them: `ceil(len/batch)` batches from
/// `torch.arange(len).tensor_split(num_batches)` (sizes differ by at most one).
pub fn batches(len: usize, max_batch: usize) -> Vec<std::ops::Range<usize>> {
    if len == 0 {
        return Vec::new();
    }
    let nb = (len - 1) / max_batch.max(1) + 1;
    let (q, r) = (len / nb, len % nb);
    let mut out = Vec::with_capacity(nb);
    let mut start = 0;
    for b in 0..nb {
        let size = q + usize::from(b < r);
        out.push(start..start + size);
        start += size;
    }
    out
}

/// Options of a feature-extraction pass.
#[derive(Debug, Clone)]
pub struct ExtractOpts {
    /// Maximum images per detector call (`--batch`, EDM default 64).
    pub batch: usize,
    /// Threads decoding and resizing images (each prepares whole batches).
    pub workers: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for ExtractOpts {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        ExtractOpts {
            batch: 64,
            workers: cores.clamp(1, 8),
            progress: true,
        }
    }
}

/// Decodes and preprocesses the images `idx` into one detector input `[n, 3, 299, 299]`.
fn prepare(reader: &mut images::Reader<'_>, idx: &[usize]) -> Result<Vec<f32>> {
    let per = 3 * preprocess::SIZE * preprocess::SIZE;
    let mut x = vec![0f32; idx.len() * per];
    for (k, &i) in idx.iter().enumerate() {
        let img = reader.load(i)?;
        preprocess::resize_normalize(&img, &mut x[k * per..(k + 1) * per]);
    }
    Ok(x)
}

/// The indices rank `rank` of `world` processes, as EDM's `fid.py` splits them: the
/// indices in `⌈n / (batch·world)⌉·world` nearly equal consecutive chunks
/// (`torch.tensor_split`), rank `k` taking the chunks `k, k + world, …`.
pub fn rank_share(indices: &[usize], batch: usize, rank: usize, world: usize) -> Vec<usize> {
    let n = indices.len();
    if world <= 1 || n == 0 {
        return indices.to_vec();
    }
    let chunks = ((n - 1) / (batch.max(1) * world) + 1) * world;
    let (base, extra) = (n / chunks, n % chunks);
    let mut out = Vec::new();
    let mut start = 0;
    for c in 0..chunks {
        let len = base + usize::from(c < extra);
        if c % world == rank {
            out.extend_from_slice(&indices[start..start + len]);
        }
        start += len;
    }
    out
}

/// Runs the detector over `set[indices]` and accumulates the feature statistics. Worker
/// threads prepare batches ahead of the detector (each at most two batches ahead); batches
/// are consumed in order, so the result does not depend on the thread count.
pub fn extract_stats(
    set: &ImageSet,
    indices: &[usize],
    det: &mut Detector,
    opts: &ExtractOpts,
) -> Result<FeatureStats> {
    Ok(extract(set, indices, det, opts, false)?.stats)
}

/// The result of one pass over the detector.
#[derive(Debug)]
pub struct Extracted {
    /// Feature statistics of the pass.
    pub stats: FeatureStats,
    /// The per-sample features in `indices` order, when asked for (`N × 2048` f32).
    pub features: Option<Features>,
}

/// [`extract_stats`], also keeping the per-sample features when `keep_features` (memory
/// `N × 2048 × 4` bytes).
pub fn extract(
    set: &ImageSet,
    indices: &[usize],
    det: &mut Detector,
    opts: &ExtractOpts,
    keep_features: bool,
) -> Result<Extracted> {
    let ranges = batches(indices.len(), opts.batch);
    let workers = opts.workers.clamp(1, ranges.len().max(1));
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(indices.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, eta {eta})",
            )
            .map_err(|e| anyhow!("{e}"))?,
        );
        b.set_prefix("fid");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut stats = FeatureStats::new(tiw_models::inception::FEATURE_DIM);
    let mut kept = keep_features.then(|| Features::new(tiw_models::inception::FEATURE_DIM));
    std::thread::scope(|scope| -> Result<()> {
        let mut receivers = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<Result<Vec<f32>>>(1);
            receivers.push(rx);
            let ranges = &ranges;
            scope.spawn(move || {
                let mut reader = match set.reader() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                for r in ranges.iter().skip(w).step_by(workers) {
                    let res = prepare(&mut reader, &indices[r.clone()]);
                    let failed = res.is_err();
                    if tx.send(res).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let mut done = 0;
        for (b, r) in ranges.iter().enumerate() {
            if let Some(sig) = crate::train::preempt::requested() {
                bail!(
                    "interrupted by {sig} after {done} of {} images (at a batch boundary); no statistics were written — rerun the command",
                    indices.len()
                );
            }
            done += r.len();
            let x = receivers[b % workers]
                .recv()
                .map_err(|_| anyhow!("image loader stopped unexpectedly"))??;
            let f = det.features(x, r.len())?;
            stats.add_f32(&f);
            if let Some(k) = &mut kept {
                k.data.extend_from_slice(&f);
            }
            bar.inc(r.len() as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!(
            "fid: {} images in {:.1} s ({:.1} images/s, {})",
            indices.len(),
            secs,
            indices.len() as f64 / secs.max(1e-9),
            det.describe()
        );
    }
    Ok(Extracted {
        stats,
        features: kept,
    })
}
