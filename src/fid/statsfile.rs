//! FID statistics files.
//!
//! * **Reference** (EDM `fid.py ref`, byte for byte): `np.savez(dest, mu=mu, sigma=sigma)`,
//!   i.e. an uncompressed zip of `mu.npy` (`<f8`, `(D,)`) and `sigma.npy` (`<f8`, `(D, D)`),
//!   `.npy` format 1.0, C order. EDM's `cifar10-32x32.npz` and TIW's `FID_stat.npz` are such
//!   files (D = 2048).
//! * **Partial statistics** (`tiw fid stats` / `merge`), mergeable by addition, same
//!   container: `n` (`<i8`, 0-d: number of feature vectors), `sum` (`<f8`, `(D,)`: Σf) and
//!   `sum_outer` (`<f8`, `(D, D)`: Σ f fᵀ).
//! * **Per-sample features** (optional, either layout): `features` (`<f4`, `(N, D)`), the
//!   detector's vectors in sample order (`tiw fid stats --keep-features`, `tiw fid ref
//!   --metrics …,kid`), for KID and precision/recall. Shards merge by concatenation in
//!   argument order. A file holding only `features` is read as statistics of those vectors.
//!
//! Readers accept either layout wherever statistics are expected (a partial file is turned
//! into `mu`/`sigma` as EDM would).
//!
//! The writer reproduces `numpy.savez` (NumPy ≥ 1.17 / Python ≥ 3.6 `zipfile`): each member
//! `<key>.npy` is written with `force_zip64=True` — local header version 45, no flags,
//! method 0 (stored), DOS time 0 / date 1980-01-01, CRC-32, sizes `0xFFFFFFFF` plus a zip64
//! extra field (`0x0001`, 16 bytes: uncompressed then compressed size) — and listed in the
//! central directory (made by 3.45 = Unix, needs 4.5, external attributes `0o600 << 16`,
//! 32-bit sizes and offsets) followed by a plain end-of-central-directory record. The `.npy`
//! header is `{'descr': …, 'fortran_order': False, 'shape': …, }` plus
//! `21 − len(repr(shape[0]))` spaces of growth room, space-padded so that magic + length +
//! header + `\n` is a multiple of 64 bytes.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::metrics::Features;
use super::stats::{FeatureStats, MuSigma};
use crate::npz::{self, Data};

/// An array to write: dtype descr (`<f8` or `<i8`), shape, little-endian bytes.
#[derive(Debug, Clone)]
pub struct NpyArray {
    /// `'<f8'` or `'<i8'`.
    pub descr: &'static str,
    /// Shape (empty for 0-d).
    pub shape: Vec<usize>,
    /// Row-major little-endian data.
    pub bytes: Vec<u8>,
}

impl NpyArray {
    /// A float64 array.
    pub fn f64(shape: Vec<usize>, v: &[f64]) -> Self {
        NpyArray {
            descr: "<f8",
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    /// A float32 array.
    pub fn f32(shape: Vec<usize>, v: &[f32]) -> Self {
        NpyArray {
            descr: "<f4",
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    /// An int64 array.
    pub fn i64(shape: Vec<usize>, v: &[i64]) -> Self {
        NpyArray {
            descr: "<i8",
            shape,
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// Python's `repr` of a shape tuple.
fn shape_repr(shape: &[usize]) -> String {
    match shape {
        [] => "()".into(),
        [a] => format!("({a},)"),
        _ => format!(
            "({})",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `numpy.lib.format.write_array` header (format 1.0) for a C-order array.
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let mut h = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_repr(shape)
    );
    if let Some(first) = shape.first() {
        h.push_str(&" ".repeat(21usize.saturating_sub(first.to_string().len())));
    }
    let hlen = h.len() + 1;
    let pad = 64 - (6 + 2 + 2 + hlen) % 64;
    let mut out = Vec::with_capacity(10 + hlen + pad);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((hlen + pad) as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Writes `arrays` as `numpy.savez` does (see the module docs), atomically (temp + rename).
pub fn write_savez(path: &Path, arrays: &[(&str, NpyArray)]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        let mut offset: u64 = 0;
        let mut central = Vec::new();
        for (key, a) in arrays {
            let name = format!("{key}.npy");
            let header = npy_header(a.descr, &a.shape);
            let size = (header.len() + a.bytes.len()) as u64;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&header);
            crc.update(&a.bytes);
            let crc = crc.finalize();
            if offset > 0xffff_ffff || size >= 0xffff_ffff {
                bail!("{}: array {key} too large for this writer", path.display());
            }
            // local file header (zip64)
            let mut lh = Vec::with_capacity(30 + name.len() + 20);
            lh.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            lh.extend_from_slice(&45u16.to_le_bytes()); // version needed
            lh.extend_from_slice(&0u16.to_le_bytes()); // flags
            lh.extend_from_slice(&0u16.to_le_bytes()); // stored
            lh.extend_from_slice(&0u16.to_le_bytes()); // time 00:00:00
            lh.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
            lh.extend_from_slice(&crc.to_le_bytes());
            lh.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
            lh.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
            lh.extend_from_slice(&(name.len() as u16).to_le_bytes());
            lh.extend_from_slice(&20u16.to_le_bytes());
            lh.extend_from_slice(name.as_bytes());
            lh.extend_from_slice(&1u16.to_le_bytes());
            lh.extend_from_slice(&16u16.to_le_bytes());
            lh.extend_from_slice(&size.to_le_bytes());
            lh.extend_from_slice(&size.to_le_bytes());
            w.write_all(&lh)?;
            w.write_all(&header)?;
            w.write_all(&a.bytes)?;
            // central directory entry
            central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            central.extend_from_slice(&[45, 3]); // made by 4.5, Unix
            central.extend_from_slice(&45u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes());
            central.extend_from_slice(&0x21u16.to_le_bytes());
            central.extend_from_slice(&crc.to_le_bytes());
            central.extend_from_slice(&(size as u32).to_le_bytes());
            central.extend_from_slice(&(size as u32).to_le_bytes());
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&0u16.to_le_bytes()); // extra
            central.extend_from_slice(&0u16.to_le_bytes()); // comment
            central.extend_from_slice(&0u16.to_le_bytes()); // disk
            central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            central.extend_from_slice(&(0o600u32 << 16).to_le_bytes());
            central.extend_from_slice(&(offset as u32).to_le_bytes());
            central.extend_from_slice(name.as_bytes());
            offset += lh.len() as u64 + size;
        }
        if offset > 0xffff_ffff {
            bail!("{}: archive too large for this writer", path.display());
        }
        w.write_all(&central)?;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
        end.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
        end.extend_from_slice(&(central.len() as u32).to_le_bytes());
        end.extend_from_slice(&(offset as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        w.write_all(&end)?;
        w.flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The key of the per-sample features.
pub const FEATURES_KEY: &str = "features";

fn features_array(f: &Features) -> (&'static str, NpyArray) {
    (FEATURES_KEY, NpyArray::f32(vec![f.len(), f.dim], &f.data))
}

/// Writes reference statistics (`mu`, `sigma`) exactly as `np.savez(dest, mu=mu, sigma=sigma)`.
pub fn write_reference(path: &Path, s: &MuSigma) -> Result<()> {
    write_reference_with(path, s, None)
}

/// Writes reference statistics plus, when given, the per-sample `features` (as
/// `np.savez(dest, mu=…, sigma=…, features=…)`).
pub fn write_reference_with(path: &Path, s: &MuSigma, features: Option<&Features>) -> Result<()> {
    let d = s.dim();
    let mut arrays = vec![
        ("mu", NpyArray::f64(vec![d], &s.mu)),
        ("sigma", NpyArray::f64(vec![d, d], &s.sigma)),
    ];
    arrays.extend(features.map(features_array));
    write_savez(path, &arrays)
}

/// Writes partial statistics (`n`, `sum`, `sum_outer`).
pub fn write_partial(path: &Path, s: &mut FeatureStats) -> Result<()> {
    write_partial_with(path, s, None)
}

/// Writes partial statistics plus, when given, the per-sample `features` (`N` rows, `N = n`).
pub fn write_partial_with(path: &Path, s: &mut FeatureStats, features: Option<&Features>) -> Result<()> {
    let d = s.dim();
    if let Some(f) = features {
        if f.dim != d || f.len() as u64 != s.count() {
            bail!(
                "{}: {} features of dimension {} do not match statistics of {} vectors of dimension {d}",
                path.display(),
                f.len(),
                f.dim,
                s.count()
            );
        }
    }
    let outer = s.sum_outer();
    let mut arrays = vec![
        ("n", NpyArray::i64(vec![], &[s.count() as i64])),
        ("sum", NpyArray::f64(vec![d], s.sum())),
        ("sum_outer", NpyArray::f64(vec![d, d], &outer)),
    ];
    arrays.extend(features.map(features_array));
    write_savez(path, &arrays)
}

/// Statistics read from a file.
#[derive(Debug)]
pub enum StatsFile {
    /// `mu`, `sigma` (reference layout).
    Reference(MuSigma),
    /// `n`, `sum`, `sum_outer` (partial layout).
    Partial(FeatureStats),
}

fn f64s(a: &npz::Array, path: &Path) -> Result<Vec<f64>> {
    match &a.data {
        Data::F64(v) => Ok(v.clone()),
        Data::F32(v) => Ok(v.iter().map(|&x| x as f64).collect()),
        _ => bail!("{}: array {:?} must be float64", path.display(), a.name),
    }
}

fn check_finite(v: &[f64], what: &str, path: &Path) -> Result<()> {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: {what} has a non-finite value ({}) at flat index {i}",
            path.display(),
            v[i]
        );
    }
    Ok(())
}

/// Reads a reference or partial statistics file, checking shapes (`mu (D,)` with
/// `sigma (D, D)`, or `sum (D,)` with `sum_outer (D, D)` and `n ≥ 0`) and finiteness.
/// A file with only `features` gives the statistics of those vectors.
pub fn read(path: &Path) -> Result<StatsFile> {
    Ok(read_all(path)?.0)
}

/// The `features` array of `arrays`, if any: `(N, D)`, float32 (or float64, converted),
/// finite, and consistent with the statistics (same `D`; `N = n` for partial statistics).
fn features_of(arrays: &[npz::Array], stats: Option<&StatsFile>, path: &Path) -> Result<Option<Features>> {
    let Some(a) = arrays.iter().find(|a| a.name == FEATURES_KEY) else {
        return Ok(None);
    };
    let (n, d) = match a.shape[..] {
        [n, d] if d > 0 => (n, d),
        _ => bail!(
            "{}: features has shape {:?}; expected (N, D)",
            path.display(),
            a.shape
        ),
    };
    let data = match &a.data {
        Data::F32(v) => v.clone(),
        Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
        _ => bail!("{}: features must be float32", path.display()),
    };
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: features has a non-finite value ({}) in row {}",
            path.display(),
            data[i],
            i / d
        );
    }
    let (sd, sn) = match stats {
        Some(StatsFile::Reference(m)) => (m.dim(), None),
        Some(StatsFile::Partial(p)) => (p.dim(), Some(p.count())),
        None => (d, None),
    };
    if sd != d || sn.is_some_and(|c| c != n as u64) {
        bail!(
            "{}: features ({n} × {d}) do not match the statistics (dimension {sd}{})",
            path.display(),
            sn.map(|c| format!(", n = {c}")).unwrap_or_default()
        );
    }
    Ok(Some(Features::from_rows(d, data)?))
}

/// Reads statistics and, when the file has them, the per-sample features.
pub fn read_all(path: &Path) -> Result<(StatsFile, Option<Features>)> {
    let arrays = npz::read(path)?;
    let stats = read_stats(&arrays, path)?;
    let features = features_of(&arrays, stats.as_ref(), path)?;
    match (stats, features) {
        (Some(s), f) => Ok((s, f)),
        (None, Some(f)) => {
            let mut s = FeatureStats::new(f.dim);
            s.add_f32(&f.data);
            Ok((StatsFile::Partial(s), Some(f)))
        }
        (None, None) => bail!(
            "{}: neither FID reference statistics (mu, sigma), partial statistics (n, sum, sum_outer) nor features; has: {}",
            path.display(),
            arrays.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Reads the per-sample `features` of a statistics or features file, failing with a clear
/// message when the file has none.
pub fn read_features(path: &Path) -> Result<Features> {
    read_all(path)?.1.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no `features` array (per-sample detector features), which KID and precision/recall need; \
             write it with `tiw fid stats --keep-features` or `tiw fid ref --metrics fid,kid,prc`",
            path.display()
        )
    })
}

fn read_stats(arrays: &[npz::Array], path: &Path) -> Result<Option<StatsFile>> {
    let find = |k: &str| arrays.iter().find(|a| a.name == k);
    if let (Some(mu), Some(sigma)) = (find("mu"), find("sigma")) {
        let d = mu.shape.first().copied().unwrap_or(0);
        if mu.shape.len() != 1 || d == 0 {
            bail!("{}: mu has shape {:?}; expected (D,)", path.display(), mu.shape);
        }
        if sigma.shape != [d, d] {
            bail!(
                "{}: sigma has shape {:?} but mu has {d} entries; expected ({d}, {d})",
                path.display(),
                sigma.shape
            );
        }
        let (mu, sigma) = (f64s(mu, path)?, f64s(sigma, path)?);
        check_finite(&mu, "mu", path)?;
        check_finite(&sigma, "sigma", path)?;
        return Ok(Some(StatsFile::Reference(MuSigma { mu, sigma })));
    }
    if let (Some(n), Some(sum), Some(outer)) = (find("n"), find("sum"), find("sum_outer")) {
        let d = sum.shape.first().copied().unwrap_or(0);
        if sum.shape.len() != 1 || d == 0 {
            bail!("{}: sum has shape {:?}; expected (D,)", path.display(), sum.shape);
        }
        if outer.shape != [d, d] {
            bail!(
                "{}: sum_outer has shape {:?} but sum has {d} entries; expected ({d}, {d})",
                path.display(),
                outer.shape
            );
        }
        let count = match (&n.data, n.shape.iter().product::<usize>()) {
            (Data::I64(v), 1) if v[0] >= 0 => v[0] as u64,
            _ => bail!("{}: n must be a non-negative int64 scalar", path.display()),
        };
        let (sum, outer) = (f64s(sum, path)?, f64s(outer, path)?);
        check_finite(&sum, "sum", path)?;
        check_finite(&outer, "sum_outer", path)?;
        return Ok(Some(StatsFile::Partial(FeatureStats::from_parts(
            count, sum, &outer,
        ))));
    }
    Ok(None)
}

/// Reads a file as `mu`/`sigma` (converting partial statistics).
pub fn read_mu_sigma(path: &Path) -> Result<MuSigma> {
    match read(path)? {
        StatsFile::Reference(s) => Ok(s),
        StatsFile::Partial(mut p) => p.mu_sigma().with_context(|| format!("{}", path.display())),
    }
}
