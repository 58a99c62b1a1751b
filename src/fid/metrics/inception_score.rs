//! Inception Score (Salimans et al. 2016) as torch-fidelity 0.4.0 computes it
//! (`isc_features_to_metric`), from the detector's `logits_unbiased`
//! (`pool3 · fc.weightᵀ`, 1008 classes, no bias: torch-fidelity's default IS feature).
//!
//! The `N` logit rows are permuted by `np.random.RandomState(seed).permutation(N)` (seed
//! 2020, `samples_shuffle=True`), then, in f64, `p = softmax(l)`, `log p = log_softmax(l)`,
//! and split into `splits` (10) consecutive chunks `[⌊iN/s⌋, ⌊(i+1)N/s⌋)`. Per chunk, with
//! `q = mean_rows(p)`:
//!
//! `ISᵢ = exp( mean_rows Σ_c p_c (log p_c − log q_c) )`,
//!
//! and the result is the mean and population standard deviation (`np.std`) of the `ISᵢ`.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::kid::mean_std;
use super::Features;
use crate::data::random::RandomState;

/// IS options (torch-fidelity's `isc_splits`, `samples_shuffle`, `rng_seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct IsOptions {
    /// Number of splits (10).
    pub splits: usize,
    /// Permute the rows first (true).
    pub shuffle: bool,
    /// Seed of the permutation (2020).
    pub seed: u32,
}

impl Default for IsOptions {
    fn default() -> Self {
        IsOptions {
            splits: 10,
            shuffle: true,
            seed: 2020,
        }
    }
}

/// Inception Score mean and standard deviation over the splits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InceptionScore {
    /// Mean (`inception_score_mean`).
    pub mean: f64,
    /// Population standard deviation (`inception_score_std`).
    pub std: f64,
}

/// `logits_unbiased = f · Wᵀ` `[N, 1008]` of pool3 features `f [N, 2048]` and the
/// classifier weight `W = fc.weight [1008, 2048]` (an f32 matrix product, as torch-fidelity's).
pub fn logits_unbiased(features: &Features, fc_weight: &[f32], classes: usize) -> Result<Features> {
    if fc_weight.len() != classes * features.dim {
        bail!(
            "classifier weight has {} values; expected {classes} × {}",
            fc_weight.len(),
            features.dim
        );
    }
    let _guard = tch::no_grad_guard();
    let f = Tensor::from_slice(&features.data).reshape([features.len() as i64, features.dim as i64]);
    let w = Tensor::from_slice(fc_weight).reshape([classes as i64, features.dim as i64]);
    let l = f.matmul(&w.tr()).contiguous().reshape([-1]);
    Features::from_rows(classes, Vec::<f32>::try_from(&l)?)
}

/// The Inception Score of `logits` `[N, C]` (see the module docs). Needs `N ≥ splits`.
pub fn inception_score(logits: &Features, opts: &IsOptions) -> Result<InceptionScore> {
    let n = logits.len();
    if opts.splits == 0 {
        bail!("IS: the number of splits must be at least 1");
    }
    if n < opts.splits {
        bail!(
            "IS: {n} sample(s) for {} splits; need at least one per split",
            opts.splits
        );
    }
    let _guard = tch::no_grad_guard();
    let mut l = Tensor::from_slice(&logits.data)
        .reshape([n as i64, logits.dim as i64])
        .to_kind(Kind::Double);
    if opts.shuffle {
        let mut perm: Vec<i64> = (0..n as i64).collect();
        RandomState::new(opts.seed).shuffle(&mut perm);
        l = l.index_select(0, &Tensor::from_slice(&perm).to_device(Device::Cpu));
    }
    let p = l.softmax(1, Kind::Double);
    let log_p = l.log_softmax(1, Kind::Double);
    let mut scores = Vec::with_capacity(opts.splits);
    for i in 0..opts.splits {
        let (a, b) = ((i * n / opts.splits) as i64, ((i + 1) * n / opts.splits) as i64);
        let pc = p.narrow(0, a, b - a);
        let q = pc.mean_dim(0, true, Kind::Double);
        let kl = (&pc * (log_p.narrow(0, a, b - a) - q.log())).sum_dim_intlist(1, false, Kind::Double);
        scores.push(kl.mean(Kind::Double).exp().double_value(&[]));
    }
    let (mean, std) = mean_std(&scores);
    Ok(InceptionScore { mean, std })
}
