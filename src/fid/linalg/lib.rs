//! The f64 linear algebra of `tiw fid`, as plain (non-generic) functions over faer.
//!
//! faer is generic over the scalar type, so its algorithms are compiled in the crate that
//! calls them with `f64`. Keeping the calls in this small crate — built with `opt-level = 3`
//! even in the dev profile (root `Cargo.toml`) — makes a 2048-d Fréchet distance take
//! seconds instead of minutes in debug builds. All matrices cross the API as row-major
//! slices.

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{matmul as tri_matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par, Side};

fn par() -> Par {
    Par::rayon(0)
}

/// EDM's covariance from sums: `(S − (μ μᵀ)·n) / (n − 1)` with `μ = Σf / n`, in place on a
/// row-major `S`; returns `μ`.
pub fn covariance_in_place(n: f64, sum: &[f64], s: &mut [f64]) -> Vec<f64> {
    let d = sum.len();
    assert_eq!(s.len(), d * d);
    let mu: Vec<f64> = sum.iter().map(|x| x / n).collect();
    for (i, row) in s.chunks_exact_mut(d.max(1)).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mu[i] * mu[j] * n) / (n - 1.0);
        }
    }
    mu
}

/// Eigenvalues (ascending) of a symmetric row-major `n × n` matrix (lower triangle read).
pub fn symmetric_eigenvalues(a: &[f64], n: usize) -> Result<Vec<f64>, String> {
    assert_eq!(a.len(), n * n);
    // row-major lower triangle = column-major upper triangle
    MatRef::from_column_major_slice(a, n, n)
        .self_adjoint_eigenvalues(Side::Upper)
        .map_err(|e| format!("symmetric eigenvalue iteration did not converge: {e:?}"))
}

/// `tr √(Σ₁Σ₂)` for symmetric positive semi-definite row-major `d × d` matrices (Σ₁'s lower
/// triangle is read; Σ₂ is used as given): [`trace_sqrt_product_cholesky`] when Σ₁ is
/// positive definite, else [`trace_sqrt_product_eigh`].
pub fn trace_sqrt_product(s1: &[f64], s2: &[f64], d: usize) -> Result<f64, String> {
    match trace_sqrt_product_cholesky(s1, s2, d) {
        Some(t) => t,
        None => trace_sqrt_product_eigh(s1, s2, d),
    }
}

/// `Σₖ √max(λₖ(Lᵀ Σ₂ L), 0)` with `Σ₁ = L Lᵀ` (Cholesky; `Σ₁Σ₂ = L(LᵀΣ₂L)L⁻¹` is similar
/// to `Lᵀ Σ₂ L`, as `√Σ₁ Σ₂ √Σ₁` is). `None` when Σ₁ is not numerically positive definite.
/// About twice as fast as the eigendecomposition route (no eigenvectors needed).
pub fn trace_sqrt_product_cholesky(s1: &[f64], s2: &[f64], d: usize) -> Option<Result<f64, String>> {
    assert!(s1.len() == d * d && s2.len() == d * d);
    if d == 0 {
        return Some(Ok(0.0));
    }
    // row-major lower triangle = column-major upper triangle
    let llt = MatRef::from_column_major_slice(s1, d, d).llt(Side::Upper).ok()?;
    let l = llt.L();
    let mut c = Mat::<f64>::zeros(d, d);
    tri_matmul(
        c.as_mut(),
        BlockStructure::Rectangular,
        Accum::Replace,
        MatRef::from_row_major_slice(s2, d, d),
        BlockStructure::Rectangular,
        l,
        BlockStructure::TriangularLower,
        1.0,
        par(),
    );
    let mut m = Mat::<f64>::zeros(d, d);
    tri_matmul(
        m.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        l.transpose(),
        BlockStructure::TriangularUpper,
        c.as_ref(),
        BlockStructure::Rectangular,
        1.0,
        par(),
    );
    Some(sum_sqrt_eigenvalues(m))
}

fn sum_sqrt_eigenvalues(m: Mat<f64>) -> Result<f64, String> {
    let ev = m
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| format!("eigenvalues of √Σ₁Σ₂√Σ₁ did not converge: {e:?}"))?;
    Ok(ev.iter().map(|&l| l.max(0.0).sqrt()).sum())
}

/// `Σₖ √max(λₖ(Bᵀ Σ₂ B), 0)` with `Σ₁ = V Λ Vᵀ` and `B = V[:, λ>0]·diag(√λ)` — the
/// eigenvalues of `√Σ₁ Σ₂ √Σ₁` with negative rounding-noise eigenvalues of Σ₁ clamped to 0
/// (works for singular Σ₁).
pub fn trace_sqrt_product_eigh(s1: &[f64], s2: &[f64], d: usize) -> Result<f64, String> {
    assert!(s1.len() == d * d && s2.len() == d * d);
    if d == 0 {
        return Ok(0.0);
    }
    let eig = MatRef::from_column_major_slice(s1, d, d)
        .self_adjoint_eigen(Side::Upper)
        .map_err(|e| format!("eigendecomposition of the first covariance did not converge: {e:?}"))?;
    let (u, lam) = (eig.U(), eig.S().column_vector());
    let keep: Vec<usize> = (0..d).filter(|&k| lam[k] > 0.0).collect();
    let r = keep.len();
    if r == 0 {
        return Ok(0.0);
    }
    let mut b = Mat::<f64>::zeros(d, r);
    for (c, &k) in keep.iter().enumerate() {
        let sq = lam[k].sqrt();
        for (dst, &src) in b.col_as_slice_mut(c).iter_mut().zip(u.col(k).iter()) {
            *dst = src * sq;
        }
    }
    let mut c = Mat::<f64>::zeros(d, r);
    matmul(
        c.as_mut(),
        Accum::Replace,
        MatRef::from_row_major_slice(s2, d, d),
        b.as_ref(),
        1.0,
        par(),
    );
    let mut m = Mat::<f64>::zeros(r, r);
    tri_matmul(
        m.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        b.transpose(),
        BlockStructure::Rectangular,
        c.as_ref(),
        BlockStructure::Rectangular,
        1.0,
        par(),
    );
    sum_sqrt_eigenvalues(m)
}
