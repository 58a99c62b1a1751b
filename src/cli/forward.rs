//! `tiw forward`: run a network on inputs from an `.npz` and write its outputs, for parity
//! checks against PyTorch. The evaluation is [`tiw::forward::evaluate`].

use std::path::PathBuf;

use anyhow::Result;
use tch::{Kind, Tensor};
use tiw_models::tch_ops::TchTensor;

use tiw::device::DeviceSpec;
use tiw::forward::ForwardOptions;
use tiw::npz::{self, Array};
use tiw::precision::TchPrecision;
use tiw::runtime::{Backend, Runtime};

/// Arguments of `tiw forward`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// EDM network: snapshot .pkl, training-state .pt or .safetensors made by `tiw convert`.
    /// Inputs: `x` (N,C,H,W) f32, `sigma` (N,) or 0-d, optional `class_labels` (N,L) and
    /// `augment_labels` (N,9). Outputs: `D` (denoiser) and `F_x` (inner network).
    #[arg(long, conflicts_with = "extractor", required_unless_present = "extractor")]
    pub(crate) network: Option<PathBuf>,
    /// ADM feature extractor (.pt). Inputs `x`, `t`; outputs `features`, `fe_logits`, and with
    /// --discriminator also `dis_logits`, `dis_sigmoid`.
    #[arg(long)]
    pub(crate) extractor: Option<PathBuf>,
    /// Time-dependent discriminator (.pt) applied to the extractor's features.
    #[arg(long, requires = "extractor")]
    pub(crate) discriminator: Option<PathBuf>,
    /// Input arrays (.npz).
    #[arg(long)]
    pub(crate) inputs: PathBuf,
    /// Output arrays (.npz).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Runtime.
    #[arg(long, value_enum, default_value_t = Runtime::Tch)]
    pub(crate) runtime: Runtime,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceSpec,
    /// Evaluate at most this many samples at a time.
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    /// Extractor image resolution, if its layout is ambiguous from the weights.
    #[arg(long)]
    pub(crate) img_resolution: Option<usize>,
    /// Key of the discriminator's class condition in the inputs (int64 (N,) or one-hot (N,K)).
    #[arg(long)]
    pub(crate) condition_key: Option<String>,
    /// Run a network whose configuration has `use_fp16=True` in f32 (by default it runs in
    /// f16 on tch CUDA, as the official code does; on the CPU it is f32 either way).
    #[arg(long)]
    pub(crate) force_fp32: bool,
    /// Plain f32 convolutions on tch CUDA (by default cuDNN may use TF32, PyTorch's default;
    /// matmuls stay f32 either way).
    #[arg(long)]
    pub(crate) strict_f32: bool,
}

impl Args {
    /// The libtorch precision policy of these flags.
    pub(crate) fn precision(&self) -> TchPrecision {
        TchPrecision {
            force_fp32: self.force_fp32,
            strict_f32: self.strict_f32,
        }
    }
}

/// An npz array as a tch tensor (f32) on `dev`.
pub fn tensor(a: &Array, dev: tch::Device) -> Result<TchTensor> {
    let shape: Vec<i64> = if a.shape.is_empty() {
        vec![1]
    } else {
        a.shape.iter().map(|&d| d as i64).collect()
    };
    Ok(TchTensor(
        Tensor::f_from_slice(&a.to_f32())?
            .f_reshape(shape)?
            .f_to_device(dev)?,
    ))
}

/// Flattened f32 values of a tensor.
pub fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        &t.f_to_kind(Kind::Float)?
            .f_to_device(tch::Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?,
    )?)
}

/// One-hot `[N, classes]` from int labels (N,) or argmax of a (N,K) array, on `dev`.
pub fn condition(a: &Array, classes: usize, dev: tch::Device) -> Result<TchTensor> {
    let n = a.shape.first().copied().unwrap_or(0);
    let v = tiw::forward::one_hot(a, classes)?;
    Ok(TchTensor(
        Tensor::f_from_slice(&v)?
            .f_reshape([n as i64, classes as i64])?
            .f_to_device(dev)?,
    ))
}

/// Runs `tiw forward`.
pub fn run(a: Args) -> Result<()> {
    let inputs = npz::read(&a.inputs)?;
    let opts = ForwardOptions {
        network: a.network.clone(),
        extractor: a.extractor.clone(),
        discriminator: a.discriminator.clone(),
        backend: Backend::new(a.runtime, a.device),
        batch: a.batch,
        img_resolution: a.img_resolution,
        condition_key: a.condition_key.clone(),
        precision: a.precision(),
        source: a.inputs.clone(),
    };
    let (outputs, runtime_desc) = tiw::forward::evaluate(&opts, &inputs)?;
    npz::write_f32(&a.out, &outputs)?;
    eprintln!(
        "wrote {} ({}) with {runtime_desc}",
        a.out.display(),
        outputs
            .iter()
            .map(|(n, s, _)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
