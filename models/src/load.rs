//! Loading networks straight from checkpoint files (`.pkl`, `.pt`, `.safetensors`): the
//! converters extract tensors + configuration in memory, the models take them.

use std::path::Path;

use tiw_converters::{Json, Selection, TensorStore};

use crate::adm::{EncoderConfig, EncoderUNet};
use crate::backend::Ops;
use crate::config::NetConfig;
use crate::edm::EdmDenoiser;
use crate::vb::Weights;
use crate::{ModelError, Result};

/// Tensors and configuration of a file.
pub fn read(path: &Path) -> Result<(TensorStore, Option<Json>)> {
    let ck = tiw_converters::open(path)?;
    let ex = ck.extract(&Selection::default())?;
    Ok((ex.store, ex.config))
}

/// Builds an EDM denoiser from a snapshot `.pkl`, a training state, or a `.safetensors`
/// written by `tiw convert` (its metadata holds the configuration).
pub fn edm_denoiser<O: Ops>(ops: &O, path: &Path) -> Result<EdmDenoiser<O>> {
    let (store, config) = read(path)?;
    let config = config.ok_or_else(|| {
        ModelError::Config(format!(
            "{}: no network configuration in this file (use an EDM snapshot .pkl or a .safetensors made by `tiw convert`)",
            path.display()
        ))
    })?;
    let cfg =
        NetConfig::from_json(&config).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    edm_denoiser_from(ops, &store, &cfg).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

/// Builds an EDM denoiser of configuration `cfg` from `store`; every tensor must be used.
pub fn edm_denoiser_from<O: Ops>(ops: &O, store: &TensorStore, cfg: &NetConfig) -> Result<EdmDenoiser<O>> {
    let w = Weights::from_store(ops, store)?;
    let net = EdmDenoiser::new(&w.root(), cfg)?;
    w.check_all_used()?;
    Ok(net)
}

/// A named network tensor: (state_dict name, parameter or buffer, handle).
pub type NamedTensor<T> = (String, crate::vb::TensorKind, T);

/// A denoiser with its named tensors.
pub type DenoiserWithTensors<O> = (EdmDenoiser<O>, Vec<NamedTensor<<O as Ops>::T>>);

/// Like [`edm_denoiser_from`], also returning every named tensor (parameter or buffer) in
/// state_dict order — the handles an optimiser updates in place.
pub fn edm_denoiser_with_tensors<O: Ops>(
    ops: &O,
    store: &TensorStore,
    cfg: &NetConfig,
) -> Result<DenoiserWithTensors<O>> {
    let w = Weights::from_store(ops, store)?;
    let net = EdmDenoiser::new(&w.root(), cfg)?;
    w.check_all_used()?;
    let named = w.named()?;
    Ok((net, named))
}

/// Builds an ADM encoder (feature extractor or discriminator) from a state_dict file,
/// inferring its layout from the tensor names and shapes.
pub fn encoder<O: Ops>(ops: &O, path: &Path, image_size: Option<usize>) -> Result<EncoderUNet<O>> {
    let (store, _) = read(path)?;
    encoder_from(ops, &store, image_size).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
}

/// [`encoder`] from tensors already read.
pub fn encoder_from<O: Ops>(
    ops: &O,
    store: &TensorStore,
    image_size: Option<usize>,
) -> Result<EncoderUNet<O>> {
    let cfg = EncoderConfig::infer(&|n| store.get(n).map(|e| e.shape.clone()), image_size)?;
    let w = Weights::from_store(ops, store)?;
    let net = EncoderUNet::new(&w.root(), &cfg)?;
    w.check_all_used()?;
    Ok(net)
}
