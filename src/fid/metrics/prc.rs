//! Improved precision and recall (Kynkäänniemi et al. 2019) as torch-fidelity 0.4.0
//! computes them (`metric_prc`, generated = its input 1, reference = input 2).
//!
//! With `d(a, b) = ‖a − b‖₂` and `r_S(s)` the distance from `s ∈ S` to its `k`-th nearest
//! neighbour in `S` (the `(k+1)`-th smallest of `d(s, ·)` over `S`, which includes `s`
//! itself; torch-fidelity's `kthvalue(k + 1)`, `k = 3` by default), the manifold of `S` is
//! the union of the balls `B(s, r_S(s))`, and
//!
//! * `precision = #{g ∈ G : ∃ r ∈ R, d(g, r) ≤ r_R(r)} / |G|` (generated inside the
//!   reference manifold),
//! * `recall = #{r ∈ R : ∃ g ∈ G, d(r, g) ≤ r_G(g)} / |R|` (reference inside the generated
//!   manifold).
//!
//! Distances are computed in f64 as `√max(‖a‖² + ‖b‖² − 2aᵀb, 0)` (torch's `cdist` for
//! matrices of more than 25 rows) over tiles of at most `tile × tile` pairs, so memory stays
//! at `O(tile² + N·k)` beyond the features; the `k + 1` smallest distances per row are kept
//! as the tiles go by. Every pair distance is computed once for the radii of each set and
//! once for the cross pairs (`|G|² + |R|² + |G||R|` distances).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::{check_pair, Features};

/// Precision/recall options.
#[derive(Debug, Clone, PartialEq)]
pub struct PrcOptions {
    /// Neighbourhood size `k` (`prc_neighborhood`, 3).
    pub k: usize,
    /// Rows (and columns) per distance tile.
    pub tile: usize,
}

impl Default for PrcOptions {
    fn default() -> Self {
        PrcOptions { k: 3, tile: 4096 }
    }
}

/// Precision and recall.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    /// Fraction of generated vectors inside the reference manifold.
    pub precision: f64,
    /// Fraction of reference vectors inside the generated manifold.
    pub recall: f64,
}

/// A set's f64 matrix with its squared row norms.
struct Set {
    x: Tensor,
    sq: Tensor,
    n: i64,
}

impl Set {
    fn new(f: &Features) -> Self {
        let x = f.to_tensor_f64();
        let sq = x.square().sum_dim_intlist(1, false, Kind::Double);
        Set {
            n: f.len() as i64,
            x,
            sq,
        }
    }

    /// Row tiles `(start, len)`.
    fn tiles(&self, tile: i64) -> impl Iterator<Item = (i64, i64)> {
        let n = self.n;
        (0..n).step_by(tile as usize).map(move |s| (s, tile.min(n - s)))
    }
}

/// Distances `[ai.len, bj.len]` between rows `ai` of `a` and rows `bj` of `b`.
fn dist(a: &Set, (ai, al): (i64, i64), b: &Set, (bj, bl): (i64, i64)) -> Tensor {
    let xa = a.x.narrow(0, ai, al);
    let xb = b.x.narrow(0, bj, bl);
    let d2 = xa.matmul(&xb.tr()) * -2.0
        + a.sq.narrow(0, ai, al).unsqueeze(1)
        + b.sq.narrow(0, bj, bl).unsqueeze(0);
    d2.clamp_min(0.0).sqrt()
}

/// `r_S(s)` for every row: the `(k+1)`-th smallest distance to the rows of `s` (itself included).
fn radii(s: &Set, k: usize, tile: i64) -> Tensor {
    let kk = (k + 1) as i64;
    let mut out = Vec::new();
    for rows in s.tiles(tile) {
        let mut best: Option<Tensor> = None;
        for cols in s.tiles(tile) {
            let d = dist(s, rows, s, cols);
            let cand = match &best {
                Some(b) => Tensor::cat(&[b, &d], 1),
                None => d,
            };
            let keep = kk.min(cand.size()[1]);
            best = Some(cand.topk(keep, 1, false, true).0);
        }
        out.push(best.expect("at least one tile").select(1, k as i64));
    }
    Tensor::cat(&out, 0)
}

/// Precision and recall of `generated` against `reference` (see the module docs). Each set
/// needs more than `k` vectors.
pub fn precision_recall(
    generated: &Features,
    reference: &Features,
    opts: &PrcOptions,
) -> Result<PrecisionRecall> {
    if opts.k == 0 {
        bail!("precision/recall: k (--prc-k) must be at least 1");
    }
    check_pair(generated, reference, opts.k + 1, "precision/recall")?;
    let tile = opts.tile.max(1) as i64;
    let _guard = tch::no_grad_guard();
    let (g, r) = (Set::new(generated), Set::new(reference));
    let (rad_g, rad_r) = (radii(&g, opts.k, tile), radii(&r, opts.k, tile));
    let prec_hit = Tensor::zeros([g.n], (Kind::Bool, tch::Device::Cpu));
    let rec_hit = Tensor::zeros([r.n], (Kind::Bool, tch::Device::Cpu));
    for gi in g.tiles(tile) {
        for rj in r.tiles(tile) {
            let d = dist(&g, gi, &r, rj);
            let in_ref = d
                .le_tensor(&rad_r.narrow(0, rj.0, rj.1).unsqueeze(0))
                .any_dim(1, false);
            let in_gen = d
                .le_tensor(&rad_g.narrow(0, gi.0, gi.1).unsqueeze(1))
                .any_dim(0, false);
            let mut p = prec_hit.narrow(0, gi.0, gi.1);
            let _ = p.logical_or_(&in_ref);
            let mut q = rec_hit.narrow(0, rj.0, rj.1);
            let _ = q.logical_or_(&in_gen);
        }
    }
    let frac = |t: &Tensor, n: i64| t.sum(Kind::Int64).int64_value(&[]) as f64 / n as f64;
    Ok(PrecisionRecall {
        precision: frac(&prec_hit, g.n),
        recall: frac(&rec_hit, r.n),
    })
}
