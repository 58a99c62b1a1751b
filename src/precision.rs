//! Precision policy of libtorch runs, as the official scripts have it.
//!
//! * TF32: PyTorch's defaults, under which EDM's generate.py runs, let cuDNN convolutions use
//!   TF32 tensor cores (`torch.backends.cudnn.allow_tf32 = True`) and keep cuBLAS matmuls in
//!   full f32 (`torch.backends.cuda.matmul.allow_tf32 = False`; libtorch's default too, which
//!   nothing here changes). `strict_f32` switches the convolutions to full f32 as well.
//! * fp16: a network whose configuration has `use_fp16=True` runs its inner model in f16 on
//!   CUDA exactly as EDMPrecond does, and in f32 on the CPU (the official code only uses f16
//!   on CUDA). `force_fp32` keeps it in f32 everywhere.
//!
//! Parity modes (`tiw verify`, `--latents`/`--noise` runs) use [`TchPrecision::STRICT`].
//! Both switches only matter on CUDA; CPU results are identical under every policy.

use tiw_models::backend::Ops;
use tiw_models::edm::precond::official_fp16;
use tiw_models::edm::EdmDenoiser;

/// How a libtorch run treats precision (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TchPrecision {
    /// Run `use_fp16=True` networks in f32 (`--force-fp32`).
    pub force_fp32: bool,
    /// No TF32 in cuDNN convolutions (`--strict-f32`).
    pub strict_f32: bool,
}

impl TchPrecision {
    /// PyTorch's / the official scripts' defaults: TF32 convolutions, `use_fp16` honoured.
    pub const OFFICIAL: TchPrecision = TchPrecision {
        force_fp32: false,
        strict_f32: false,
    };
    /// Plain f32 throughout (parity checks).
    pub const STRICT: TchPrecision = TchPrecision {
        force_fp32: true,
        strict_f32: true,
    };

    /// Sets the process-wide convolution switch ([`tiw_models::tch_ops::set_allow_tf32`]):
    /// TF32 allowed unless `strict_f32`. Call once before running networks on CUDA.
    pub fn apply_global(&self) {
        tiw_models::tch_ops::set_allow_tf32(!self.strict_f32);
    }

    /// Whether a network of `net`'s configuration runs in f16 on `device` under this policy.
    pub fn fp16_for<O: Ops>(&self, net: &EdmDenoiser<O>, device: tch::Device) -> bool {
        official_fp16(&net.cfg, device.is_cuda(), self.force_fp32)
    }

    /// Sets `net` to f16 or f32 per [`TchPrecision::fp16_for`]; returns whether it runs in f16.
    pub fn configure<O: Ops>(&self, net: &mut EdmDenoiser<O>, device: tch::Device) -> bool {
        let on = self.fp16_for(net, device);
        net.set_fp16(on);
        on
    }

    /// A short description for logs: `f32`, `f32 (TF32 convolutions)`, `fp16`, ….
    pub fn describe(&self, fp16: bool, device: tch::Device) -> String {
        let base = if fp16 { "fp16" } else { "f32" };
        if device.is_cuda() && !self.strict_f32 {
            format!("{base} (TF32 convolutions allowed)")
        } else {
            base.to_string()
        }
    }
}
