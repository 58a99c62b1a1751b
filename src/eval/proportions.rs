//! Class proportions of a labelled sample set, the total-variation distance to a target
//! distribution and percentile-bootstrap intervals (the measure of the demo's report,
//! [`crate::demo::report`], and of `tiw eval proportions`).
//!
//! * Proportions: `p_k = #{i : label_i = k} / N`.
//! * Total variation: `TV(p, q) = ½ Σ_k |p_k − q_k|` (0 = equal; against the uniform target a
//!   one-hot `p` gives `1 − 1/K`).
//! * Bootstrap: `B` resamples of the `N` labels with replacement (indices drawn uniformly
//!   from a seeded ChaCha8 generator), the statistic recomputed on each, and the 2.5% and
//!   97.5% percentiles (linear interpolation between order statistics) as the 95% interval.

use anyhow::{anyhow, bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Images per class: `counts[k] = #{i : labels[i] = k}` (labels ≥ k are an error).
pub fn counts(labels: &[u32], k: usize) -> Result<Vec<usize>> {
    let mut c = vec![0usize; k];
    for &l in labels {
        *c.get_mut(l as usize)
            .ok_or_else(|| anyhow!("label {l} out of range for {k} classes"))? += 1;
    }
    Ok(c)
}

/// Class proportions `count_k / N` of `labels` over `k` classes (labels ≥ k are an error).
pub fn proportions(labels: &[u32], k: usize) -> Result<Vec<f64>> {
    Ok(counts(labels, k)?
        .iter()
        .map(|&c| c as f64 / labels.len().max(1) as f64)
        .collect())
}

/// Total-variation distance `½ Σ_k |p_k − q_k|`.
pub fn tv_distance(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// Total-variation distance to the uniform distribution over `p.len()` classes.
pub fn tv_to_uniform(p: &[f64]) -> f64 {
    let u = 1.0 / p.len().max(1) as f64;
    0.5 * p.iter().map(|a| (a - u).abs()).sum::<f64>()
}

/// 2.5% and 97.5% percentiles (linear interpolation) of the finite values of `v`; `None`
/// with fewer than 2 of them.
pub fn ci95(mut v: Vec<f64>) -> Option<(f64, f64)> {
    v.retain(|x| x.is_finite());
    if v.len() < 2 {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    };
    Some((q(0.025), q(0.975)))
}

/// `n` bootstrap index vectors of length `len` (uniform with replacement, ChaCha8 from `seed`).
pub fn bootstrap_indices(len: usize, n: usize, seed: u64) -> impl Iterator<Item = Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(move |_| (0..len).map(|_| rng.gen_range(0..len)).collect())
}

/// The class-proportion summary of one labelled sample set against a target.
#[derive(Debug, Clone, PartialEq)]
pub struct ProportionReport {
    /// Images per class.
    pub counts: Vec<usize>,
    /// `counts / N`.
    pub proportions: Vec<f64>,
    /// Target proportions (sum 1).
    pub target: Vec<f64>,
    /// `TV(proportions, target)`.
    pub tv: f64,
    /// 95% bootstrap interval of the TV (`None` without resamples).
    pub tv_ci95: Option<(f64, f64)>,
    /// 95% bootstrap interval of each class proportion (empty without resamples).
    pub proportion_ci95: Vec<(f64, f64)>,
}

/// Proportions of `labels` (classes `0..target.len()`), their TV distance to `target` and,
/// with `bootstrap > 0`, percentile intervals from `bootstrap` resamples (seed `seed`).
pub fn proportion_report(
    labels: &[u32],
    target: &[f64],
    bootstrap: usize,
    seed: u64,
) -> Result<ProportionReport> {
    let k = target.len();
    if labels.is_empty() {
        bail!("no labelled samples");
    }
    let counts = counts(labels, k)?;
    let p = proportions(labels, k)?;
    let (mut tvs, mut per_class) = (
        Vec::with_capacity(bootstrap),
        vec![Vec::with_capacity(bootstrap); k],
    );
    for idx in bootstrap_indices(labels.len(), bootstrap, seed) {
        let l: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
        let pb = proportions(&l, k)?;
        tvs.push(tv_distance(&pb, target));
        for (c, v) in per_class.iter_mut().zip(pb) {
            c.push(v);
        }
    }
    Ok(ProportionReport {
        counts,
        tv: tv_distance(&p, target),
        proportions: p,
        target: target.to_vec(),
        tv_ci95: ci95(tvs),
        proportion_ci95: per_class.into_iter().filter_map(ci95).collect(),
    })
}

/// A target distribution from text: numbers separated by commas, whitespace or newlines
/// (`#` starts a comment), non-negative with a positive sum; normalised to sum 1.
pub fn parse_target(text: &str) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        for tok in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            let x: f64 = tok
                .parse()
                .map_err(|_| anyhow!("target proportion {tok:?} is not a number"))?;
            if !x.is_finite() || x < 0.0 {
                bail!("target proportion {tok} must be finite and non-negative");
            }
            v.push(x);
        }
    }
    let s: f64 = v.iter().sum();
    if v.is_empty() || s <= 0.0 {
        bail!("the target distribution needs at least one positive proportion");
    }
    Ok(v.into_iter().map(|x| x / s).collect())
}
