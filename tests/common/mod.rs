//! Helpers shared by the integration tests: fixture paths and `.npz` reading.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// One array of an `.npz` file: dtype descr (`<f4`, ...), shape and little-endian bytes.
pub struct NpzArray {
    pub name: String,
    pub descr: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl NpzArray {
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.descr, "<f4", "{} is {}", self.name, self.descr);
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn f64s(&self) -> Vec<f64> {
        assert_eq!(self.descr, "<f8", "{} is {}", self.name, self.descr);
        self.bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

/// Reads every array of an `.npz` (in archive order) with npyz.
pub fn read_npz(path: &Path) -> Vec<NpzArray> {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Archive order (npyz lists names in hash order).
    let zf = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let names: Vec<String> = (0..zf.len())
        .map(|i| zf.name_for_index(i).unwrap().trim_end_matches(".npy").to_string())
        .collect();
    let mut out = Vec::new();
    for name in names {
        let npy = npz.by_name(&name).unwrap().unwrap();
        let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
        let descr = npy.dtype().descr().trim_matches('\'').to_string();
        let bytes: Vec<u8> = match descr.as_str() {
            "<f4" => npy
                .into_vec::<f32>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "<f8" => npy
                .into_vec::<f64>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "<i8" => npy
                .into_vec::<i64>()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
            "|u1" => npy.into_vec::<u8>().unwrap(),
            _ => continue,
        };
        out.push(NpzArray {
            name,
            descr,
            shape,
            bytes,
        });
    }
    out
}

/// Hex SHA-256.
pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// Max |a − b| / max |b| (0 when both are all zeros).
pub fn norm_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0f64, |m, x| m.max((*x as f64).abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The array called `name` of an npz listing.
pub fn arr<'a>(arrays: &'a [NpzArray], name: &str) -> &'a NpzArray {
    arrays
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no array {name}"))
}

impl NpzArray {
    /// Values as f32 (f64 and i64 arrays converted).
    pub fn as_f32(&self) -> Vec<f32> {
        match self.descr.as_str() {
            "<f4" => self.f32s(),
            "<f8" => self.f64s().into_iter().map(|x| x as f32).collect(),
            "<i8" => self
                .bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            "|u1" => self.bytes.iter().map(|&x| x as f32).collect(),
            d => panic!("{}: dtype {d}", self.name),
        }
    }
}
