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
    })
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
