//! A procedural image dataset with known classes, deterministic from a seed: 16×16 RGB
//! images of four classes that differ in shape and colour —
//!
//! | class | shape | colour |
//! |---|---|---|
//! | 0 | filled disc | red-ish |
//! | 1 | filled square (slightly rotated) | green-ish |
//! | 2 | plus-shaped cross (slightly rotated) | blue-ish |
//! | 3 | ring (annulus) | yellow-ish |
//!
//! Every image jitters the shape's centre (±2 px), size (radius 4–6 px), rotation, colour
//! (±0.1 per channel, brightness ×0.85–1.1) and the background (grey level 0.1–0.45 with a
//! ±0.08 tint per channel, a linear gradient of up to ±0.1 in a random direction, and ±0.04
//! per-pixel noise on the final image). Shapes are rendered with 4×4 supersampling, so edges
//! carry fractional coverage `a` and a pixel is `bg·(1 − a) + fg·a`.
//!
//! Images are `uint8`, NHWC (`[N, 16, 16, 3]`, row-major), the layout of EDM's
//! `dataset.zip` PNGs and of the discriminator-training `.npz` files (key `samples`).
//! The PRNG is ChaCha8 seeded with the given `u64`; the label order is a seeded shuffle, so a
//! set is a function of `(n_per_class, seed)` only.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Image side in pixels.
pub const RES: usize = 16;
/// Colour channels.
pub const CHANNELS: usize = 3;
/// Number of classes.
pub const NUM_CLASSES: usize = 4;
/// Bytes per image (`RES·RES·CHANNELS`).
pub const IMAGE_BYTES: usize = RES * RES * CHANNELS;
/// Human names of the classes, in label order.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = ["red disc", "green square", "blue cross", "yellow ring"];
/// Relative class frequencies of the long-tailed ("biased") set.
pub const LONG_TAIL_WEIGHTS: [f64; NUM_CLASSES] = [1.0, 0.3, 0.1, 0.03];
/// Sub-samples per pixel side (anti-aliasing).
const SUPERSAMPLE: usize = 4;

/// Mean colour of each class (RGB in [0, 1]).
const CLASS_COLOURS: [[f64; 3]; NUM_CLASSES] = [
    [0.85, 0.15, 0.15],
    [0.20, 0.80, 0.25],
    [0.20, 0.35, 0.90],
    [0.90, 0.85, 0.20],
];

/// Labelled images: `images` uint8 NHWC `[len, 16, 16, 3]`, `labels[i] ∈ 0..NUM_CLASSES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledImages {
    /// uint8 NHWC pixels.
    pub images: Vec<u8>,
    /// Class of each image.
    pub labels: Vec<u32>,
}

impl LabeledImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Images per class.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut c = [0; NUM_CLASSES];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// Class proportions `count_k / len` (zeros for an empty set).
    pub fn class_proportions(&self) -> [f64; NUM_CLASSES] {
        let n = self.len().max(1) as f64;
        self.class_counts().map(|c| c as f64 / n)
    }

    /// The union `self ∪ other` (self's images first).
    pub fn concat(&self, other: &LabeledImages) -> LabeledImages {
        let mut images = self.images.clone();
        images.extend_from_slice(&other.images);
        let mut labels = self.labels.clone();
        labels.extend_from_slice(&other.labels);
        LabeledImages { images, labels }
    }
}

/// Converts uint8 NHWC images to f32 NCHW in [−1, 1]: `x = v / 127.5 − 1` (EDM's scaling).
pub fn nhwc_u8_to_nchw_f32(images: &[u8], channels: usize, height: usize, width: usize) -> Vec<f32> {
    let per = channels * height * width;
    let n = images.len() / per.max(1);
    let mut out = vec![0f32; n * per];
    for i in 0..n {
        let src = &images[i * per..(i + 1) * per];
        let dst = &mut out[i * per..(i + 1) * per];
        for y in 0..height {
            for x in 0..width {
                for c in 0..channels {
                    dst[(c * height + y) * width + x] =
                        src[(y * width + x) * channels + c] as f32 / 127.5 - 1.0;
                }
            }
        }
    }
    out
}

/// SplitMix64 of `seed` and a stream tag: independent seeds for the demo's sets.
pub fn derive_seed(seed: u64, tag: u64) -> u64 {
    let mut z = seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n_per_class[k]` images of class `k` (k < [`NUM_CLASSES`]; missing entries = 0), in a
/// seeded random order. Returns (uint8 NHWC images, labels).
///
/// # Panics
/// If `n_per_class` has more than [`NUM_CLASSES`] entries.
pub fn generate(n_per_class: &[usize], seed: u64) -> (Vec<u8>, Vec<u32>) {
    assert!(
        n_per_class.len() <= NUM_CLASSES,
        "{} classes requested; the dataset has {NUM_CLASSES}",
        n_per_class.len()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut labels: Vec<u32> = n_per_class
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| std::iter::repeat_n(k as u32, n))
        .collect();
    labels.shuffle(&mut rng);
    let mut images = Vec::with_capacity(labels.len() * IMAGE_BYTES);
    for &l in &labels {
        render(l as usize, &mut rng, &mut images);
    }
    (images, labels)
}

/// [`generate`] as a [`LabeledImages`].
pub fn generate_set(n_per_class: &[usize], seed: u64) -> LabeledImages {
    let (images, labels) = generate(n_per_class, seed);
    LabeledImages { images, labels }
}

/// Per-class counts of `total` images with frequencies ∝ `weights`, rounded by largest
/// remainder so that they sum to `total` exactly (ties to the lower class index).
pub fn proportional_counts(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut left = total - counts.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.partial_cmp(&ra)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    for &k in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[k] += 1;
        left -= 1;
    }
    counts
}

/// Sizes of the demo's sets.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoSizes {
    /// Images in the long-tailed biased set (frequencies ∝ [`LONG_TAIL_WEIGHTS`]).
    pub biased_total: usize,
    /// Size of the balanced reference set as a fraction of the biased set (0.05 = the
    /// paper's CIFAR-10-LT 5% setting); rounded down to a multiple of the class count.
    pub reference_fraction: f64,
    /// Clean labelled images per class to train the probe classifier.
    pub probe_train_per_class: usize,
    /// Clean labelled images per class to measure the probe's held-out accuracy.
    pub probe_test_per_class: usize,
    /// Balanced held-out images per class: the Fréchet-distance reference.
    pub frechet_ref_per_class: usize,
}

impl Default for DemoSizes {
    /// 4000 biased, 200 reference (5%), 500+250 per class for the probe, 250 per class for
    /// the Fréchet reference.
    fn default() -> Self {
        DemoSizes {
            biased_total: 4000,
            reference_fraction: 0.05,
            probe_train_per_class: 500,
            probe_test_per_class: 250,
            frechet_ref_per_class: 250,
        }
    }
}

/// The demo's data sets, all independent draws (different derived seeds).
#[derive(Debug, Clone)]
pub struct DemoData {
    /// Long-tailed biased set.
    pub biased: LabeledImages,
    /// Small balanced reference set (the "known unbiased" subset).
    pub reference: LabeledImages,
    /// Clean labelled set for training the probe classifier (balanced).
    pub probe_train: LabeledImages,
    /// Clean labelled set for the probe's held-out accuracy (balanced).
    pub probe_test: LabeledImages,
    /// Balanced held-out set: the Fréchet-distance reference.
    pub frechet_ref: LabeledImages,
}

impl DemoData {
    /// The observed training data of a score model: biased ∪ reference.
    pub fn observed(&self) -> LabeledImages {
        self.biased.concat(&self.reference)
    }
}

/// Builds every demo set from one seed (stream tags 1..=5 through [`derive_seed`]).
pub fn demo_sets(sizes: &DemoSizes, seed: u64) -> DemoData {
    let k = NUM_CLASSES;
    let ref_total = (sizes.biased_total as f64 * sizes.reference_fraction).floor() as usize;
    let ref_per_class = ref_total / k;
    DemoData {
        biased: generate_set(
            &proportional_counts(sizes.biased_total, &LONG_TAIL_WEIGHTS),
            derive_seed(seed, 1),
        ),
        reference: generate_set(&[ref_per_class; NUM_CLASSES], derive_seed(seed, 2)),
        probe_train: generate_set(&[sizes.probe_train_per_class; NUM_CLASSES], derive_seed(seed, 3)),
        probe_test: generate_set(&[sizes.probe_test_per_class; NUM_CLASSES], derive_seed(seed, 4)),
        frechet_ref: generate_set(&[sizes.frechet_ref_per_class; NUM_CLASSES], derive_seed(seed, 5)),
    }
}

/// Whether the continuous point `(u, v)` (pixels, relative to the shape's centre, already
/// rotated into the shape's frame) lies inside class `class`'s shape of size `s`.
fn inside(class: usize, u: f64, v: f64, s: f64, inner: f64) -> bool {
    match class {
        0 => u * u + v * v <= s * s,
        1 => u.abs() <= 0.8 * s && v.abs() <= 0.8 * s,
        2 => {
            let w = 0.3 * s;
            (u.abs() <= s && v.abs() <= w) || (u.abs() <= w && v.abs() <= s)
        }
        _ => {
            let r2 = u * u + v * v;
            r2 <= s * s && r2 >= (inner * s) * (inner * s)
        }
    }
}

/// Renders one image of `class` and appends its NHWC bytes to `out`.
fn render(class: usize, rng: &mut ChaCha8Rng, out: &mut Vec<u8>) {
    let cx = RES as f64 / 2.0 + rng.gen_range(-2.0..2.0);
    let cy = RES as f64 / 2.0 + rng.gen_range(-2.0..2.0);
    let s: f64 = rng.gen_range(4.0..6.0);
    let inner: f64 = rng.gen_range(0.5..0.62);
    let theta: f64 = rng.gen_range(-0.3..0.3);
    let (sin, cos) = theta.sin_cos();
    let bright: f64 = rng.gen_range(0.85..1.1);
    let fg: [f64; 3] = std::array::from_fn(|c| {
        ((CLASS_COLOURS[class][c] + rng.gen_range(-0.1..0.1)) * bright).clamp(0.0, 1.0)
    });
    let grey: f64 = rng.gen_range(0.1..0.45);
    let bg: [f64; 3] = std::array::from_fn(|_| grey + rng.gen_range(-0.08..0.08));
    let gdir: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
    let gamp: f64 = rng.gen_range(-0.1..0.1);
    let (gs, gc) = gdir.sin_cos();
    let step = 1.0 / SUPERSAMPLE as f64;
    for py in 0..RES {
        for px in 0..RES {
            let mut hits = 0usize;
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let dx = px as f64 + (sx as f64 + 0.5) * step - cx;
                    let dy = py as f64 + (sy as f64 + 0.5) * step - cy;
                    let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
                    hits += inside(class, u, v, s, inner) as usize;
                }
            }
            let a = hits as f64 / (SUPERSAMPLE * SUPERSAMPLE) as f64;
            // gradient coordinate in [-1, 1] across the image
            let g = ((px as f64 + 0.5) / RES as f64 - 0.5) * 2.0 * gc
                + ((py as f64 + 0.5) / RES as f64 - 0.5) * 2.0 * gs;
            for c in 0..CHANNELS {
                let b = bg[c] + gamp * g;
                let v = b * (1.0 - a) + fg[c] * a + rng.gen_range(-0.04..0.04);
                out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_and_follow_weights() {
        assert_eq!(
            proportional_counts(4000, &LONG_TAIL_WEIGHTS),
            vec![2797, 839, 280, 84]
        );
        assert_eq!(proportional_counts(7, &[1.0, 1.0, 1.0]), vec![3, 2, 2]);
        assert_eq!(proportional_counts(0, &[1.0, 2.0]), vec![0, 0]);
    }

    #[test]
    fn nchw_conversion() {
        // one 1×2 image with 3 channels: pixel 0 = (0, 127.5?, 255), pixel 1 = (255, 0, 0)
        let img = [0u8, 255, 51, 255, 0, 0];
        let x = nhwc_u8_to_nchw_f32(&img, 3, 1, 2);
        assert_eq!(x, vec![-1.0, 1.0, 1.0, -1.0, 51.0 / 127.5 - 1.0, -1.0]);
    }
}
