//! What the training loops need from a data-parallel process group, and the few
//! operations they build from it (SPEC §5.1, EDM's DDP loop):
//!
//! * gradients summed over ranks once per optimizer step, after the last accumulation
//!   round (each rank scales its loss by `1 / global batch`, so the sum is the mean over
//!   the global batch — DDP's average of per-rank means);
//! * statistics (`Loss/loss` moments) summed over ranks before a tick is logged;
//! * at every snapshot, parameters and EMA compared with rank 0's (EDM's
//!   `check_ddp_consistency`): a mismatch stops the run;
//! * small agreements (all ranks see the same flag) for collective decisions.
//!
//! One process is [`Solo`], where all of these are identities.

use anyhow::{bail, Result};
use tch::Tensor;

/// A group of ranks that can combine tensors (implemented by [`crate::dist::ProcessGroup`]).
pub trait Collective {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// In-place sum over ranks of every tensor (same shapes and kinds on every rank).
    fn sum(&self, tensors: &[&Tensor]) -> Result<()>;
    /// In place: every rank gets `root`'s values.
    fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()>;
    /// Every rank's `values`, ordered by rank.
    fn gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>>;
}

/// One process: rank 0 of 1.
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn sum(&self, _tensors: &[&Tensor]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _tensors: &[&Tensor], _root: usize) -> Result<()> {
        Ok(())
    }
    fn gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(vec![values.to_vec()])
    }
}

impl Collective for crate::dist::ProcessGroup {
    fn rank(&self) -> usize {
        crate::dist::ProcessGroup::rank(self)
    }
    fn world_size(&self) -> usize {
        crate::dist::ProcessGroup::world_size(self)
    }
    fn sum(&self, tensors: &[&Tensor]) -> Result<()> {
        Ok(self.all_reduce_sum(tensors)?)
    }
    fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        Ok(crate::dist::ProcessGroup::broadcast(self, tensors, root)?)
    }
    fn gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(self.all_gather_f64(values)?)
    }
}

/// Sums the gradients of `params` over ranks (no-op on one rank). With `flat` — the buffer
/// every gradient is a view into ([`crate::dist::flat_gradients`]) — that is one in-place
/// collective. Otherwise every rank must have the same parameters with gradients (same
/// network, same loss); that is checked, so that ranks never issue different collectives.
pub fn sum_gradients(comm: &dyn Collective, params: &[Tensor], flat: Option<&Tensor>) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    if let Some(flat) = flat {
        return comm.sum(&[flat]);
    }
    let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
    let counts = comm.gather_f64(&[grads.len() as f64])?;
    if counts.iter().any(|c| c.first() != Some(&(grads.len() as f64))) {
        bail!(
            "rank {}: the ranks have gradients for different numbers of parameters ({:?})",
            comm.rank(),
            counts
                .iter()
                .map(|c| c.first().copied().unwrap_or(-1.0))
                .collect::<Vec<_>>()
        );
    }
    let refs: Vec<&Tensor> = grads.iter().collect();
    comm.sum(&refs)
}

/// Whether any rank says `flag` (a collective OR).
pub fn any_rank(comm: &dyn Collective, flag: bool) -> Result<bool> {
    let all = comm.gather_f64(&[if flag { 1.0 } else { 0.0 }])?;
    Ok(all.iter().any(|v| v.first().copied().unwrap_or(0.0) != 0.0))
}

/// EDM's `check_ddp_consistency`: every tensor equal to rank 0's (NaNs equal to NaNs).
/// `what` names the tensors in the error.
pub fn check_consistency(comm: &dyn Collective, named: &[(String, &Tensor)], what: &str) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let copies: Vec<Tensor> = named.iter().map(|(_, t)| t.detach().copy()).collect();
    let refs: Vec<&Tensor> = copies.iter().collect();
    comm.broadcast(&refs, 0)?;
    let mut bad = Vec::new();
    for ((name, t), other) in named.iter().zip(&copies) {
        let mine = t.detach().nan_to_num(0.0, None, None);
        let theirs = other.nan_to_num(0.0, None, None);
        let nan_mask_equal = t.isnan().equal(&other.isnan());
        if !nan_mask_equal || !mine.equal(&theirs) {
            bad.push(name.clone());
        }
    }
    if !bad.is_empty() {
        bail!(
            "rank {}: {what} differ from rank 0's ({} tensors, first {}); the ranks are out of step",
            comm.rank(),
            bad.len(),
            bad[0]
        );
    }
    Ok(())
}

/// Sums per-rank `(count, sum, sum of squares)` triples over ranks.
pub fn sum_moments(comm: &dyn Collective, moments: &[(f64, f64, f64)]) -> Result<Vec<(f64, f64, f64)>> {
    if comm.world_size() == 1 {
        return Ok(moments.to_vec());
    }
    let flat: Vec<f64> = moments.iter().flat_map(|&(a, b, c)| [a, b, c]).collect();
    let all = comm.gather_f64(&flat)?;
    let mut out = vec![(0.0, 0.0, 0.0); moments.len()];
    for rank in &all {
        if rank.len() != flat.len() {
            bail!("statistics of different lengths across ranks");
        }
        for (k, o) in out.iter_mut().enumerate() {
            o.0 += rank[3 * k];
            o.1 += rank[3 * k + 1];
            o.2 += rank[3 * k + 2];
        }
    }
    Ok(out)
}
