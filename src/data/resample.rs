//! PIL's `Image.resize(size, Image.LANCZOS)` for 8-bit gray and RGB images, bit for bit
//! (what EDM's `dataset_tool.py` calls for `--resolution` and the center-crop transforms).
//!
//! PIL resamples separably, horizontal pass first (only when the width changes), then
//! vertical (only when the height changes); the horizontal pass covers just the source rows
//! the vertical pass reads. Per output coordinate `i` of an axis of `in → out` samples:
//!
//! * `scale = in / out` (the box width computed in `f32`, then `f64`), `fs = max(scale, 1)`,
//!   support `s = 3 · fs` (the Lanczos-3 kernel widened by the downscale factor);
//! * centre `c = (i + 0.5) · scale`, taps `xmin = trunc(c − s + 0.5)` clamped to ≥ 0 and
//!   `xmax = min(trunc(c + s + 0.5), in)`;
//! * weights `w_x = L((x − c + 0.5) / fs)` for `x ∈ [xmin, xmax)` with
//!   `L(t) = sinc(t) · sinc(t/3)` on `[−3, 3)` (0 elsewhere), normalised to sum 1;
//! * fixed point: `k = trunc(w · 2²² ± 0.5)` (`PRECISION_BITS = 22`, rounded away from 0);
//! * each output sample is `clip((2²¹ + Σ v_x · k_x) >> 22, 0, 255)` in 32-bit integers.
//!
//! A resize to the same size is a copy (as PIL's).
//!
//! Pillow 13 runs the vertical pass first for some shapes where the height shrinks more than
//! the width (python-pillow/Pillow#9549), which moves some samples by a few levels there;
//! this module keeps the horizontal-first order of Pillow ≤ 12, the versions EDM's datasets
//! were made with. Each single pass is identical in both (tests/dataset_tool.rs checks the
//! two passes against PIL one by one).

/// The taps of one axis.
struct Coeffs {
    /// Taps per output sample (row stride of `k`).
    ksize: usize,
    /// `(first source index, number of taps)` per output sample.
    bounds: Vec<(usize, usize)>,
    /// Fixed-point weights, `out × ksize`.
    k: Vec<i32>,
}

const PRECISION_BITS: u32 = 22;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    let scale = (in_size as f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 3.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0i32; out_size * ksize];
    let mut w = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = lanczos(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        let row = &mut k[xx * ksize..(xx + 1) * ksize];
        for (x, kx) in row.iter_mut().enumerate().take(n) {
            let v = if ww != 0.0 { w[x] / ww } else { w[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            *kx = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, k }
}

#[inline]
fn clip8(ss: i32) -> u8 {
    (ss >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved `h × w × c` uint8 image (`c` = 1 or 3) to `out_h × out_w` like
/// PIL's `resize((out_w, out_h), LANCZOS)` (see the module docs).
pub fn resize_lanczos(src: &[u8], w: usize, h: usize, c: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h * c, "resize_lanczos: buffer is not h×w×c");
    if (w, h) == (out_w, out_h) {
        return src.to_vec();
    }
    let vert = precompute(h, out_h);
    let half = 1i32 << (PRECISION_BITS - 1);
    // horizontal pass over the rows the vertical pass reads
    let (first, last) = match (vert.bounds.first(), vert.bounds.last()) {
        (Some(f), Some(l)) => (f.0, l.0 + l.1),
        _ => (0, 0),
    };
    let (tmp, tmp_w, row0) = if out_w != w {
        let hor = precompute(w, out_w);
        let rows = last - first;
        let mut t = vec![0u8; rows * out_w * c];
        for y in 0..rows {
            let line = &src[(y + first) * w * c..(y + first + 1) * w * c];
            for (xx, &(xmin, n)) in hor.bounds.iter().enumerate() {
                let k = &hor.k[xx * hor.ksize..xx * hor.ksize + n];
                for ch in 0..c {
                    let mut ss = half;
                    for (x, &kx) in k.iter().enumerate() {
                        ss = ss.wrapping_add((line[(xmin + x) * c + ch] as i32).wrapping_mul(kx));
                    }
                    t[(y * out_w + xx) * c + ch] = clip8(ss);
                }
            }
        }
        (t, out_w, first)
    } else {
        (src.to_vec(), w, 0)
    };
    if out_h == h {
        return tmp;
    }
    let stride = tmp_w * c;
    let mut out = vec![0u8; out_h * stride];
    for (yy, &(ymin, n)) in vert.bounds.iter().enumerate() {
        let k = &vert.k[yy * vert.ksize..yy * vert.ksize + n];
        let base = ymin - row0;
        for i in 0..stride {
            let mut ss = half;
            for (y, &ky) in k.iter().enumerate() {
                ss = ss.wrapping_add((tmp[(base + y) * stride + i] as i32).wrapping_mul(ky));
            }
            out[yy * stride + i] = clip8(ss);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(64, 32), (32, 64), (100, 7), (7, 100), (33, 32)] {
            let c = precompute(i, o);
            for (xx, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i64 = c.k[xx * c.ksize..xx * c.ksize + n]
                    .iter()
                    .map(|&v| v as i64)
                    .sum();
                assert!((s - (1 << 22)).abs() <= n as i64, "{i}->{o} row {xx}: {s}");
            }
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let src = vec![77u8; 50 * 30 * 3];
        let out = resize_lanczos(&src, 50, 30, 3, 16, 16);
        assert!(out.iter().all(|&v| v == 77), "{out:?}");
    }
}
