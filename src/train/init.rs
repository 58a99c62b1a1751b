//! Fresh network weights for training from scratch.

use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Tensor};
use tiw_models::adm::{EncoderConfig, EncoderUNet};
use tiw_models::tch_ops::TchOps;
use tiw_models::vb::Weights;

/// Weights for a network trained from scratch: the official initialisers (EDM's
/// `weight_init` modes per layer, PyTorch defaults for ADM layers), drawn from libtorch's CPU
/// generator seeded with `seed` in construction order ([`Weights::init`]).
pub fn fresh_weights(ops: &TchOps, seed: u64) -> Weights<'_, TchOps> {
    Weights::init(ops, seed)
}

/// Writes a freshly initialised ADM encoder (feature extractor or discriminator; PyTorch's
/// default initialisation, seeded) as a `.pt` state_dict.
pub fn save_fresh_encoder(cfg: &EncoderConfig, seed: u64, path: &Path) -> Result<()> {
    let ops = TchOps::new(Device::Cpu);
    let w = Weights::init(&ops, seed);
    let _net = EncoderUNet::new(&w.root(), cfg)?;
    let named: Vec<(String, Tensor)> = w.named()?.into_iter().map(|(n, _, t)| (n, t.0)).collect();
    let store = super::classifier::state_store(&named)?;
    tiw_converters::pt_write::write(&store, path, &|_| {})
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
