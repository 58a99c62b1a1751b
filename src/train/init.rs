//! Fresh network weights for training from scratch.

use tiw_models::tch_ops::TchOps;
use tiw_models::vb::Weights;

/// Weights for a network trained from scratch: the official initialisers (EDM's
/// `weight_init` modes per layer, PyTorch defaults for ADM layers), drawn from libtorch's CPU
/// generator seeded with `seed` in construction order ([`Weights::init`]).
pub fn fresh_weights(ops: &TchOps, seed: u64) -> Weights<'_, TchOps> {
    Weights::init(ops, seed)
}
