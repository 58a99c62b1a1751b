//! Memory guard of `tiw train`: an estimate of one step's peak memory, checked against what
//! the device has before the first step, so that a configuration that cannot fit stops
//! with a message instead of being killed by the kernel minutes later.
//!
//! The estimate (bytes, f32 training):
//!
//! * **parameters and optimiser**: `4·P` each for the parameters, their gradients, Adam's
//!   two moments and the EMA copy (`20·P`), plus `4·F` for frozen TIW networks;
//! * **activations saved for backward**: `ACT_PER_ELEMENT · batch_gpu · Σ_levels
//!   (2·num_blocks + 1) · model_channels · mult_l · (res / 2^l)²` bytes — the feature maps
//!   of the U-Net's encoder and decoder blocks at every level; `ACT_PER_ELEMENT` (bytes per
//!   feature-map element, all the tensors a block keeps for backward) is calibrated on the
//!   measured peak RSS (VmHWM) of CPU runs (see `tests/cluster.rs`,
//!   `memory_estimate_tracks_measured_peaks`);
//! * **runtime**: the process before the network is built (libtorch, the dataset in
//!   memory; with TIW, the frozen networks loaded later are not counted), measured as the
//!   resident size then, plus `STEP_OVERHEAD`.
//!
//! Calibration (CPU, debug build, f32, EDM loss, no augmentation; peak = VmHWM at the end):
//! activations measured ≈ 1.4 × 40 bytes per element, hence 56, and a 60 MB step overhead.
//! The same formula is used for DhariwalUNet (ADM) networks, uncalibrated there; attention
//! maps (`res⁴` per head) are not counted, which matters only at large attention
//! resolutions.
//!
//! The limit: on the CPU the smaller of `MemAvailable` (/proc/meminfo) plus what this
//! process already holds, and the cgroup's `memory.max`; on CUDA the device's free memory
//! is not reachable through tch, so the check is skipped with a note. `--max-memory GB`
//! replaces the detected limit.

use tch::Device;
use tiw_models::config::{Arch, NetConfig};

/// Bytes kept for backward per element of a block's feature map (calibrated; see the
/// module docs).
pub const ACT_PER_ELEMENT: f64 = 56.0;

/// Working memory libtorch adds once training starts (allocator caches, thread pools;
/// calibrated like [`ACT_PER_ELEMENT`]).
pub const STEP_OVERHEAD: f64 = 60e6;

/// One step's estimated peak memory, by part (bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// Parameters, gradients, Adam moments, EMA, frozen networks.
    pub weights: f64,
    /// Activations saved for backward in one accumulation round.
    pub activations: f64,
    /// The process before training (runtime, dataset).
    pub runtime: f64,
}

impl MemoryEstimate {
    /// The sum.
    pub fn total(&self) -> f64 {
        self.weights + self.activations + self.runtime
    }
}

/// Feature-map elements of one image across the U-Net's blocks (see the module docs).
pub fn feature_elements(cfg: &NetConfig) -> f64 {
    let (res, mc, mult, nb) = match &cfg.arch {
        Arch::Song(c) => (c.img_resolution, c.model_channels, &c.channel_mult, c.num_blocks),
        Arch::Dhariwal(c) => (c.img_resolution, c.model_channels, &c.channel_mult, c.num_blocks),
    };
    mult.iter()
        .enumerate()
        .map(|(l, m)| {
            let r = (res >> l).max(1) as f64;
            (2 * nb + 1) as f64 * (mc * m) as f64 * r * r
        })
        .sum()
}

/// The estimate for `params` trained parameters, `frozen` frozen ones, `batch_gpu` images
/// per round and `runtime` bytes resident before the networks were built.
pub fn estimate(cfg: &NetConfig, params: u64, frozen: u64, batch_gpu: usize, runtime: f64) -> MemoryEstimate {
    MemoryEstimate {
        weights: 20.0 * params as f64 + 4.0 * frozen as f64,
        activations: ACT_PER_ELEMENT * batch_gpu as f64 * feature_elements(cfg),
        runtime: runtime + STEP_OVERHEAD,
    }
}

/// A field of /proc/meminfo in bytes.
fn meminfo(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? * 1024.0)
}

/// The cgroup (v2) memory limit of this process, if one is set.
fn cgroup_max() -> Option<f64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let v = std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", rel.trim())).ok()?;
    v.trim().parse::<f64>().ok()
}

/// What this process may use on `device` (bytes) and where that number comes from;
/// `None` where it cannot be found (CUDA through tch).
pub fn device_limit(device: Device, resident: f64) -> Option<(f64, String)> {
    if device != Device::Cpu {
        return None;
    }
    let avail = meminfo("MemAvailable").map(|a| (a + resident, "MemAvailable + this process".to_string()));
    let cg = cgroup_max().map(|c| (c, "cgroup memory.max".to_string()));
    match (avail, cg) {
        (Some(a), Some(c)) => Some(if c.0 < a.0 { c } else { a }),
        (a, c) => a.or(c),
    }
}

/// This process's peak resident size so far (VmHWM, bytes).
pub fn peak_rss() -> Option<f64> {
    super::stats::proc_status_bytes("VmHWM")
}

/// This process's resident size now (VmRSS, bytes).
pub fn rss() -> f64 {
    super::stats::proc_status_bytes("VmRSS").unwrap_or(0.0)
}

/// GB with two decimals.
pub fn gb(bytes: f64) -> String {
    format!("{:.2} GB", bytes / 1e9)
}
