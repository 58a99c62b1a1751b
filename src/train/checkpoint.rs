//! Files of a training run: network snapshots and training states.
//!
//! * Snapshot `network-snapshot-<kimg:06d>.safetensors`: the EMA network's state_dict (f32,
//!   PyTorch names and order) with metadata `tiw.kind = "edm-snapshot"` and `tiw.config` =
//!   the network configuration (`network_kwargs` + `interface_kwargs`), so `tiw generate`,
//!   `tiw forward` and `tiw convert` load it directly. Optionally also a `.pt` state_dict.
//! * Training state `training-state-<kimg:06d>.safetensors`: tensors `net.<name>` (every
//!   parameter and buffer), `ema.<name>` (parameters), `adam.exp_avg.<name>`,
//!   `adam.exp_avg_sq.<name>` (parameters that have Adam state), and metadata
//!   `tiw.kind = "training-state"`, `tiw.config` and `tiw.train` (JSON: `cur_nimg`,
//!   `cur_tick`, `adam_steps` {name: step}, `sampler_position`, `seed`).
//!
//! Every file is written to a temporary name in the same folder and renamed into place, so
//! a run killed at any moment leaves either the previous file or the complete new one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};
use tiw_converters::{safetensors_io, Buffer, DType, Json, TensorStore};

use super::step::Adam;

/// A named f32 tensor as a store entry (copied to the CPU).
fn entry(name: &str, t: &Tensor) -> Result<(String, DType, Vec<usize>, Vec<u8>)> {
    let c = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let shape: Vec<usize> = c.size().iter().map(|&d| d as usize).collect();
    let v: Vec<f32> = Vec::<f32>::try_from(&c.view(-1)).context("reading a tensor for saving")?;
    let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    Ok((name.to_string(), DType::F32, shape, bytes))
}

/// A store of f32 CPU copies of named tensors.
pub fn store_of<'a>(named: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Result<TensorStore> {
    let entries = named
        .into_iter()
        .map(|(n, t)| entry(n, t))
        .collect::<Result<Vec<_>>>()?;
    Ok(TensorStore::from_owned(entries)?)
}

/// Writes named tensors as safetensors with metadata (atomic: temp file + rename).
fn write_tensors(
    path: &Path,
    tensors: Vec<(String, DType, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
) -> Result<()> {
    let store = TensorStore::from_owned(tensors)?;
    write_store_guarded(&store, meta, path)
}

/// Bytes a safetensors file of `store` with `meta` takes (data + a generous header bound).
pub fn safetensors_size(store: &TensorStore, meta: &HashMap<String, String>) -> u64 {
    let data: u64 = store.entries().iter().map(|e| e.nbytes() as u64).sum();
    let names: u64 = store.entries().iter().map(|e| e.name.len() as u64 + 96).sum();
    let meta_len: u64 = meta.iter().map(|(k, v)| (k.len() + v.len()) as u64 * 2 + 8).sum();
    data + names + meta_len + 4096
}

/// Free bytes for an unprivileged writer on the filesystem holding `dir` (`statvfs`).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    Some(free)
}

/// Test hook: write faults from `TIW_FAULT_WRITE_AFTER_BYTES` (fail like a full disk after
/// that many bytes) and `TIW_FAULT_WRITE_DELAY_MS` (pause before the rename), read by the
/// checkpoint writer only.
fn test_hook_write_faults() -> safetensors_io::WriteFaults {
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    safetensors_io::WriteFaults {
        fail_after_bytes: var("TIW_FAULT_WRITE_AFTER_BYTES"),
        delay_before_rename: var("TIW_FAULT_WRITE_DELAY_MS").map(std::time::Duration::from_millis),
    }
}

/// `size` needed, `free` found: the disk-guard message for `path`.
fn disk_message(path: &Path, size: u64, free: Option<u64>) -> String {
    let gb = |b: u64| b as f64 / 1e9;
    let free = free
        .map(|f| format!("{:.3} GB ({f} bytes) free", gb(f)))
        .unwrap_or_else(|| "free space unknown".into());
    format!(
        "{} needs {:.3} GB ({size} bytes); {free} on its filesystem. The previous files are kept \
         (nothing was renamed into place); free some space, then rerun with --resume auto",
        path.display(),
        gb(size)
    )
}

/// Writes a safetensors checkpoint atomically after checking the free space (disk guard):
/// a file that cannot fit, or any write error (ENOSPC…), stops with an error naming the
/// file, the size needed and the space free; the temporary file is removed and the
/// previous file at `path` stays intact.
pub fn write_store_guarded(store: &TensorStore, meta: HashMap<String, String>, path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let size = safetensors_size(store, &meta);
    let free = free_bytes(dir);
    if free.is_some_and(|f| f < size) {
        bail!("not enough disk space: {}", disk_message(path, size, free));
    }
    safetensors_io::write_with_faults(store, meta, path, &|_| {}, None, &test_hook_write_faults()).map_err(
        |e| {
            anyhow::anyhow!(
                "writing failed ({e}): {}",
                disk_message(path, size, free_bytes(dir))
            )
        },
    )
}

/// File name of a snapshot at `kimg` (`network-snapshot-000512.safetensors`).
pub fn snapshot_name(kimg: u64) -> String {
    format!("network-snapshot-{kimg:06}.safetensors")
}

/// File name of a training state at `kimg`.
pub fn state_name(kimg: u64) -> String {
    format!("training-state-{kimg:06}.safetensors")
}

/// Writes the snapshot of the EMA network: `names`/`tensors` in state_dict order.
/// Returns the written paths (safetensors, and `.pt` when `also_pt`).
pub fn write_snapshot(
    dir: &Path,
    kimg: u64,
    named: &[(String, &Tensor)],
    config: &Json,
    also_pt: bool,
) -> Result<Vec<PathBuf>> {
    let tensors = named
        .iter()
        .map(|(n, t)| entry(n, t))
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let meta = safetensors_io::metadata("edm-snapshot", Some(config), None, &names);
    let path = dir.join(snapshot_name(kimg));
    let mut out = vec![path.clone()];
    if also_pt {
        let store = TensorStore::from_owned(tensors.clone())?;
        let pt = path.with_extension("pt");
        tiw_converters::pt_write::write(&store, &pt, &|_| {})
            .with_context(|| format!("writing {}", pt.display()))?;
        out.push(pt);
    }
    write_tensors(&path, tensors, meta)?;
    Ok(out)
}

/// Progress counters stored in a training state.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Images seen.
    pub cur_nimg: u64,
    /// Ticks completed.
    pub cur_tick: u64,
    /// Dataset indices consumed by the sampler.
    pub sampler_position: u64,
    /// The run's seed.
    pub seed: u64,
}

/// A training state in memory.
pub struct State {
    /// Counters.
    pub progress: Progress,
    /// Network configuration.
    pub config: Json,
    /// Network tensors by name (parameters and buffers).
    pub net: HashMap<String, Tensor>,
    /// EMA parameters by name.
    pub ema: HashMap<String, Tensor>,
    /// Adam `(exp_avg, exp_avg_sq, step)` by parameter name.
    pub adam: HashMap<String, (Tensor, Tensor, u64)>,
}

/// Writes a training state. `net` holds every named tensor in state_dict order, `params`
/// the indices (into `net`) of the parameters, whose EMA copies are `ema` (same order) and
/// whose Adam state is `adam.state` (same order).
pub fn write_state(
    path: &Path,
    progress: &Progress,
    config: &Json,
    net: &[(String, Tensor)],
    params: &[usize],
    ema: &[Tensor],
    adam: &Adam,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (n, t) in net {
        tensors.push(entry(&format!("net.{n}"), t)?);
    }
    let mut steps = Vec::new();
    for (k, &i) in params.iter().enumerate() {
        let name = &net[i].0;
        tensors.push(entry(&format!("ema.{name}"), &ema[k])?);
        if let Some((m, v, s)) = &adam.state[k] {
            tensors.push(entry(&format!("adam.exp_avg.{name}"), m)?);
            tensors.push(entry(&format!("adam.exp_avg_sq.{name}"), v)?);
            steps.push((name.clone(), Json::Int(*s as i64)));
        }
    }
    let names: Vec<&str> = net.iter().map(|(n, _)| n.as_str()).collect();
    let mut meta = safetensors_io::metadata("training-state", Some(config), None, &names);
    let train = Json::Object(vec![
        ("cur_nimg".into(), Json::Int(progress.cur_nimg as i64)),
        ("cur_tick".into(), Json::Int(progress.cur_tick as i64)),
        (
            "sampler_position".into(),
            Json::Int(progress.sampler_position as i64),
        ),
        ("seed".into(), Json::Int(progress.seed as i64)),
        ("adam_steps".into(), Json::Object(steps)),
    ]);
    meta.insert("tiw.train".into(), train.to_text());
    write_tensors(path, tensors, meta)
}

fn store_tensor(store: &TensorStore, e: &tiw_converters::TensorEntry, device: Device) -> Result<Tensor> {
    let data = tiw_models::vb::to_f32(e.dtype, &store.bytes(e))
        .map_err(|err| anyhow::anyhow!("{}: {err}", e.name))?;
    let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&data)
        .reshape(shape.as_slice())
        .to_device(device))
}

fn json_u64(j: &Json, key: &str, path: &Path) -> Result<u64> {
    j.get(key)
        .and_then(Json::as_i64)
        .filter(|v| *v >= 0)
        .map(|v| v as u64)
        .with_context(|| format!("{}: training state lacks a valid {key:?}", path.display()))
}

/// Reads a training state written by [`write_state`] onto `device`.
pub fn read_state(path: &Path, device: Device) -> Result<State> {
    let buf = Arc::new(Buffer::open(path).with_context(|| format!("opening {}", path.display()))?);
    let (store, meta) = safetensors_io::read(buf).with_context(|| format!("reading {}", path.display()))?;
    if meta.get("tiw.kind").map(String::as_str) != Some("training-state") {
        bail!(
            "{}: not a tiw training state (metadata tiw.kind is {:?})",
            path.display(),
            meta.get("tiw.kind")
        );
    }
    let parse = |key: &str| -> Result<Json> {
        let text = meta
            .get(key)
            .with_context(|| format!("{}: no {key} metadata", path.display()))?;
        Json::parse(text).map_err(|e| anyhow::anyhow!("{}: {key}: {e}", path.display()))
    };
    let config = parse("tiw.config")?;
    let train = parse("tiw.train")?;
    let progress = Progress {
        cur_nimg: json_u64(&train, "cur_nimg", path)?,
        cur_tick: json_u64(&train, "cur_tick", path)?,
        sampler_position: json_u64(&train, "sampler_position", path)?,
        seed: json_u64(&train, "seed", path)?,
    };
    let steps = train
        .get("adam_steps")
        .with_context(|| format!("{}: no adam_steps", path.display()))?;
    let (mut net, mut ema, mut m, mut v) = (HashMap::new(), HashMap::new(), HashMap::new(), HashMap::new());
    for e in store.entries() {
        let t = store_tensor(&store, e, device)?;
        if let Some(n) = e.name.strip_prefix("net.") {
            net.insert(n.to_string(), t);
        } else if let Some(n) = e.name.strip_prefix("ema.") {
            ema.insert(n.to_string(), t);
        } else if let Some(n) = e.name.strip_prefix("adam.exp_avg_sq.") {
            v.insert(n.to_string(), t);
        } else if let Some(n) = e.name.strip_prefix("adam.exp_avg.") {
            m.insert(n.to_string(), t);
        } else {
            bail!(
                "{}: unexpected tensor {:?} in a training state",
                path.display(),
                e.name
            );
        }
    }
    let mut adam = HashMap::new();
    for (n, mt) in m {
        let vt = v
            .remove(&n)
            .with_context(|| format!("{}: adam.exp_avg_sq.{n} missing", path.display()))?;
        let s = json_u64(steps, &n, path)?;
        adam.insert(n, (mt, vt, s));
    }
    Ok(State {
        progress,
        config,
        net,
        ema,
        adam,
    })
}

/// Reads the official PyTorch pair: `training-state-*.pt` (net + Adam state) and its
/// `network-snapshot-*.pkl` (EMA), returned like [`read_state`] with the counters taken from
/// the file name's kimg (sampler position = images seen).
pub fn read_official_state(pt: &Path, pkl: &Path, device: Device) -> Result<State> {
    use tiw_converters::{Selection, What};
    let ck = tiw_converters::open(pt)?;
    let ex = ck.extract(&Selection {
        key: None,
        what: What::All,
    })?;
    let (mut net, mut m, mut v) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut tensor_steps = HashMap::new();
    for e in ex.store.entries() {
        let t = store_tensor(&ex.store, e, device)?;
        if let Some(n) = e.name.strip_prefix("optimizer.step.") {
            tensor_steps.insert(n.to_string(), t.double_value(&[]) as u64);
        } else if let Some(n) = e.name.strip_prefix("optimizer.exp_avg_sq.") {
            v.insert(n.to_string(), t);
        } else if let Some(n) = e.name.strip_prefix("optimizer.exp_avg.") {
            m.insert(n.to_string(), t);
        } else if !e.name.starts_with("optimizer.") {
            net.insert(e.name.clone(), t);
        }
    }
    let opt_cfg = ex.config.as_ref().and_then(|c| c.get("optimizer"));
    let mut adam = HashMap::new();
    for (n, mt) in m {
        let vt = v
            .remove(&n)
            .with_context(|| format!("{}: exp_avg_sq of {n} missing", pt.display()))?;
        // torch ≥ 1.12 stores `step` as a 0-d tensor, older versions as a number
        let step = match tensor_steps.get(&n) {
            Some(s) => *s,
            None => opt_cfg
                .and_then(|o| o.get("scalar_state"))
                .and_then(|o| o.get(&format!("step.{n}")))
                .and_then(|s| s.as_f64())
                .with_context(|| format!("{}: Adam step of {n} missing", pt.display()))?
                as u64,
        };
        adam.insert(n, (mt, vt, step));
    }
    let (ema_store, config) = tiw_models::load::read(pkl)?;
    let config = config.with_context(|| format!("{}: no network configuration", pkl.display()))?;
    let mut ema = HashMap::new();
    for e in ema_store.entries() {
        ema.insert(e.name.clone(), store_tensor(&ema_store, e, device)?);
    }
    let kimg =
        kimg_of(pt).with_context(|| format!("{}: cannot read kimg from the file name", pt.display()))?;
    Ok(State {
        progress: Progress {
            cur_nimg: kimg * 1000,
            cur_tick: 0,
            sampler_position: kimg * 1000,
            seed: 0,
        },
        config,
        net,
        ema,
        adam,
    })
}

/// The kimg number in `…-<kimg>.<ext>`.
pub fn kimg_of(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit('-').next()?.parse().ok()
}

/// The newest `training-state-*.safetensors` in `dir`, if any.
pub fn latest_state(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(states_newest_first(dir)?.into_iter().next())
}

/// Every `training-state-<kimg>.safetensors` in `dir`, highest kimg first (none when `dir`
/// does not exist).
pub fn states_newest_first(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("training-state-") && name.ends_with(".safetensors") {
            if let Some(k) = kimg_of(&p) {
                found.push((k, p));
            }
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Whether `path` is a complete tiw training state (its safetensors header parses, every
/// tensor lies inside the file and the metadata says `training-state`).
pub fn state_is_readable(path: &Path) -> bool {
    safetensors_kind(path).as_deref() == Some("training-state")
}

/// The `tiw.kind` metadata of a complete safetensors file (`None` when the file is missing,
/// truncated or not safetensors).
pub fn safetensors_kind(path: &Path) -> Option<String> {
    let buf = Buffer::open(path).ok()?;
    let (_, meta) = safetensors_io::read(Arc::new(buf)).ok()?;
    meta.get("tiw.kind").cloned()
}
