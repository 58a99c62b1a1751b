//! `.npz` input/output for the parity commands (numpy's `savez` layout: one `.npy` per key).

use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// Array data of the dtypes the commands use.
#[derive(Debug, Clone)]
pub enum Data {
    /// float32.
    F32(Vec<f32>),
    /// float64.
    F64(Vec<f64>),
    /// int64.
    I64(Vec<i64>),
    /// uint8.
    U8(Vec<u8>),
}

/// One named array.
#[derive(Debug, Clone)]
pub struct Array {
    /// Key.
    pub name: String,
    /// Shape (empty for 0-d).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Data,
}

impl Array {
    /// Values converted to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::F64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// Values converted to f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Data::F64(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    /// Values converted to i64 (floats truncated toward zero).
    pub fn to_i64(&self) -> Vec<i64> {
        match &self.data {
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::F64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I64(v) => v.clone(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    /// The values as stored in the `.npy` member: little-endian bytes of the array's own dtype.
    pub fn le_bytes(&self) -> Vec<u8> {
        match &self.data {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U8(v) => v.clone(),
        }
    }
}

/// Reads every array of `path`, in archive order; an array of a dtype [`Data`] does not hold
/// is an error.
pub fn read(path: &Path) -> Result<Vec<Array>> {
    read_arrays(path, false)
}

/// [`read`], passing over arrays of dtypes [`Data`] does not hold (e.g. numpy strings, which
/// the official code's fixtures use for metadata) instead of failing on them.
pub fn read_numeric(path: &Path) -> Result<Vec<Array>> {
    read_arrays(path, true)
}

fn read_arrays(path: &Path, skip_other_dtypes: bool) -> Result<Vec<Array>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let zf =
        zip::ZipArchive::new(f).with_context(|| format!("{}: not an .npz (zip) file", path.display()))?;
    let names: Vec<String> = (0..zf.len())
        .filter_map(|i| zf.name_for_index(i))
        .filter_map(|n| n.strip_suffix(".npy").map(str::to_string))
        .collect();
    if names.is_empty() {
        bail!(
            "{}: not an .npz file (a zip archive without .npy members)",
            path.display()
        );
    }
    let mut npz =
        npyz::npz::NpzArchive::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for name in names {
        let npy = npz
            .by_name(&name)
            .with_context(|| format!("{}: array {name}", path.display()))?
            .with_context(|| format!("{}: array {name} missing", path.display()))?;
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let descr = npy.dtype().descr();
        let ctx = || format!("{}: array {name} ({descr})", path.display());
        let data = match descr.trim_matches('\'') {
            "<f4" => Data::F32(npy.into_vec().with_context(ctx)?),
            "<f8" => Data::F64(npy.into_vec().with_context(ctx)?),
            "<i8" => Data::I64(npy.into_vec().with_context(ctx)?),
            "|u1" => Data::U8(npy.into_vec().with_context(ctx)?),
            _ if skip_other_dtypes => continue,
            other => bail!("{}: array {name} has unsupported dtype {other}", path.display()),
        };
        out.push(Array { name, shape, data });
    }
    Ok(out)
}

/// The array `key` of a listing, or an error naming the file and the available keys.
pub fn get<'a>(arrays: &'a [Array], key: &str, path: &Path) -> Result<&'a Array> {
    arrays.iter().find(|a| a.name == key).with_context(|| {
        format!(
            "{}: no array {key:?} (has: {})",
            path.display(),
            arrays
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Writes f32 arrays as an uncompressed `.npz` (temp file + rename).
pub fn write_f32(path: &Path, arrays: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut npz = npyz::npz::NpzWriter::new(std::io::BufWriter::new(tmp.as_file()));
        for (name, shape, data) in arrays {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let mut w = npz
                .array::<f32>(name, Default::default())?
                .default_dtype()
                .shape(&shape)
                .begin_nd()?;
            w.extend(data.iter().copied())?;
            w.finish()?;
        }
        npz.zip_writer().finish()?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Writes arrays of any supported dtype as an uncompressed `.npz` (temp file + rename).
pub fn write(path: &Path, arrays: &[Array]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut npz = npyz::npz::NpzWriter::new(std::io::BufWriter::new(tmp.as_file()));
        for a in arrays {
            let shape: Vec<u64> = a.shape.iter().map(|&d| d as u64).collect();
            macro_rules! put {
                ($t:ty, $v:expr) => {{
                    let mut w = npz
                        .array::<$t>(&a.name, Default::default())?
                        .default_dtype()
                        .shape(&shape)
                        .begin_nd()?;
                    w.extend($v.iter().copied())?;
                    w.finish()?;
                }};
            }
            match &a.data {
                Data::F32(v) => put!(f32, v),
                Data::F64(v) => put!(f64, v),
                Data::I64(v) => put!(i64, v),
                Data::U8(v) => put!(u8, v),
            }
        }
        npz.zip_writer().finish()?;
    }
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
