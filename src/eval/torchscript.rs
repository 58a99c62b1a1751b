//! A TorchScript image classifier (`torch.jit.save`) behind [`OnnxGraph`], for
//! `tiw eval proportions --runtime torchscript`.
//!
//! TorchScript is code: libtorch compiles the module's `forward` from the file and runs it
//! (in its TorchScript interpreter, not Python), and its loader is not hardened against
//! hostile files. Only files you trust should be loaded this way; an ONNX export of the same
//! classifier runs no code from the file. The contract is the ONNX classifier's
//! ([`super::classifier`]): `forward(x [N, C, H, W] f32)` returns `[N, K]` logits or
//! probabilities, or a tuple/list whose first element is that tensor.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tch::IValue;

use crate::runtime::tch_rt::{to_named, to_tensor};
use crate::runtime::{NamedArray, OnnxGraph};

/// A loaded TorchScript module on one device, in eval mode.
pub struct TorchScriptGraph {
    module: tch::CModule,
    device: tch::Device,
}

impl TorchScriptGraph {
    /// Loads `path` onto `device`; an unreadable file, or one libtorch cannot load as
    /// TorchScript (a state dict, a pickle, a newer format, anything else), is an error
    /// naming it.
    pub fn load(path: &Path, device: tch::Device) -> Result<Self> {
        std::fs::metadata(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let mut module = tch::CModule::load_on_device(path, device).map_err(|e| {
            anyhow!(
                "cannot load {} as TorchScript: {} (note: a state dict or pickled model is not \
                 TorchScript; save the module with torch.jit.save(torch.jit.script(model)), or \
                 export the classifier to ONNX with torch.onnx.export)",
                path.display(),
                libtorch_reason(&e.to_string())
            )
        })?;
        module.set_eval();
        Ok(TorchScriptGraph { module, device })
    }
}

/// The first line of a libtorch error, without its "Internal torch error: " prefix, the
/// generic advice some messages append ("This is an internal miniz error. If you are seeing
/// this error, …") and its final full stop.
fn libtorch_reason(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("");
    let line = line.strip_prefix("Internal torch error: ").unwrap_or(line);
    let cut = [" This is an internal", " If you are seeing"]
        .iter()
        .filter_map(|m| line.find(m))
        .min()
        .unwrap_or(line.len());
    line[..cut].trim_end().trim_end_matches('.')
}

/// The first tensor of a module's return value (a tensor, or a tuple/list starting with one).
fn first_tensor(out: IValue) -> Result<tch::Tensor> {
    match out {
        IValue::Tensor(t) => Ok(t),
        IValue::Tuple(v) | IValue::GenericList(v) => match v.into_iter().next() {
            Some(IValue::Tensor(t)) => Ok(t),
            _ => bail!("the TorchScript classifier's forward returned a tuple/list without a tensor first"),
        },
        IValue::TensorList(mut v) if !v.is_empty() => Ok(v.swap_remove(0)),
        _ => bail!("the TorchScript classifier's forward returned no tensor"),
    }
}

impl OnnxGraph for TorchScriptGraph {
    fn input_names(&self) -> Vec<String> {
        vec!["x".to_string()]
    }

    fn run(&mut self, inputs: &[NamedArray]) -> Result<Vec<NamedArray>> {
        let [x] = inputs else {
            bail!("a TorchScript classifier takes one input, got {}", inputs.len());
        };
        let x = to_tensor(x, self.device)?.0;
        let out = tch::no_grad(|| self.module.forward_is(&[IValue::Tensor(x)]))
            .map_err(|e| anyhow!("the TorchScript classifier's forward failed: {e}"))?;
        Ok(vec![to_named("logits", &first_tensor(out)?)?])
    }

    fn describe(&self) -> String {
        format!("libtorch TorchScript on {:?}", self.device)
    }
}
