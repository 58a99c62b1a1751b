//! Kernel Inception Distance (Bińkowski et al. 2018) as torch-fidelity 0.4.0 computes it.
//!
//! Kernel: `k(x, y) = (γ·xᵀy + c)^d` (defaults `d = 3`, `γ = 1/D`, `c = 1`).
//! For subsets `X` (generated) and `Y` (reference) of `m` vectors each, the unbiased MMD²:
//!
//! `MMD²ᵤ = [Σ_{i≠j} k(xᵢ,xⱼ) + Σ_{i≠j} k(yᵢ,yⱼ)] / (m(m−1)) − 2·Σ_{i,j} k(xᵢ,yⱼ) / m²`.
//!
//! `KID` is the mean of MMD²ᵤ over `subsets` subset pairs and `KID_std` their standard
//! deviation (population, `np.std`). Subset `s` draws, from one
//! `np.random.RandomState(seed)` (seed 2020 by default, torch-fidelity's `rng_seed`), first
//! `choice(n_gen, m, replace=False)` then `choice(n_ref, m, replace=False)`; legacy
//! `choice` without replacement is `permutation(n)[:m]` (a full Fisher–Yates shuffle of
//! `arange(n)`, [`RandomState::shuffle`]). torch-fidelity evaluates the kernels in the
//! features' dtype (f32 for real features); here the products are f64 by default, which
//! matches its result on f64 inputs to rounding, or f32 ([`ProductDtype::F32`]), with the
//! kernel and sums f64 either way. The symmetric sums `Σ_{i≠j} k(xᵢ,xⱼ)` multiply only the
//! blocks on and above the diagonal.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::{check_pair, Features, ProductDtype};
use crate::data::random::RandomState;

/// KID options (torch-fidelity's `kid_*` keys and `rng_seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct KidOptions {
    /// Number of subset pairs (`kid_subsets`, 100).
    pub subsets: usize,
    /// Vectors per subset (`kid_subset_size`, 1000).
    pub subset_size: usize,
    /// Kernel degree `d` (`kid_kernel_poly_degree`, 3).
    pub degree: u32,
    /// Kernel scale `γ`; `None` = `1/D` (`kid_kernel_poly_gamma`).
    pub gamma: Option<f64>,
    /// Kernel offset `c` (`kid_kernel_poly_coef0`, 1).
    pub coef: f64,
    /// Seed of the subset draws (`rng_seed`, 2020).
    pub seed: u32,
    /// Element type of the kernel products (f64 by default).
    pub dtype: ProductDtype,
}

impl Default for KidOptions {
    fn default() -> Self {
        KidOptions {
            subsets: 100,
            subset_size: 1000,
            degree: 3,
            gamma: None,
            coef: 1.0,
            seed: 2020,
            dtype: ProductDtype::F64,
        }
    }
}

/// KID mean and standard deviation over the subsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean of MMD²ᵤ (`kernel_inception_distance_mean`).
    pub mean: f64,
    /// Population standard deviation of MMD²ᵤ (`kernel_inception_distance_std`).
    pub std: f64,
}

/// `RandomState.choice(n, m, replace=False)` (legacy): the first `m` of `permutation(n)`.
pub fn choice_without_replacement(rng: &mut RandomState, n: usize, m: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut p);
    p.truncate(m);
    p
}

/// The polynomial kernel `k(x, y) = (γ·xᵀy + c)^d`.
#[derive(Debug, Clone, Copy)]
pub struct PolyKernel {
    /// Scale `γ`.
    pub gamma: f64,
    /// Offset `c`.
    pub coef: f64,
    /// Degree `d`.
    pub degree: u32,
}

/// Row blocks of the symmetric Gram matrices: only the `B(B+1)/2` blocks on and above the
/// diagonal are multiplied, `(B+1)/(2B)` of the full product's work.
const SYMMETRIC_BLOCKS: i64 = 2;

impl PolyKernel {
    /// The kernel matrix `(γ·A Bᵀ + c)^d` in f64 (the product in the inputs' element type).
    fn matrix(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let mut k = a.matmul(&b.tr()).to_kind(Kind::Double);
        // in place: the matrix is the only large allocation per product
        let _ = k.g_mul_scalar_(self.gamma);
        let _ = k.g_add_scalar_(self.coef);
        let _ = k.pow_(self.degree as f64);
        k
    }

    /// `Σ_{i,j} k(aᵢ, bⱼ)`.
    fn sum(&self, a: &Tensor, b: &Tensor) -> f64 {
        self.matrix(a, b).sum(Kind::Double).double_value(&[])
    }

    /// `Σ_{i≠j} k(xᵢ, xⱼ)`: the diagonal blocks minus their traces plus twice each block
    /// above the diagonal (`k` is symmetric).
    fn off_diagonal_sum(&self, x: &Tensor) -> f64 {
        let m = x.size()[0];
        let step = ((m + SYMMETRIC_BLOCKS - 1) / SYMMETRIC_BLOCKS).max(1);
        let blocks: Vec<Tensor> = (0..m)
            .step_by(step as usize)
            .map(|s| x.narrow(0, s, step.min(m - s)))
            .collect();
        let mut total = 0.0;
        for (i, bi) in blocks.iter().enumerate() {
            let diag = self.matrix(bi, bi);
            total += diag.sum(Kind::Double).double_value(&[]) - diag.trace().double_value(&[]);
            for bj in &blocks[i + 1..] {
                total += 2.0 * self.sum(bi, bj);
            }
        }
        total
    }
}

/// MMD²ᵤ of two equal-size subsets `x`, `y` `[m, D]` (f64 or f32; see the module docs).
pub fn mmd2_unbiased(x: &Tensor, y: &Tensor, k: &PolyKernel) -> f64 {
    let m = x.size()[0] as f64;
    let (xx, yy) = (k.off_diagonal_sum(x), k.off_diagonal_sum(y));
    (xx + yy) / (m * (m - 1.0)) - 2.0 * k.sum(x, y) / (m * m)
}

/// KID of `generated` against `reference` (see the module docs). Fails when the dimensions
/// differ or either set has fewer than `subset_size` vectors (or `subset_size < 2`).
pub fn kid(generated: &Features, reference: &Features, opts: &KidOptions) -> Result<Kid> {
    if opts.subsets == 0 {
        bail!("KID: --kid-subsets must be at least 1");
    }
    if opts.subset_size < 2 {
        bail!(
            "KID: the subset size must be at least 2 (got {})",
            opts.subset_size
        );
    }
    check_pair(generated, reference, 1, "KID")?;
    let (n1, n2) = (generated.len(), reference.len());
    if n1 < opts.subset_size || n2 < opts.subset_size {
        bail!(
            "KID: subset size {} is larger than the number of samples (generated: {n1}, reference: {n2}); \
             pass a smaller --kid-subset-size",
            opts.subset_size
        );
    }
    let kernel = PolyKernel {
        gamma: opts.gamma.unwrap_or(1.0 / generated.dim as f64),
        coef: opts.coef,
        degree: opts.degree,
    };
    let (g, r) = (generated.to_tensor(opts.dtype), reference.to_tensor(opts.dtype));
    let mut rng = RandomState::new(opts.seed);
    let mut mmds = Vec::with_capacity(opts.subsets);
    let _guard = tch::no_grad_guard();
    for _ in 0..opts.subsets {
        let i1 = choice_without_replacement(&mut rng, n1, opts.subset_size);
        let i2 = choice_without_replacement(&mut rng, n2, opts.subset_size);
        let rows = |t: &Tensor, i: &[usize]| {
            let idx: Vec<i64> = i.iter().map(|&v| v as i64).collect();
            t.index_select(0, &Tensor::from_slice(&idx))
        };
        mmds.push(mmd2_unbiased(&rows(&g, &i1), &rows(&r, &i2), &kernel));
    }
    let (mean, std) = mean_std(&mmds);
    Ok(Kid { mean, std })
}

/// Mean and population standard deviation (`np.mean`, `np.std`).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}
