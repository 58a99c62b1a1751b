//! The CIFAR python tarballs (`cifar-10-python.tar.gz`, `cifar-100-python.tar.gz`) as
//! EDM's `dataset_tool.py` reads them, without executing any pickle code.
//!
//! * CIFAR-10: members `cifar-10-batches-py/data_batch_1` … `_5`, concatenated in that order
//!   (the tarball's member order does not matter; `test_batch` is not used), labels from
//!   `labels` (0–9);
//! * CIFAR-100 (extension): member `cifar-100-python/train`, labels from `fine_labels` (0–99).
//!
//! Each member is a pickled dict whose `data` is a uint8 numpy array `N × 3072` (or
//! `N × 3 × 32 × 32`), each row `3 × 32 × 32` (CHW), and whose labels are a list (or numpy
//! array) of `N` ints. The pickles are run on the data-only VM of `tiw_converters::pickle`
//! (numpy arrays read by [`tiw_converters::pickle::globals::ndarray`]); a pickle that
//! references a code-execution global is refused. The tarball is read as a stream (gzip +
//! tar); at most the training members (~150 MB for CIFAR-10) are held in memory.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tiw_converters::pickle::globals::{ndarray, Trace};
use tiw_converters::pickle::{run_vm, Arena, Obj, Value};

/// Largest accepted member, in bytes.
const MAX_MEMBER: u64 = 1 << 29;

/// The training images of a CIFAR tarball.
#[derive(Debug, Clone)]
pub struct CifarImages {
    /// `N × 3 × 32 × 32` uint8 (CHW per image).
    pub chw: Vec<u8>,
    /// `N` class labels.
    pub labels: Vec<i64>,
    /// Number of classes (10 or 100).
    pub classes: i64,
}

impl CifarImages {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` as `32 × 32 × 3` (HWC).
    pub fn image_hwc(&self, i: usize) -> Vec<u8> {
        let src = &self.chw[i * 3072..(i + 1) * 3072];
        let mut out = vec![0u8; 3072];
        for ch in 0..3 {
            for p in 0..1024 {
                out[p * 3 + ch] = src[ch * 1024 + p];
            }
        }
        out
    }
}

/// Whether `path` names a tarball (`.tar.gz` / `.tgz`), the only archive read this way.
pub fn is_tarball(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Reads the training set of a CIFAR-10 or CIFAR-100 python tarball (see the module docs).
pub fn read_tarball(path: &Path) -> Result<CifarImages> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let bad = |e: std::io::Error| anyhow!("{}: corrupt or truncated tar.gz ({e})", path.display());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut c10: [Option<Vec<u8>>; 5] = Default::default();
    let mut c100: Option<Vec<u8>> = None;
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let slot = if name == "cifar-100-python/train" {
            &mut c100
        } else if let Some(k) = name
            .strip_prefix("cifar-10-batches-py/data_batch_")
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| (1..=5).contains(k))
        {
            &mut c10[k - 1]
        } else {
            continue;
        };
        if entry.size() > MAX_MEMBER {
            bail!(
                "{}: member {name} is {} bytes (limit {MAX_MEMBER})",
                path.display(),
                entry.size()
            );
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        (&mut entry).take(MAX_MEMBER).read_to_end(&mut buf).map_err(bad)?;
        if (buf.len() as u64) != entry.size() {
            bail!("{}: member {name} is truncated", path.display());
        }
        *slot = Some(buf);
    }
    if c10.iter().any(Option::is_some) {
        let mut out = CifarImages {
            chw: Vec::new(),
            labels: Vec::new(),
            classes: 10,
        };
        for (k, b) in c10.iter().enumerate() {
            let name = format!("cifar-10-batches-py/data_batch_{}", k + 1);
            let b = b.as_deref().ok_or_else(|| {
                anyhow!(
                    "{}: no member {name} (not a complete cifar-10-python tarball)",
                    path.display()
                )
            })?;
            read_batch(b, "labels", 10, &mut out).with_context(|| format!("{}: {name}", path.display()))?;
        }
        Ok(out)
    } else if let Some(b) = c100 {
        let mut out = CifarImages {
            chw: Vec::new(),
            labels: Vec::new(),
            classes: 100,
        };
        read_batch(&b, "fine_labels", 100, &mut out)
            .with_context(|| format!("{}: cifar-100-python/train", path.display()))?;
        Ok(out)
    } else {
        bail!(
            "{}: no cifar-10-batches-py/data_batch_N or cifar-100-python/train member (not a CIFAR python tarball)",
            path.display()
        )
    }
}

/// Appends one pickled batch to `out`.
fn read_batch(buf: &[u8], label_key: &str, classes: i64, out: &mut CifarImages) -> Result<()> {
    let mut arena = Arena::default();
    let mut trace = Trace::default();
    let res = run_vm(buf, 0, buf.len(), "batch", &mut arena, None, &mut trace)?;
    trace.refuse_dangerous()?;
    let root = res.value;
    if arena.as_dict(root).is_none() {
        bail!("the pickle is not a dict ({})", arena.describe(root));
    }
    let data = arena
        .dict_get(root, "data")
        .ok_or_else(|| anyhow!("no `data` entry"))?;
    let arr = ndarray(&arena, buf, data).map_err(|e| anyhow!("`data`: {e}"))?;
    let n = arr.shape.first().copied().unwrap_or(0);
    let per: usize = arr.shape.iter().skip(1).product();
    if arr.code != "u1"
        || arr.fortran
        || per != 3072
        || !(arr.shape.len() == 2 || arr.shape[1..] == [3, 32, 32])
    {
        bail!(
            "`data` is a {} array of shape {:?}{}; expected uint8 N×3072 in C order",
            arr.code,
            arr.shape,
            if arr.fortran { " (Fortran order)" } else { "" }
        );
    }
    let lv = arena
        .dict_get(root, label_key)
        .ok_or_else(|| anyhow!("no `{label_key}` entry"))?;
    let labels: Vec<i64> = match arena.obj(lv) {
        Some(Obj::List(items) | Obj::Tuple(items)) => items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                other => Err(anyhow!("`{label_key}` holds {}", arena.describe(*other))),
            })
            .collect::<Result<_>>()?,
        _ => ndarray(&arena, buf, lv)
            .and_then(|a| a.to_i64())
            .map_err(|e| anyhow!("`{label_key}`: {e}"))?,
    };
    if labels.len() != n {
        bail!("{} labels for {n} images", labels.len());
    }
    if let Some(bad) = labels.iter().find(|&&l| !(0..classes).contains(&l)) {
        bail!("label {bad} outside 0..{}", classes - 1);
    }
    out.chw.extend_from_slice(&arr.data);
    out.labels.extend(labels);
    Ok(())
}
