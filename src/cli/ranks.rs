//! The data-parallel options of `train`, `train-classifier`, `generate` and `fid`, and
//! joining the launcher's process group (torchrun, srun or `tiw launch`).

use std::time::Duration;

use anyhow::{bail, Result};
use tch::Device;
use tiw::device::DeviceSpec;
use tiw::dist::{BackendChoice, LaunchEnv, ProcessGroup};
use tiw::train::parallel::{Collective, Solo};

/// `--dist-backend`, `--dist-timeout`.
#[derive(Debug, Clone, clap::Args)]
pub struct DistArgs {
    /// Process-group backend when started by a launcher (torchrun, srun, `tiw launch`):
    /// auto = NCCL on CUDA, Gloo on the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub dist_backend: BackendChoice,
    /// Seconds a rank waits for the others (rendezvous and every collective) before it
    /// fails with an error (PyTorch's default: 30 minutes).
    #[arg(long, value_name = "SECS", default_value_t = 1800.0)]
    pub dist_timeout: f64,
}

/// This process among the launcher's ranks: its device and, on more than one rank, the
/// process group.
pub struct Ranks {
    /// The launcher's environment, if any.
    pub env: Option<LaunchEnv>,
    /// The process group (world size > 1).
    pub group: Option<ProcessGroup>,
    /// This rank's device (`--device cuda` means `cuda:LOCAL_RANK` under a launcher).
    pub device: Device,
}

impl DistArgs {
    /// Reads the launcher's environment, selects this rank's device and joins the group.
    pub fn join(&self, spec: DeviceSpec) -> Result<Ranks> {
        if !(self.dist_timeout.is_finite() && self.dist_timeout > 0.0) {
            bail!("--dist-timeout must be a positive number of seconds");
        }
        let env = LaunchEnv::from_env()?;
        // `--device cuda` (= cuda:0) means this rank's local GPU under a launcher
        let spec = match (spec, &env) {
            (DeviceSpec::Cuda(0), Some(e)) => DeviceSpec::Cuda(e.local_rank),
            (s, _) => s,
        };
        let device = tiw::device::select(spec)?;
        let timeout = Duration::from_secs_f64(self.dist_timeout);
        let group = match &env {
            Some(e) if e.world_size > 1 => Some(ProcessGroup::connect(
                e,
                self.dist_backend.resolve(device)?,
                device,
                timeout,
            )?),
            _ => None,
        };
        Ok(Ranks { env, group, device })
    }
}

impl Ranks {
    /// The group as the training loops see it ([`Solo`] on one rank).
    pub fn comm(&self) -> &dyn Collective {
        match &self.group {
            Some(g) => g,
            None => &Solo,
        }
    }

    /// This rank and the world size (0 of 1 without a launcher).
    pub fn rank_world(&self) -> (usize, usize) {
        match &self.env {
            Some(e) => (e.rank, e.world_size),
            None => (0, 1),
        }
    }
}
