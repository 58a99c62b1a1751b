//! Fresh network weights for training from scratch.

use tiw_models::tch_ops::TchOps;
use tiw_models::vb::Weights;

/// Weights for a network trained from scratch, deterministic from `seed`.
pub fn fresh_weights(ops: &TchOps, seed: u64) -> Weights<'_, TchOps> {
    Weights::create(ops, seed)
}
