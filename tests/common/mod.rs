//! Helpers shared by the integration tests: fixture paths, `.npz` reading (through `tiw::npz`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod tolerances;

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// One array of an `.npz` file (the library's type).
pub use tiw::npz::Array as NpzArray;

/// Every numeric array of an `.npz` (in archive order), through `tiw::npz`; arrays of other
/// dtypes (the fixtures' string metadata) are passed over.
pub fn read_npz(path: &Path) -> Vec<NpzArray> {
    tiw::npz::read_numeric(path).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Hex SHA-256.
pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The array called `name` of an npz listing.
pub fn arr<'a>(arrays: &'a [NpzArray], name: &str) -> &'a NpzArray {
    arrays
        .iter()
        .find(|a| a.name == name)
        .unwrap_or_else(|| panic!("no array {name}"))
}
