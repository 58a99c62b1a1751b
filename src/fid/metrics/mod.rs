//! Sample metrics beyond FID, computed from the detector's per-sample features or logits as
//! torch-fidelity 0.4.0 computes them (its `metric_kid`, `metric_prc`, `metric_isc`):
//!
//! * [`kid`]: Kernel Inception Distance, the unbiased MMD² with a polynomial kernel, mean and
//!   standard deviation over random subsets;
//! * [`prc`]: precision and recall of Kynkäänniemi et al. 2019 (k-NN manifolds);
//! * [`inception_score`]: the Inception Score of the detector's `logits_unbiased`.
//!
//! Features are row-major `N × D` f32 matrices ([`Features`]); the arithmetic is f64
//! (libtorch matrix products for the kernels and distances), or f32 for the matrix products
//! only when asked ([`ProductDtype`]).

pub mod inception_score;
pub mod kid;
pub mod prc;

use anyhow::{bail, Result};

/// Per-sample feature vectors: row-major `n × dim` f32.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features {
    /// Vector length `D`.
    pub dim: usize,
    /// Row-major values, `n · D` of them.
    pub data: Vec<f32>,
}

impl Features {
    /// An empty set of `dim`-d vectors.
    pub fn new(dim: usize) -> Self {
        Features {
            dim,
            data: Vec::new(),
        }
    }

    /// Wraps `data` (row-major `n × dim`), checking that it is whole rows.
    pub fn from_rows(dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 || data.len() % dim != 0 {
            bail!(
                "{} feature values are not whole rows of dimension {dim}",
                data.len()
            );
        }
        Ok(Features { dim, data })
    }

    /// Number of vectors `n`.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    /// Whether there is no vector.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends the rows of `other` (shards merge by concatenation, in order).
    pub fn append(&mut self, other: &Features) -> Result<()> {
        if other.dim != self.dim {
            bail!(
                "cannot merge features of dimension {} into dimension {}",
                other.dim,
                self.dim
            );
        }
        self.data.extend_from_slice(&other.data);
        Ok(())
    }

    /// The matrix as a CPU f64 tensor `[n, D]`.
    pub fn to_tensor_f64(&self) -> tch::Tensor {
        self.to_tensor(ProductDtype::F64)
    }

    /// The matrix as a CPU tensor `[n, D]` of the product element type `dtype` (the f32
    /// values are exact in either).
    pub fn to_tensor(&self, dtype: ProductDtype) -> tch::Tensor {
        tch::Tensor::from_slice(&self.data)
            .reshape([self.len() as i64, self.dim as i64])
            .to_kind(dtype.kind())
    }
}

/// Element type of the feature matrix products (the `A·Bᵀ` GEMMs, all of the cost) in KID
/// and precision/recall. Everything after a product is f64: the kernel `(γ·p + c)^d`, the
/// squared norms, `‖a‖² + ‖b‖² − 2p`, the square roots and every sum.
///
/// * `F64` (default): products of the f32 features (exact in f64) accumulated in f64; agrees
///   with torch-fidelity run on f64 tensors to rounding (~1e-14 relative for KID).
/// * `F32`: products accumulated in f32 (about twice the GEMM speed on CPU). Each product
///   `p = aᵀb` then carries a relative error of order `1e-7·√D` (~5e-6 at D = 2048), so a
///   distance `d` moves by about `1e-7·√D·|p|/d²` of itself (~1e-5 for near neighbours). A
///   distance that close to a k-NN radius may fall on the other side, moving precision or
///   recall by one vector. Measured (benches/fid.rs, two sets of 50,000 × 2048 synthetic
///   sparse non-negative features): KID −2.978066e-7 against −2.978073e-7 with `F64`
///   (7.5e-13 apart: 2.5e-6 of KID, which is itself ~1e-7 of the kernel sums);
///   precision/recall at 20,000 and 50,000 rows per set identical; tests/fid_metrics.rs:
///   within 4.5e-7 relative of torch-fidelity on f64 arrays. torch-fidelity's own default
///   (f32 features) does all of its arithmetic in f32: its KID on the same features is
///   −3.12e-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProductDtype {
    /// f64 products (exact arithmetic up to f64 rounding).
    #[default]
    F64,
    /// f32 products, f64 for everything after them.
    F32,
}

impl ProductDtype {
    /// The libtorch element type.
    pub fn kind(self) -> tch::Kind {
        match self {
            ProductDtype::F64 => tch::Kind::Double,
            ProductDtype::F32 => tch::Kind::Float,
        }
    }
}

/// Checks that two feature sets can be compared: same dimension, at least `min` rows each.
pub fn check_pair(generated: &Features, reference: &Features, min: usize, what: &str) -> Result<()> {
    if generated.dim != reference.dim {
        bail!(
            "{what}: generated features have dimension {} but reference features have {}",
            generated.dim,
            reference.dim
        );
    }
    for (name, f) in [("generated", generated), ("reference", reference)] {
        if f.len() < min {
            bail!(
                "{what}: {} {name} feature vector(s); need at least {min}",
                f.len()
            );
        }
    }
    Ok(())
}

/// A metric that `--metrics` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Fréchet Inception Distance (from the statistics).
    Fid,
    /// Kernel Inception Distance (needs features of both sets).
    Kid,
    /// Precision and recall (needs features of both sets).
    Prc,
    /// Inception Score (needs the generated set's logits).
    Is,
}

impl Metric {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Fid => "fid",
            Metric::Kid => "kid",
            Metric::Prc => "prc",
            Metric::Is => "is",
        }
    }

    /// Parses a comma-separated list (`fid,kid,prc,is`), keeping the order and dropping repeats.
    pub fn parse_list(s: &str) -> Result<Vec<Metric>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let m = match part.to_ascii_lowercase().as_str() {
                "fid" => Metric::Fid,
                "kid" => Metric::Kid,
                "prc" | "pr" | "precision" | "recall" => Metric::Prc,
                "is" | "isc" => Metric::Is,
                other => bail!("unknown metric {other:?}; choose from fid, kid, prc, is"),
            };
            if !out.contains(&m) {
                out.push(m);
            }
        }
        if out.is_empty() {
            bail!("no metric named; choose from fid, kid, prc, is");
        }
        Ok(out)
    }

    /// Whether the metric needs per-sample features (not only the statistics).
    pub fn needs_features(self) -> bool {
        matches!(self, Metric::Kid | Metric::Prc | Metric::Is)
    }
}

/// Options of every metric.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricOptions {
    /// KID.
    pub kid: kid::KidOptions,
    /// Precision/recall.
    pub prc: prc::PrcOptions,
    /// Inception Score.
    pub is: inception_score::IsOptions,
}

/// What is known about one image set: its statistics and, when kept, its features.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetData<'a> {
    /// `mu`, `sigma`.
    pub stats: Option<&'a crate::fid::stats::MuSigma>,
    /// Per-sample features `N × D`.
    pub features: Option<&'a Features>,
}

fn need<'a, T: ?Sized>(v: Option<&'a T>, what: &str) -> Result<&'a T> {
    v.ok_or_else(|| anyhow::anyhow!("{what}"))
}

/// Computes `metrics` of `generated` against `reference` (absent: only IS can be computed),
/// as `(name, value)` lines: `fid`; `kid`, `kid_std`; `precision`, `recall`; `is`, `is_std`.
/// IS needs the generated features and the detector's `fc.weight` (`[classes, D]`).
pub fn evaluate(
    metrics: &[Metric],
    generated: SetData<'_>,
    reference: Option<SetData<'_>>,
    fc_weight: Option<&[f32]>,
    opts: &MetricOptions,
) -> Result<Vec<(&'static str, f64)>> {
    let mut out = Vec::new();
    let no_ref = || anyhow::anyhow!("this metric compares two sets, but no reference was given");
    let no_features = |side: &str| {
        format!(
            "the {side} set has no per-sample features (npz key `features`), which KID and precision/recall need; \
             write them with `tiw fid stats --keep-features` or `tiw fid ref --metrics fid,kid,prc`"
        )
    };
    for &m in metrics {
        match m {
            Metric::Fid => {
                let r = reference.ok_or_else(no_ref)?;
                let a = need(generated.stats, "FID needs the generated set's statistics")?;
                let b = need(r.stats, "FID needs the reference statistics")?;
                out.push(("fid", crate::fid::distance::frechet_distance(a, b)?.fid));
            }
            Metric::Kid | Metric::Prc => {
                let r = reference.ok_or_else(no_ref)?;
                let g = need(generated.features, &no_features("generated"))?;
                let rf = need(r.features, &no_features("reference"))?;
                if m == Metric::Kid {
                    let k = kid::kid(g, rf, &opts.kid)?;
                    out.extend([("kid", k.mean), ("kid_std", k.std)]);
                } else {
                    let pr = prc::precision_recall(g, rf, &opts.prc)?;
                    out.extend([("precision", pr.precision), ("recall", pr.recall)]);
                }
            }
            Metric::Is => {
                let g = need(generated.features, "IS needs the generated set's features")?;
                let w = need(
                    fc_weight,
                    "IS needs the detector's classifier weight fc.weight (pass the state-dict --detector)",
                )?;
                let classes = w.len() / g.dim.max(1);
                let logits = inception_score::logits_unbiased(g, w, classes)?;
                let s = inception_score::inception_score(&logits, &opts.is)?;
                out.extend([("is", s.mean), ("is_std", s.std)]);
            }
        }
    }
    Ok(out)
}
