//! How far an output is from its reference: the one error measure of the parity tests, the
//! benches and `tiw verify`.

/// Max normalised error of `a` against the reference `b`:
///
/// ```text
/// norm_err(a, b) = max_i |a_i − b_i| / max_i |b_i|
/// ```
///
/// computed in f64 (the denominator ranges over `b`'s finite values; when it is 0 the
/// numerator alone is returned, an absolute error). Non-finite values must agree exactly
/// (±inf with the same sign, NaN with NaN) and are then left out of the maximum; any other
/// disagreement, or a length mismatch, gives `f64::INFINITY`, so a NaN can never hide inside a
/// maximum.
pub fn norm_err<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    scaled_err(a, b, max_abs(b))
}

/// [`norm_err`] with the denominator `max(max_i |a_i|, max_i |b_i|)`: for two outputs of which
/// neither is the reference (two runtimes compared with each other).
pub fn norm_err_symmetric<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    scaled_err(a, b, max_abs(a).max(max_abs(b)))
}

/// Largest finite |v_i| (0 for an empty or all-non-finite slice).
fn max_abs<T: Copy + Into<f64>>(v: &[T]) -> f64 {
    v.iter()
        .map(|&x| x.into())
        .filter(|x| x.is_finite())
        .fold(0f64, |m, x| m.max(x.abs()))
}

fn scaled_err<T: Copy + Into<f64>>(a: &[T], b: &[T], scale: f64) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let mut diff = 0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        if !x.is_finite() || !y.is_finite() {
            if !(x == y || (x.is_nan() && y.is_nan())) {
                return f64::INFINITY;
            }
            continue;
        }
        diff = diff.max((x - y).abs());
    }
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_and_edge_cases() {
        assert_eq!(norm_err(&[1.0f32, 2.5], &[1.0, 2.0]), 0.25);
        assert_eq!(norm_err(&[1.0f64, 2.5], &[1.0, 2.0]), 0.25);
        assert_eq!(norm_err_symmetric(&[0.0f32, 4.0], &[0.0, 2.0]), 0.5);
        // Zero reference: absolute error.
        assert_eq!(norm_err(&[0.5f32], &[0.0]), 0.5);
        // Non-finite values must agree.
        assert_eq!(norm_err(&[f32::NAN, 1.0], &[f32::NAN, 1.0]), 0.0);
        assert_eq!(norm_err(&[f32::INFINITY], &[f32::INFINITY]), 0.0);
        assert_eq!(norm_err(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(norm_err(&[f32::INFINITY], &[f32::NEG_INFINITY]), f64::INFINITY);
        assert_eq!(norm_err(&[1.0f32], &[1.0, 2.0]), f64::INFINITY);
    }
}
