//! Helpers shared by the integration tests: fixture paths, `.npz` reading (through `tiw::npz`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod runs;
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

/// A finished command's stderr, after asserting that it succeeded (`what` names it).
pub fn ok(out: std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{what} failed:\n{err}");
    err
}

/// Runs the `tiw` binary with `args` (with no `TIW_FID_DETECTOR` inherited, so FID commands
/// use what the arguments say): (success, stdout, stderr).
pub fn run_tiw(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiw"))
        .args(args)
        .env_remove("TIW_FID_DETECTOR")
        .output()
        .expect("run tiw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The random-weight Inception file of ../shared/fixtures (96 MB, kept outside the
/// repository), or `None` with a SKIPPED line when it is absent.
pub fn inception_weights() -> Option<PathBuf> {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/fid/inception/inception_random.pth");
    if p.exists() {
        Some(p)
    } else {
        println!(
            "SKIPPED: {} absent (the 96 MB Inception parity weights live outside the repository)",
            p.display()
        );
        None
    }
}
