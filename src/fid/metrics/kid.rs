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
//! features' dtype (f32 for real features); here they are f64, which matches its result on
//! f64 inputs to rounding.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::{check_pair, Features};
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

/// The polynomial kernel matrix `(γ·A Bᵀ + c)^d` (f64).
fn kernel(a: &Tensor, b: &Tensor, gamma: f64, coef: f64, degree: u32) -> Tensor {
    (a.matmul(&b.tr()) * gamma + coef).pow_tensor_scalar(degree as f64)
}

/// MMD²ᵤ of two equal-size f64 subsets `x`, `y` `[m, D]` (see the module docs).
pub fn mmd2_unbiased(x: &Tensor, y: &Tensor, gamma: f64, coef: f64, degree: u32) -> f64 {
    let m = x.size()[0] as f64;
    let off_diag_sum = |k: Tensor| k.sum(Kind::Double).double_value(&[]) - k.trace().double_value(&[]);
    let xx = off_diag_sum(kernel(x, x, gamma, coef, degree));
    let yy = off_diag_sum(kernel(y, y, gamma, coef, degree));
    let xy = kernel(x, y, gamma, coef, degree)
        .sum(Kind::Double)
        .double_value(&[]);
    (xx + yy) / (m * (m - 1.0)) - 2.0 * xy / (m * m)
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
    let gamma = opts.gamma.unwrap_or(1.0 / generated.dim as f64);
    let (g, r) = (generated.to_tensor_f64(), reference.to_tensor_f64());
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
        mmds.push(mmd2_unbiased(
            &rows(&g, &i1),
            &rows(&r, &i2),
            gamma,
            opts.coef,
            opts.degree,
        ));
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
