//! Discriminator-training data: uint8 NHWC image sets and the epoch sampler.

use std::path::Path;

use anyhow::{bail, Result};

use crate::npz;

/// A set of uint8 images, NHWC, row-major.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Number of images.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Pixels, `n·h·w·c` bytes.
    pub pixels: Vec<u8>,
    /// Class label of each image (conditional discriminator training), if read.
    pub labels: Option<Vec<usize>>,
}

impl ImageSet {
    /// Image `i` as CHW f32 in [−1, 1]: `2·(pixel/255) − 1` (ToTensor, then the script's
    /// scaling, in f32), appended to `out`.
    pub fn push_chw(&self, i: usize, out: &mut Vec<f32>) {
        let img = &self.pixels[i * self.h * self.w * self.c..(i + 1) * self.h * self.w * self.c];
        for ch in 0..self.c {
            for p in 0..self.h * self.w {
                out.push((img[p * self.c + ch] as f32 / 255.0) * 2.0 - 1.0);
            }
        }
    }
}

/// Reads the training images of `path`: an `.npz` with key `samples`, uint8 `(N, H, W, C)`
/// (stored or deflated, as `np.savez[_compressed]` writes) — or, without `samples`, the key
/// `images` of the same layout that `tiw generate --out-npz` writes — or an EDM dataset zip /
/// image folder such as `tiw generate --outdir` fills (every image, labels ignored).
pub fn load_images(path: &Path) -> Result<ImageSet> {
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    let is_npz = path
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("npz"));
    if !is_npz {
        let ds = crate::data::samples_npz::SamplesDataset::open(path)?;
        let [c, h, w] = ds.image_shape();
        let mut pixels = Vec::with_capacity(ds.len() * h * w * c);
        for i in 0..ds.len() {
            pixels.extend(ds.image_hwc(i)?);
        }
        return Ok(ImageSet {
            n: ds.len(),
            h,
            w,
            c,
            pixels,
            labels: None,
        });
    }
    let arrays = npz::read(path)?;
    let key = if arrays.iter().any(|a| a.name == "samples") || !arrays.iter().any(|a| a.name == "images") {
        "samples"
    } else {
        "images"
    };
    let a = npz::get(&arrays, key, path)?;
    let npz::Data::U8(pixels) = &a.data else {
        bail!("{}: `{key}` must be uint8 (N, H, W, C) images", path.display());
    };
    if a.shape.len() != 4 || a.shape[0] == 0 || !(1..=4).contains(&a.shape[3]) {
        bail!(
            "{}: `{key}` has shape {:?}; expected (N, H, W, C) with N > 0 and C in 1..=4",
            path.display(),
            a.shape
        );
    }
    Ok(ImageSet {
        n: a.shape[0],
        h: a.shape[1],
        w: a.shape[2],
        c: a.shape[3],
        pixels: pixels.clone(),
        labels: None,
    })
}

/// Largest accepted class index + 1 (the DG discriminator's `label_emb` has 1000 rows).
pub const MAX_CLASSES: usize = 1 << 20;

/// [`load_images`] with a class label per image, for the conditional discriminator (DG's
/// `train.py --cond 1`):
///
/// * `.npz`: the key `label` (DG's files) or `labels` — integers `(N,)` (any stored dtype
///   whose values are whole numbers) or one-hot / score rows `(N, K)` (class = argmax, as
///   the discriminator's `argmax(condition, 1)`);
/// * dataset `.zip` / folder: the `dataset.json` labels (EDM's layout; class = argmax of the
///   one-hot), or without one, class folders: the first path component of every image —
///   all-numeric names are the class indices themselves (`gen/3/…` is class 3), other names
///   are numbered in sorted order (torchvision's ImageFolder).
pub fn load_labelled(path: &Path) -> Result<ImageSet> {
    let mut set = load_images(path)?;
    let labels = if is_npz(path) {
        npz_labels(path, set.n)?
    } else {
        folder_labels(path, set.n)?
    };
    if let Some(&m) = labels.iter().max() {
        if m >= MAX_CLASSES {
            bail!("{}: class label {m} is out of range", path.display());
        }
    }
    set.labels = Some(labels);
    Ok(set)
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("npz"))
}

/// Index of the largest value of a row (the first one on ties).
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

fn npz_labels(path: &Path, n: usize) -> Result<Vec<usize>> {
    let arrays = npz::read(path)?;
    let a = arrays
        .iter()
        .find(|a| a.name == "label")
        .or_else(|| arrays.iter().find(|a| a.name == "labels"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{}: no `label` or `labels` array (conditional training needs one class per image)",
                path.display()
            )
        })?;
    let v: Vec<f64> = match &a.data {
        npz::Data::F32(x) => x.iter().map(|&v| v as f64).collect(),
        npz::Data::F64(x) => x.clone(),
        npz::Data::I64(x) => x.iter().map(|&v| v as f64).collect(),
        npz::Data::U8(x) => x.iter().map(|&v| v as f64).collect(),
    };
    let bad = |why: &str| anyhow::anyhow!("{}: `{}` {why}", path.display(), a.name);
    match a.shape.as_slice() {
        [m] if *m == n => v
            .iter()
            .map(|&x| {
                if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < MAX_CLASSES as f64 {
                    Ok(x as usize)
                } else {
                    Err(bad(&format!("holds {x}, not a class index")))
                }
            })
            .collect(),
        [m, k] if *m == n && *k > 0 => {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad("holds non-finite values"));
            }
            Ok(v.chunks_exact(*k).map(argmax).collect())
        }
        s => Err(bad(&format!(
            "has shape {s:?}; expected ({n},) class indices or ({n}, K) one-hot rows for the {n} images"
        ))),
    }
}

fn folder_labels(path: &Path, n: usize) -> Result<Vec<usize>> {
    use crate::data::image_folder::{DatasetOptions, ImageDataset};
    let ds = ImageDataset::open(
        path,
        DatasetOptions {
            use_labels: true,
            ..Default::default()
        },
    )?;
    if ds.len() != n {
        bail!("{}: {} labelled items for {n} images", path.display(), ds.len());
    }
    if ds.has_labels() {
        return (0..n)
            .map(|i| Ok(argmax(&ds.label(i).iter().map(|&x| x as f64).collect::<Vec<_>>())))
            .collect();
    }
    let top: Vec<String> = (0..n)
        .map(|i| {
            let f = ds.file_name(ds.raw_idx(i));
            match f.split_once('/') {
                Some((dir, _)) => Ok(dir.to_string()),
                None => bail!(
                    "{}: {f} is not in a class folder, and there is no dataset.json with labels (conditional training needs a class per image)",
                    path.display()
                ),
            }
        })
        .collect::<Result<_>>()?;
    let mut names: Vec<&String> = top.iter().collect();
    names.sort();
    names.dedup();
    let numeric = names
        .iter()
        .all(|d| d.parse::<usize>().is_ok_and(|k| k < MAX_CLASSES));
    Ok(top
        .iter()
        .map(|d| {
            if numeric {
                d.parse().unwrap_or(0)
            } else {
                names.binary_search(&d).unwrap_or(0)
            }
        })
        .collect())
}

/// SplitMix64: a small, seedable, serialisable generator for the data order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in `0..n` (n > 0), by rejection (no modulo bias).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let r = self.next_u64();
            if r < zone {
                return (r % n) as usize;
            }
        }
    }
    /// Fisher–Yates shuffle of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// Shuffled epochs without replacement, dropping the last incomplete batch (a DataLoader
/// with `shuffle=True, drop_last=True` re-created when exhausted). The state is the
/// generator at the start of the current epoch plus the position, so it serialises to two
/// numbers and resumes exactly.
#[derive(Debug, Clone)]
pub struct EpochSampler {
    n: usize,
    batch: usize,
    epoch_rng: SplitMix,
    order: Vec<usize>,
    pos: usize,
}

impl EpochSampler {
    /// A sampler over `n` items in batches of `batch` (needs `n ≥ batch`).
    pub fn new(n: usize, batch: usize, seed: u64) -> Result<Self> {
        if batch == 0 || n < batch {
            bail!("{n} items cannot fill one batch of {batch} (drop_last)");
        }
        Ok(Self::restore(n, batch, seed, 0))
    }
    /// The sampler from [`EpochSampler::state`].
    pub fn restore(n: usize, batch: usize, epoch_rng: u64, pos: usize) -> Self {
        let mut r = SplitMix(epoch_rng);
        let order = r.permutation(n);
        EpochSampler {
            n,
            batch,
            epoch_rng: SplitMix(epoch_rng),
            order,
            pos,
        }
    }
    /// (generator state at the start of the current epoch, position in it).
    pub fn state(&self) -> (u64, usize) {
        (self.epoch_rng.0, self.pos)
    }
    /// The next batch of indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.pos + self.batch > self.n {
            let mut r = self.epoch_rng;
            r.permutation(self.n); // advance past this epoch's shuffle
            *self = Self::restore(self.n, self.batch, r.0, 0);
        }
        let b = self.order[self.pos..self.pos + self.batch].to_vec();
        self.pos += self.batch;
        b
    }
}
