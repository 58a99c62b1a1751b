//! Feature statistics as EDM's `fid.py` accumulates them, in f64.
//!
//! Partial statistics of `n` feature vectors `f ∈ ℝᴰ` are `n`, `Σf` and `S = Σ f fᵀ`; they
//! merge by addition. The reference statistics are `mu = Σf / n` and
//! `sigma = (S − (mu muᵀ)·n) / (n − 1)` (EDM: `sigma -= mu.ger(mu) * n; sigma /= n - 1`),
//! which differs from `np.cov` by ~10⁻¹⁴.
//!
//! `S` is accumulated with a blocked symmetric rank-k update ([`super::outer::OuterSum`],
//! libtorch f64 products on blocks of up to [`BLOCK_ROWS`] feature rows, lower half, mirrored
//! at the end). f32 features are widened to f64 first, so every product `fᵢfⱼ` is exact.

use super::outer::OuterSum;

/// Feature rows buffered before one rank-k update of `S`.
pub const BLOCK_ROWS: usize = 2048;

/// Partial statistics `(n, Σf, Σ f fᵀ)` of feature vectors of dimension `dim`.
pub struct FeatureStats {
    dim: usize,
    n: u64,
    sum: Vec<f64>,
    /// `Σ f fᵀ` of the rows already folded in.
    outer: OuterSum,
    /// Buffered rows, row-major `rows × dim`.
    pending: Vec<f64>,
}

impl std::fmt::Debug for FeatureStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStats")
            .field("dim", &self.dim)
            .field("n", &self.n)
            .finish()
    }
}

/// Reference statistics: mean `mu [D]` and covariance `sigma [D, D]` (row-major), f64.
#[derive(Debug, Clone, PartialEq)]
pub struct MuSigma {
    /// Mean.
    pub mu: Vec<f64>,
    /// Covariance, row-major `D × D`.
    pub sigma: Vec<f64>,
}

impl MuSigma {
    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }
}

impl FeatureStats {
    /// Empty statistics of dimension `dim`.
    pub fn new(dim: usize) -> Self {
        FeatureStats {
            dim,
            n: 0,
            sum: vec![0.0; dim],
            outer: OuterSum::new(dim),
            pending: Vec::new(),
        }
    }

    /// Statistics from stored parts (`sum_outer` row-major `D × D`, symmetric).
    pub fn from_parts(n: u64, sum: Vec<f64>, sum_outer: &[f64]) -> Self {
        let dim = sum.len();
        assert_eq!(sum_outer.len(), dim * dim);
        FeatureStats {
            dim,
            n,
            sum,
            outer: OuterSum::from_row_major(dim, sum_outer),
            pending: Vec::new(),
        }
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of feature vectors.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// `Σf`.
    pub fn sum(&self) -> &[f64] {
        &self.sum
    }

    /// Adds the rows of a row-major `rows × dim` f32 feature matrix.
    pub fn add_f32(&mut self, features: &[f32]) {
        assert_eq!(
            features.len() % self.dim.max(1),
            0,
            "feature matrix is not rows × {}",
            self.dim
        );
        for row in features.chunks_exact(self.dim) {
            for (s, &v) in self.sum.iter_mut().zip(row) {
                *s += v as f64;
            }
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(BLOCK_ROWS * self.dim);
            }
            self.pending.extend(row.iter().map(|&v| v as f64));
            self.n += 1;
            if self.pending.len() >= BLOCK_ROWS * self.dim {
                self.flush();
            }
        }
    }

    /// Adds the rows of a row-major `rows × dim` f64 feature matrix.
    pub fn add_f64(&mut self, features: &[f64]) {
        assert_eq!(
            features.len() % self.dim.max(1),
            0,
            "feature matrix is not rows × {}",
            self.dim
        );
        for row in features.chunks_exact(self.dim) {
            for (s, &v) in self.sum.iter_mut().zip(row) {
                *s += v;
            }
            self.pending.extend_from_slice(row);
            self.n += 1;
            if self.pending.len() >= BLOCK_ROWS * self.dim {
                self.flush();
            }
        }
    }

    /// Folds the buffered rows into `S`: `S += Pᵀ P`.
    fn flush(&mut self) {
        self.outer.add_rows(&self.pending);
        self.pending.clear();
    }

    /// `Σ f fᵀ`, row-major `D × D` (symmetric).
    pub fn sum_outer(&mut self) -> Vec<f64> {
        self.flush();
        self.outer.to_row_major()
    }

    /// Adds another partial statistics of the same dimension.
    pub fn merge(&mut self, other: &mut FeatureStats) -> anyhow::Result<()> {
        if other.dim != self.dim {
            anyhow::bail!(
                "cannot merge statistics of dimension {} into dimension {}",
                other.dim,
                self.dim
            );
        }
        self.flush();
        other.flush();
        self.n += other.n;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.outer.add(&other.outer);
        Ok(())
    }

    /// `mu`, `sigma` as EDM computes them; needs `n ≥ 2`.
    pub fn mu_sigma(&mut self) -> anyhow::Result<MuSigma> {
        if self.n < 2 {
            anyhow::bail!(
                "statistics of {} feature vector(s); need at least 2 to compute a covariance",
                self.n
            );
        }
        let mut sigma = self.sum_outer();
        let mu = tiw_fid_linalg::covariance_in_place(self.n as f64, &self.sum, &mut sigma);
        Ok(MuSigma { mu, sigma })
    }
}
