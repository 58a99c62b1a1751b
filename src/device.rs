//! `--device cpu|cuda[:N]` for the libtorch runtime.
//!
//! libtorch's CUDA hooks are registered only when `libtorch_cuda.so` is loaded, and the
//! first CUDA query caches its answer, so CUDA is requested by `dlopen`ing the library
//! before anything asks libtorch about CUDA. CUDA is never used unless asked for, and a
//! request that cannot be served fails with the loader's message instead of falling back
//! to the CPU.

use anyhow::{bail, Result};
use tch::Device;

/// A parsed `--device` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(format!("device {s:?}: expected cpu, cuda or cuda:N")),
            },
        }
    }
}

/// Loads `libtorch_cuda.so` (once) so that libtorch registers its CUDA backend; returns the
/// loader's error message on failure.
pub fn load_cuda_backend() -> std::result::Result<(), String> {
    static RESULT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    RESULT
        .get_or_init(|| {
            let name = std::ffi::CString::new("libtorch_cuda.so").unwrap();
            // SAFETY: dlopen/dlerror are called with a valid C string; the handle is kept
            // for the life of the process (libtorch_cuda registers global hooks).
            unsafe {
                let h = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
                if h.is_null() {
                    let e = libc::dlerror();
                    let msg = if e.is_null() {
                        "unknown dlopen error".to_string()
                    } else {
                        std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                    };
                    return Err(msg);
                }
            }
            Ok(())
        })
        .clone()
}

/// The tch device for a spec, failing loudly when CUDA cannot be used.
pub fn select(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            if let Err(e) = load_cuda_backend() {
                bail!(
                    "--device cuda:{n}: cannot load libtorch's CUDA backend (libtorch_cuda.so): {e}. \
                     Install the GPU flavour (`TIW_GPU=1 make setup`) on a machine with an NVIDIA driver."
                );
            }
            let count = tch::Cuda::device_count() as usize;
            if count == 0 {
                bail!("--device cuda:{n}: libtorch's CUDA backend loaded but no CUDA device is visible (driver missing or CUDA_VISIBLE_DEVICES empty)");
            }
            if n >= count {
                bail!("--device cuda:{n}: only {count} CUDA device(s) visible");
            }
            Ok(Device::Cuda(n))
        }
    }
}
