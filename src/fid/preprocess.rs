//! Host-side input preparation of the FID detector: TF1 legacy bilinear resize to 299×299
//! and `x = (x − 128)/128`, bit for bit as torch-fidelity's `inception-v3-compat` (which
//! reproduces TF1 `resize_bilinear(align_corners=False)`; NVIDIA's detector differs only by
//! float rounding, ≤ 2.1·10⁻⁶ after normalisation).
//!
//! Per axis with input size `n` and output index `j`, in f32 with every operation rounded
//! separately (no FMA): `s = f32(n/299)` (the f64 quotient rounded once), `src = f32(j)·s`,
//! `lo = ⌊src⌋`, `hi = min(lo + 1, n − 1)`, `d = src − lo`. Then
//! `top = a + (b − a)·dx`, `bot = c + (e − c)·dx`, `out = top + (bot − top)·dy` with
//! `a, b` = row `lo_y` at columns `lo_x, hi_x` and `c, e` = row `hi_y`.

use crate::data::images::Image;

/// The detector's input size.
pub const SIZE: usize = tiw_models::inception::INPUT_SIZE;

/// Source taps of one axis: `(lo, hi, d)` per output index.
fn taps(n: usize, out: usize) -> Vec<(usize, usize, f32)> {
    let s = (n as f64 / out as f64) as f32;
    (0..out)
        .map(|j| {
            let src = j as f32 * s;
            let lo = (src as usize).min(n - 1);
            let hi = (lo + 1).min(n - 1);
            (lo, hi, src - lo as f32)
        })
        .collect()
}

/// Resizes one `H×W×C` uint8 image (C = 1 or 3) to `3×299×299` f32 (CHW) and normalises it
/// into `out` (length `3·299·299`). One channel is repeated to three, as `fid.py` does.
pub fn resize_normalize(img: &Image, out: &mut [f32]) {
    let (h, w, c) = (img.height, img.width, img.channels);
    assert!(c == 1 || c == 3, "channels must be 1 or 3");
    assert_eq!(out.len(), 3 * SIZE * SIZE);
    assert_eq!(img.data.len(), h * w * c);
    let ty = taps(h, SIZE);
    let tx = taps(w, SIZE);
    let plane = SIZE * SIZE;
    for ch in 0..c {
        let px = |y: usize, x: usize| img.data[(y * w + x) * c + ch] as f32;
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for (oy, &(y0, y1, dy)) in ty.iter().enumerate() {
            let row = &mut dst[oy * SIZE..(oy + 1) * SIZE];
            for (ox, &(x0, x1, dx)) in tx.iter().enumerate() {
                let (a, b, cc, e) = (px(y0, x0), px(y0, x1), px(y1, x0), px(y1, x1));
                let top = a + (b - a) * dx;
                let bot = cc + (e - cc) * dx;
                let v = top + (bot - top) * dy;
                row[ox] = (v - 128.0) / 128.0;
            }
        }
    }
    if c == 1 {
        let (first, rest) = out.split_at_mut(plane);
        rest[..plane].copy_from_slice(first);
        rest[plane..].copy_from_slice(first);
    }
}
