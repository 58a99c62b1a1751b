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
//! matrices of more than 25 rows; the products `aᵀb` in f32 with [`ProductDtype::F32`])
//! over tiles of at most `tile × tile` pairs, so memory stays at `O(tile² + N·k)` beyond the
//! features; the `k + 1` smallest distances per row are kept as the tiles go by. The radii
//! use each unordered pair once (tiles on and above the diagonal), the cross pairs once:
//! about `(|G|² + |R|²)/2 + |G||R|` distances.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::{check_pair, Features, ProductDtype};

/// Precision/recall options.
#[derive(Debug, Clone, PartialEq)]
pub struct PrcOptions {
    /// Neighbourhood size `k` (`prc_neighborhood`, 3).
    pub k: usize,
    /// Rows (and columns) per distance tile.
    pub tile: usize,
    /// Element type of the products `aᵀb` (f64 by default).
    pub dtype: ProductDtype,
}

impl Default for PrcOptions {
    fn default() -> Self {
        PrcOptions {
            k: 3,
            tile: 4096,
            dtype: ProductDtype::F64,
        }
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

/// A set's matrix (in the product element type) with its f64 squared row norms.
struct Set {
    x: Tensor,
    sq: Tensor,
    n: i64,
}

impl Set {
    fn new(f: &Features, dtype: ProductDtype) -> Self {
        let x = f.to_tensor(dtype);
        let squares = match dtype {
            ProductDtype::F64 => x.square(),
            ProductDtype::F32 => f.to_tensor_f64().square(),
        };
        let sq = squares.sum_dim_intlist(1, false, Kind::Double);
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
    let d2 = xa.matmul(&xb.tr()).to_kind(Kind::Double) * -2.0
        + a.sq.narrow(0, ai, al).unsqueeze(1)
        + b.sq.narrow(0, bj, bl).unsqueeze(0);
    d2.clamp_min(0.0).sqrt()
}

/// Keeps in `best` the `kk` smallest entries of each row of `best` and `d` together.
fn keep_smallest(best: &mut Option<Tensor>, d: Tensor, kk: i64) {
    let cand = match best.take() {
        Some(b) => Tensor::cat(&[b, d], 1),
        None => d,
    };
    let keep = kk.min(cand.size()[1]);
    *best = Some(cand.topk(keep, 1, false, true).0);
}

/// `r_S(s)` for every row: the `(k+1)`-th smallest distance to the rows of `s` (itself
/// included). The distances are symmetric, so only the tiles on and above the diagonal are
/// computed; a tile above it serves its row tile as it is and its column tile transposed.
fn radii(s: &Set, k: usize, tile: i64) -> Tensor {
    let kk = (k + 1) as i64;
    let tiles: Vec<(i64, i64)> = s.tiles(tile).collect();
    let mut best: Vec<Option<Tensor>> = tiles.iter().map(|_| None).collect();
    for (a, &rows) in tiles.iter().enumerate() {
        for (b, &cols) in tiles.iter().enumerate().skip(a) {
            let d = dist(s, rows, s, cols);
            if b > a {
                keep_smallest(&mut best[b], d.tr(), kk);
            }
            keep_smallest(&mut best[a], d, kk);
        }
    }
    let per_tile: Vec<Tensor> = best
        .into_iter()
        .map(|b| b.expect("every tile has a diagonal block").select(1, k as i64))
        .collect();
    Tensor::cat(&per_tile, 0)
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
    let (g, r) = (Set::new(generated, opts.dtype), Set::new(reference, opts.dtype));
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
