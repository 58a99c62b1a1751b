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
//! (`cudaMemGetInfo` of the CUDA runtime libtorch already loaded, see [`cuda_mem_info`]),
//! compared with what the job still has to allocate there (training: gradients, Adam moments
//! and activations; sampling/FID: one batch). A CUDA device whose free memory cannot be
//! queried is an error that names the cause and `--max-memory`. `--max-memory GB` replaces
//! the detected limit.
//!
//! # Sampling and FID (`tiw generate`, `tiw fid`)
//!
//! These jobs run the same batch over and over, so the check runs once, after the networks
//! are loaded: the process's resident size then (runtime, weights, the runtime's session)
//! plus what one batch adds ([`sampling_job`], [`fid_job`]); the estimate of the peak is the
//! larger of that sum and the peak so far (VmHWM: loading may have peaked higher). One
//! batch adds, in bytes:
//!
//! * **network activations** (sampling): `infer_bytes(runtime) · batch ·
//!   (feature_elements + attention elements)` — the U-Net's feature maps as above, the
//!   attention weights `heads·T²` of its attention blocks where the runtime materialises
//!   them (ONNX graphs; libtorch on the CPU runs fused attention), halved for f16 networks
//!   on CUDA;
//! * **guidance** (DG): the extractor's and discriminator's feature maps (and attention
//!   weights where materialised) kept for the input gradient, `GUIDE_ACT_PER_ELEMENT` bytes
//!   each;
//! * **sampler buffers**: `SAMPLER_F64_VECTORS` f64 copies of the batch (x, x̂, D, d, d′…);
//! * **FID**: `fid_bytes_per_image(runtime) · batch` for Inception-v3 at 299×299, plus the
//!   image buffers in flight (`2·workers + 1` prepared batches of 3×299×299 f32).
//!
//! The coefficients are calibrated like the training ones, on VmHWM of CPU runs
//! (`tests/cluster.rs`, `sampling_and_fid_estimates_track_measured_peaks`; table in
//! docs/BENCHMARKS.md, "Memory guard").

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Device;
use tiw_models::adm::EncoderConfig;
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

/// Attention-weight elements (`heads · T²`, `T` = pixels) of one image across the U-Net's
/// attention blocks: DDPM++/NCSN++ use one head, ADM one per 64 channels; the encoder has
/// `num_blocks` blocks per level, the decoder `num_blocks + 1`, ADM also one in the middle.
pub fn attention_elements(cfg: &NetConfig) -> f64 {
    let (res, mc, mult, nb, attn, adm) = match &cfg.arch {
        Arch::Song(c) => (
            c.img_resolution,
            c.model_channels,
            &c.channel_mult,
            c.num_blocks,
            &c.attn_resolutions,
            false,
        ),
        Arch::Dhariwal(c) => (
            c.img_resolution,
            c.model_channels,
            &c.channel_mult,
            c.num_blocks,
            &c.attn_resolutions,
            true,
        ),
    };
    let mut total = 0.0;
    for (l, m) in mult.iter().enumerate() {
        let r = (res >> l).max(1);
        if attn.contains(&r) {
            let heads = if adm { (mc * m / 64).max(1) } else { 1 } as f64;
            let t = (r * r) as f64;
            total += (2 * nb + 1) as f64 * heads * t * t;
        }
    }
    if adm {
        let l = mult.len().saturating_sub(1);
        let r = (res >> l).max(1);
        let heads = (mc * mult.last().copied().unwrap_or(1) / 64).max(1) as f64;
        total += heads * ((r * r) as f64).powi(2);
    }
    total
}

/// Feature-map and attention-weight elements of one image through an ADM encoder (feature
/// extractor or discriminator): the input convolution, `num_res_blocks` blocks per level (an
/// attention block after each where `ds` has attention), a downsampling block between
/// levels, the middle ResBlock–attention–ResBlock.
pub fn encoder_elements(cfg: &EncoderConfig) -> (f64, f64) {
    let (mut feats, mut attn) = (0.0, 0.0);
    let mut ds = 1usize;
    let first = cfg.model_channels * cfg.channel_mult.first().copied().unwrap_or(1);
    let px = |ds: usize| ((cfg.image_size / ds).max(1).pow(2)) as f64;
    feats += (first as f64) * px(1);
    let mut ch = first;
    for (l, m) in cfg.channel_mult.iter().enumerate() {
        ch = cfg.model_channels * m;
        let has_attn = cfg.attention_ds.contains(&ds);
        let heads = (ch / cfg.num_head_channels.max(1)).max(1) as f64;
        for _ in 0..cfg.num_res_blocks {
            feats += ch as f64 * px(ds) * if has_attn { 2.0 } else { 1.0 };
            if has_attn {
                attn += heads * px(ds) * px(ds);
            }
        }
        if l + 1 < cfg.channel_mult.len() {
            ds *= 2;
            feats += ch as f64 * px(ds);
        }
    }
    let heads = (ch / cfg.num_head_channels.max(1)).max(1) as f64;
    feats += 3.0 * ch as f64 * px(ds);
    attn += heads * px(ds) * px(ds);
    (feats, attn)
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

/// What one training step still needs on `device`: on the CPU the whole estimate (the
/// process's peak), on CUDA the gradients, Adam moments and activations (parameters and
/// EMA are on the device when the check runs, and the host's runtime is not there).
pub fn step_need(est: &MemoryEstimate, params: u64, device: Device) -> f64 {
    match device {
        Device::Cuda(_) => est.activations + 12.0 * params as f64,
        _ => est.total(),
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

/// What this process may use on the CPU (bytes) and where that number comes from: the
/// smaller of `MemAvailable` + `resident` and the cgroup's `memory.max`.
pub fn cpu_limit(resident: f64) -> Option<(f64, String)> {
    let avail = meminfo("MemAvailable").map(|a| (a + resident, "MemAvailable + this process".to_string()));
    let cg = cgroup_max().map(|c| (c, "cgroup memory.max".to_string()));
    match (avail, cg) {
        (Some(a), Some(c)) => Some(if c.0 < a.0 { c } else { a }),
        (a, c) => a.or(c),
    }
}

/// What a job may use on `device` (bytes) and where that number comes from. CPU: see
/// [`cpu_limit`] (`None` without /proc); CUDA: the device's free memory now, or an error
/// saying why it cannot be queried (the caller's message then points at `--max-memory`).
pub fn device_limit(device: Device, resident: f64) -> Result<Option<(f64, String)>> {
    match device {
        Device::Cuda(n) => {
            let (free, total) = cuda_mem_info(n).map_err(anyhow::Error::msg)?;
            Ok(Some((
                free as f64,
                format!("free on cuda:{n} (cudaMemGetInfo; {} in all)", gb(total as f64)),
            )))
        }
        _ => Ok(cpu_limit(resident)),
    }
}

/// Shared-library names of the CUDA runtime, newest first (libtorch 2.13 wheels: 13).
const CUDART_NAMES: [&str; 4] = [
    "libcudart.so.13",
    "libcudart.so.12",
    "libcudart.so.11.0",
    "libcudart.so",
];

/// `(free, total)` bytes of CUDA device `device` from `cudaMemGetInfo`, through the CUDA
/// runtime library already loaded in this process (libtorch needs it; else loaded here):
/// the current device is switched to `device` for the query and restored. Errors say which
/// step failed (no runtime library, missing symbol, the runtime's error string).
pub fn cuda_mem_info(device: usize) -> std::result::Result<(u64, u64), String> {
    type GetDevice = unsafe extern "C" fn(*mut i32) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    type ErrorString = unsafe extern "C" fn(i32) -> *const libc::c_char;
    let mut handle = std::ptr::null_mut();
    for name in CUDART_NAMES {
        let c = std::ffi::CString::new(name).expect("no NUL in library names");
        // SAFETY: dlopen with a valid C string; RTLD_NOLOAD only finds an already loaded
        // library, the second call loads it (kept for the life of the process).
        unsafe {
            handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if handle.is_null() {
                handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            }
        }
        if !handle.is_null() {
            break;
        }
    }
    if handle.is_null() {
        return Err(format!(
            "cannot query the free memory of cuda:{device}: no CUDA runtime library ({}) can be loaded",
            CUDART_NAMES.join(", ")
        ));
    }
    let sym = |name: &str| -> std::result::Result<*mut libc::c_void, String> {
        let c = std::ffi::CString::new(name).expect("no NUL in symbol names");
        // SAFETY: dlsym on a live handle with a valid C string.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            Err(format!(
                "cannot query the free memory of cuda:{device}: the CUDA runtime has no {name}"
            ))
        } else {
            Ok(p)
        }
    };
    // SAFETY: the symbols are the CUDA runtime's C functions with these signatures
    // (cuda_runtime_api.h); every out-pointer points at a live local.
    unsafe {
        let get: GetDevice = std::mem::transmute::<*mut libc::c_void, GetDevice>(sym("cudaGetDevice")?);
        let set: SetDevice = std::mem::transmute::<*mut libc::c_void, SetDevice>(sym("cudaSetDevice")?);
        let info: MemGetInfo = std::mem::transmute::<*mut libc::c_void, MemGetInfo>(sym("cudaMemGetInfo")?);
        let estr: ErrorString =
            std::mem::transmute::<*mut libc::c_void, ErrorString>(sym("cudaGetErrorString")?);
        let describe = |code: i32| {
            let p = estr(code);
            let s = if p.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            format!("CUDA error {code}: {s}")
        };
        let mut current = 0i32;
        let code = get(&mut current);
        if code != 0 {
            return Err(format!(
                "cannot query the free memory of cuda:{device}: cudaGetDevice failed ({})",
                describe(code)
            ));
        }
        let code = set(device as i32);
        if code != 0 {
            return Err(format!(
                "cannot query the free memory of cuda:{device}: cudaSetDevice failed ({})",
                describe(code)
            ));
        }
        let (mut free, mut total) = (0usize, 0usize);
        let code = info(&mut free, &mut total);
        set(current);
        if code != 0 {
            return Err(format!(
                "cannot query the free memory of cuda:{device}: cudaMemGetInfo failed ({})",
                describe(code)
            ));
        }
        Ok((free as u64, total as u64))
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

// ---------------------------------------------------------------------------------------
// Sampling and FID

/// Bytes per feature-map element (f32) that one inference batch of a denoiser holds at its
/// peak, by runtime (calibrated; see the module docs).
pub fn infer_bytes_per_element(engine: Engine) -> f64 {
    match engine {
        Engine::Ort => INFER_ORT,
        Engine::Tract => INFER_TRACT,
        Engine::Tch => INFER_TCH,
    }
}

/// ONNX Runtime (CPU EP): bytes per feature-map element of one inference batch.
pub const INFER_ORT: f64 = 7.2;
/// tract: bytes per feature-map element of one inference batch.
pub const INFER_TRACT: f64 = 8.0;
/// libtorch, no_grad: bytes per feature-map element of one inference batch.
pub const INFER_TCH: f64 = 8.5;
/// Bytes per attention-weight element where the runtime materialises them (f32 scores and
/// their softmax).
pub const ATTN_BYTES: f64 = 9.6;
/// Bytes per feature element of the guidance networks kept for DG's input gradient.
pub const GUIDE_ACT_PER_ELEMENT: f64 = 33.0;
/// f64 copies of the batch the sampler holds (x, x̂, D, d, d′, x_next, noise, labels…).
pub const SAMPLER_F64_VECTORS: f64 = 20.0;
/// Inception-v3 (FID) at 299×299, bytes per image of one inference batch, ONNX Runtime.
pub const FID_ORT_PER_IMAGE: f64 = 19e6;
/// Inception-v3 (FID) at 299×299, bytes per image of one inference batch, libtorch.
pub const FID_TCH_PER_IMAGE: f64 = 19e6;
/// One prepared FID input image (3×299×299 f32).
pub const FID_INPUT_BYTES: f64 = 3.0 * 299.0 * 299.0 * 4.0;
/// What libtorch adds once the first inference batch runs (allocator caches, thread pools;
/// calibrated): sampling.
pub const TCH_INFER_OVERHEAD: f64 = 75e6;
/// What the runtime adds once the first FID batch runs: ONNX Runtime, libtorch.
pub const FID_OVERHEAD: [f64; 2] = [30e6, 130e6];

/// The runtime a sampling or FID job runs its network on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// ONNX Runtime.
    Ort,
    /// tract.
    Tract,
    /// libtorch.
    Tch,
}

/// A batch job's memory: the process now plus what one batch adds.
#[derive(Debug, Clone)]
pub struct JobEstimate {
    /// What runs (`sampling`, `FID`).
    pub what: String,
    /// Images per batch (the largest batch of the job).
    pub batch: usize,
    /// Resident size now (VmRSS), networks loaded.
    pub resident: f64,
    /// Peak resident size so far (VmHWM).
    pub peak_so_far: f64,
    /// What one batch adds, by part (name, bytes, whether it grows with the batch size).
    pub parts: Vec<(String, f64, bool)>,
    /// How the batch size is set on the command line (`--batch`).
    pub batch_flag: String,
}

impl JobEstimate {
    /// Bytes one batch adds.
    pub fn per_batch(&self) -> f64 {
        self.parts.iter().map(|p| p.1).sum()
    }
    /// Bytes each image of a batch adds (the parts that grow with the batch).
    pub fn per_image(&self) -> f64 {
        self.parts.iter().filter(|p| p.2).map(|p| p.1).sum::<f64>() / self.batch.max(1) as f64
    }
    /// The estimated peak of the process: the larger of the peak so far and resident + one
    /// batch.
    pub fn total(&self) -> f64 {
        self.peak_so_far.max(self.resident + self.per_batch())
    }
    fn parts_text(&self) -> String {
        self.parts
            .iter()
            .map(|(n, b, _)| format!("{n} {}", gb(*b)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The configuration of a denoiser file: an exported `.onnx` (its `tiw.config` metadata) or
/// a checkpoint (`.pkl`, `.pt`, `.safetensors`). `None` when the file carries none (a graph
/// exported without the network configuration).
pub fn network_config(path: &Path) -> Result<Option<NetConfig>> {
    let is_onnx = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let json = if is_onnx {
        let (_, model) = crate::onnx_export::read_model(path)?;
        let meta = model
            .metadata_props
            .iter()
            .find(|p| p.key == "tiw.config")
            .map(|p| p.value.clone());
        match meta.map(|m| tiw_converters::Json::parse(&m)) {
            Some(Ok(j)) => j.get("network").cloned(),
            _ => None,
        }
    } else {
        tiw_models::load::read(path)?.1
    };
    match json {
        Some(j) => {
            Ok(Some(NetConfig::from_json(&j).with_context(|| {
                format!("{}: network configuration", path.display())
            })?))
        }
        None => Ok(None),
    }
}

/// The estimate for sampling batches of `batch` images with the denoiser `cfg` on `engine`
/// (`fp16`: the network runs in f16), guided by the ADM `guide` pair (extractor,
/// discriminator) when given, on `device`.
pub fn sampling_job(
    cfg: &NetConfig,
    engine: Engine,
    fp16: bool,
    guide: Option<(&EncoderConfig, &EncoderConfig)>,
    batch: usize,
    device: Device,
) -> JobEstimate {
    let b = batch as f64;
    let cuda = matches!(device, Device::Cuda(_));
    // libtorch runs fused attention on the CPU (no T² weights); ONNX graphs and CUDA
    // compose attention from MatMul + Softmax
    let attn_stored = engine != Engine::Tch || cuda;
    let half = if fp16 { 0.5 } else { 1.0 };
    let mut act = infer_bytes_per_element(engine) * feature_elements(cfg);
    if attn_stored {
        act += ATTN_BYTES * attention_elements(cfg);
    }
    let per_image = (cfg.img_channels * cfg.img_resolution * cfg.img_resolution) as f64;
    let mut parts = vec![
        ("network activations".to_string(), half * act * b, true),
        (
            "sampler buffers".to_string(),
            SAMPLER_F64_VECTORS * 8.0 * per_image * b,
            true,
        ),
    ];
    if engine == Engine::Tch && !cuda {
        parts.push(("libtorch working memory".to_string(), TCH_INFER_OVERHEAD, false));
    }
    if let Some((fe, dis)) = guide {
        let (f1, a1) = encoder_elements(fe);
        let (f2, a2) = encoder_elements(dis);
        let mut g = GUIDE_ACT_PER_ELEMENT * (f1 + f2);
        if cuda {
            g += 2.0 * ATTN_BYTES * (a1 + a2);
        }
        parts.push((
            "guidance networks (forward + input gradient)".to_string(),
            g * b,
            true,
        ));
    }
    JobEstimate {
        what: "sampling".into(),
        batch,
        resident: rss(),
        peak_so_far: peak_rss().unwrap_or(0.0),
        parts,
        batch_flag: "--batch".into(),
    }
}

/// The estimate for FID feature extraction: Inception-v3 on `engine` in batches of `batch`,
/// `workers` threads preparing batches.
pub fn fid_job(engine: Engine, batch: usize, workers: usize) -> JobEstimate {
    let b = batch as f64;
    let (per, overhead) = match engine {
        Engine::Tch => (FID_TCH_PER_IMAGE, FID_OVERHEAD[1]),
        _ => (FID_ORT_PER_IMAGE, FID_OVERHEAD[0]),
    };
    JobEstimate {
        what: "FID".into(),
        batch,
        resident: rss(),
        peak_so_far: peak_rss().unwrap_or(0.0),
        parts: vec![
            ("Inception activations".to_string(), per * b, true),
            (
                format!("input images in flight ({} batches)", 2 * workers.max(1) + 1),
                (2 * workers.max(1) + 1) as f64 * FID_INPUT_BYTES * b,
                true,
            ),
            ("runtime working memory".to_string(), overhead, false),
        ],
        batch_flag: "--batch".into(),
    }
}

/// The tch device of a `--device` value, without loading anything.
fn tch_device(spec: crate::device::DeviceSpec) -> Device {
    match spec {
        crate::device::DeviceSpec::Cpu => Device::Cpu,
        crate::device::DeviceSpec::Cuda(n) => Device::Cuda(n),
    }
}

/// `tiw generate`'s check before the first batch: the network file's configuration, the
/// runtime, batches of up to `batch` images, the DG pair when guided; `fp16_allowed`: a
/// `use_fp16` network runs in f16 on CUDA with libtorch. Returns the line to show, or the
/// error of [`check_job`]. A network file without a configuration is not checked (said in
/// the line).
#[allow(clippy::too_many_arguments)]
pub fn guard_sampling(
    network: &Path,
    engine: Engine,
    fp16_allowed: bool,
    guide: Option<&crate::sample::dg::DgGuide>,
    batch: usize,
    device: crate::device::DeviceSpec,
    max_memory_gb: Option<f64>,
) -> Result<String> {
    if batch == 0 {
        return Ok("memory (sampling): no batch for this process".into());
    }
    let Some(cfg) = network_config(network)? else {
        return Ok(format!(
            "memory (sampling): not checked ({} carries no network configuration)",
            network.display()
        ));
    };
    let dev = tch_device(device);
    let fp16 = fp16_allowed && cfg.use_fp16 && engine == Engine::Tch && matches!(dev, Device::Cuda(_));
    let est = sampling_job(&cfg, engine, fp16, guide.map(|g| g.configs()), batch, dev);
    check_job(&est, dev, max_memory_gb)
}

/// `tiw fid`'s check before the first batch (Inception-v3 on `runtime`, `workers` loader
/// threads); see [`guard_sampling`].
pub fn guard_fid(
    runtime: crate::fid::detector::DetectorRuntime,
    batch: usize,
    workers: usize,
    device: crate::device::DeviceSpec,
    max_memory_gb: Option<f64>,
) -> Result<String> {
    let engine = match runtime {
        crate::fid::detector::DetectorRuntime::Ort => Engine::Ort,
        crate::fid::detector::DetectorRuntime::Tch => Engine::Tch,
    };
    let dev = tch_device(device);
    check_job(&fid_job(engine, batch, workers), dev, max_memory_gb)
}

/// Compares a job's estimate with the limit on `device` (`max_memory_gb` replaces the
/// detected one): on the CPU the estimated peak of the process, on CUDA what one batch adds
/// on the device. Returns the line to show (estimate and limit) or the error that stops the
/// job before its first batch: the estimate by part, the limit and where it comes from, and
/// what to change.
pub fn check_job(est: &JobEstimate, device: Device, max_memory_gb: Option<f64>) -> Result<String> {
    if let Some(g) = max_memory_gb {
        if !g.is_finite() || g <= 0.0 {
            bail!("--max-memory must be a positive number of GB (got {g})");
        }
    }
    let cuda = matches!(device, Device::Cuda(_));
    let limit = match max_memory_gb {
        Some(g) => Some((g * 1e9, "--max-memory".to_string())),
        None => device_limit(device, est.resident).map_err(|e| {
            anyhow::anyhow!(
                "memory check before {}: {e:#}. Set the limit yourself with --max-memory GB (the device memory one batch may take)",
                est.what
            )
        })?,
    };
    let need = if cuda { est.per_batch() } else { est.total() };
    let what_need = if cuda {
        format!(
            "one batch of {} needs about {} on {device:?}",
            est.batch,
            gb(need)
        )
    } else {
        format!(
            "estimated peak {} ({} held now, one batch of {} adds {})",
            gb(need),
            gb(est.resident),
            est.batch,
            gb(est.per_batch())
        )
    };
    let line = format!(
        "memory ({}): {what_need} [{}]; limit {}",
        est.what,
        est.parts_text(),
        limit
            .as_ref()
            .map(|(l, from)| format!("{} ({from})", gb(*l)))
            .unwrap_or_else(|| "unknown (no /proc/meminfo; --max-memory GB sets one)".into())
    );
    let Some((limit, from)) = limit else {
        return Ok(line);
    };
    if need <= limit {
        return Ok(line);
    }
    let per_image = est.per_image();
    let fixed = est.per_batch() - per_image * est.batch as f64;
    let fits = if cuda {
        ((limit - fixed) / per_image.max(1.0)).floor()
    } else {
        ((limit - est.resident - fixed) / per_image.max(1.0)).floor()
    };
    let suggestion = if fits >= 1.0 {
        format!("{} {} or lower", est.batch_flag, fits as u64)
    } else {
        format!(
            "even one image per batch does not fit next to the {} this process holds",
            gb(est.resident)
        )
    };
    bail!(
        "not enough memory for {}: {what_need} [{}], but the limit is {} ({from}). Lower {} (each image of a batch adds about {}; {suggestion}), or set --max-memory GB if the limit is wrong",
        est.what,
        est.parts_text(),
        gb(limit),
        est.batch_flag,
        gb(per_image),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ddpmpp(res: usize, mc: usize, mult: &[usize], nb: usize, attn: &[usize]) -> NetConfig {
        let j = tiw_converters::Json::parse(&format!(
            r#"{{"class_name": "EDMPrecond", "init_kwargs": {{"img_resolution": {res}, "img_channels": 3, "label_dim": 0,
               "model_type": "SongUNet", "embedding_type": "positional", "encoder_type": "standard", "decoder_type": "standard",
               "channel_mult_noise": 1, "resample_filter": [1, 1], "model_channels": {mc}, "channel_mult": {mult:?}, "num_blocks": {nb},
               "attn_resolutions": {attn:?}, "augment_dim": 0, "dropout": 0.0}}}}"#
        ))
        .unwrap();
        NetConfig::from_json(&j).unwrap()
    }

    fn job(parts: &[f64], resident: f64) -> JobEstimate {
        JobEstimate {
            what: "sampling".into(),
            batch: 64,
            resident,
            peak_so_far: resident,
            parts: parts
                .iter()
                .enumerate()
                .map(|(i, &b)| (format!("p{i}"), b, true))
                .collect(),
            batch_flag: "--batch".into(),
        }
    }

    #[test]
    fn element_counts_follow_the_architecture() {
        // DDPM++ CIFAR-10: 128 channels × (2, 2, 2), 4 blocks, attention at 16×16
        let c = ddpmpp(32, 128, &[2, 2, 2], 4, &[16]);
        assert_eq!(feature_elements(&c), 9.0 * 256.0 * (1024.0 + 256.0 + 64.0));
        assert_eq!(attention_elements(&c), 9.0 * 256.0 * 256.0);
        let fe = EncoderConfig::feature_extractor(32).unwrap();
        let (f, a) = encoder_elements(&fe);
        // 32×32 blocks: 4 × 2 heads × 1024² dominate the attention weights
        assert!(a > 8.0 * 1024.0 * 1024.0 && a < 10.0 * 1024.0 * 1024.0, "{a}");
        assert!(f > 1e6 && f < 3e6, "{f}");
        let d = EncoderConfig::discriminator(512, false);
        assert!(encoder_elements(&d).0 < f);
    }

    #[test]
    fn estimates_scale_with_batch_and_precision() {
        let c = ddpmpp(32, 128, &[2, 2, 2], 4, &[16]);
        let a = sampling_job(&c, Engine::Ort, false, None, 8, Device::Cpu);
        let b = sampling_job(&c, Engine::Ort, false, None, 16, Device::Cpu);
        assert!((b.per_batch() / a.per_batch() - 2.0).abs() < 1e-9);
        let h = sampling_job(&c, Engine::Tch, true, None, 16, Device::Cuda(0));
        let f = sampling_job(&c, Engine::Tch, false, None, 16, Device::Cuda(0));
        assert!(h.parts[0].1 < f.parts[0].1 * 0.51);
        let fe = EncoderConfig::feature_extractor(32).unwrap();
        let d = EncoderConfig::discriminator(512, false);
        let g = sampling_job(&c, Engine::Ort, false, Some((&fe, &d)), 16, Device::Cpu);
        assert!(g.per_batch() > b.per_batch());
        let f1 = fid_job(Engine::Ort, 32, 2);
        let f2 = fid_job(Engine::Ort, 64, 2);
        assert!((f2.per_image() - f1.per_image()).abs() < 1.0);
        assert!(f2.per_batch() > f1.per_batch());
    }

    #[test]
    fn over_the_limit_names_estimate_limit_and_batch() {
        let j = job(&[3e9, 1e9], 1e9);
        let err = check_job(&j, Device::Cpu, Some(2.0)).unwrap_err().to_string();
        for needle in [
            "not enough memory for sampling",
            "5.00 GB",
            "2.00 GB (--max-memory)",
            "--batch",
            "--batch 16 or lower",
        ] {
            assert!(err.contains(needle), "{needle:?} missing: {err}");
        }
        let line = check_job(&j, Device::Cpu, Some(6.0)).unwrap();
        assert!(
            line.contains("5.00 GB") && line.contains("6.00 GB (--max-memory)"),
            "{line}"
        );
        let err = check_job(&job(&[1e9], 3e9), Device::Cpu, Some(2.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("even one image"), "{err}");
        assert!(check_job(&j, Device::Cpu, Some(-1.0)).is_err());
        // the CPU limit is found here
        assert!(check_job(&job(&[1.0], 1.0), Device::Cpu, None)
            .unwrap()
            .contains("limit"));
    }

    #[test]
    fn cuda_query_fails_clearly_without_a_gpu() {
        // this machine has no NVIDIA driver: the query must fail with a reason, not crash
        if let Ok((free, total)) = cuda_mem_info(0) {
            assert!(free <= total);
            return;
        }
        let e = cuda_mem_info(0).unwrap_err();
        println!("{e}");
        assert!(e.contains("cannot query the free memory of cuda:0"), "{e}");
        let err = check_job(&job(&[1e9], 1e9), Device::Cuda(0), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-memory") && err.contains("cuda:0"), "{err}");
        // --max-memory replaces the query
        assert!(check_job(&job(&[1e9], 1e9), Device::Cuda(0), Some(2.0)).is_ok());
        assert!(check_job(&job(&[3e9], 1e9), Device::Cuda(0), Some(2.0)).is_err());
    }
}
