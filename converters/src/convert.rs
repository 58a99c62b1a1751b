//! File-to-file conversion: any readable checkpoint → `.safetensors` or `.pt`.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::checkpoint::{self, Selection};
use crate::{pt_write, safetensors_io, Error, Result};

/// Output container chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    /// `.safetensors`.
    Safetensors,
    /// `.pt` / `.pth` / `.bin`: torch.save zip state_dict.
    Pt,
}

impl OutFormat {
    /// Picks the format from `path`'s extension.
    pub fn from_path(path: &Path) -> Result<OutFormat> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("safetensors") => Ok(OutFormat::Safetensors),
            Some("pt" | "pth" | "bin") => Ok(OutFormat::Pt),
            other => Err(Error::Unsupported(format!(
                "output extension {:?}: use .safetensors or .pt",
                other.unwrap_or("")
            ))),
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// `kind[:key]` of what was extracted.
    pub what: String,
    /// Number of tensors written.
    pub tensors: usize,
    /// Total elements.
    pub numel: usize,
    /// Total tensor bytes written.
    pub bytes: usize,
    /// SHA-256 of the input file (hex).
    pub source_sha256: String,
}

/// SHA-256 of a byte slice, hex encoded.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Converts `input` to `output` (format from the extension). The input's SHA-256 is
/// computed on a second thread while the output is written. `progress(done, total)` is
/// called with tensor bytes written so far.
pub fn convert_file(
    input: &Path,
    output: &Path,
    sel: &Selection,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<ConvertReport> {
    let fmt = OutFormat::from_path(output)?;
    let ck = checkpoint::open(input)?;
    let ex = ck.extract(sel)?;
    let total = ex.store.total_bytes() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let tick = |n: u64| {
        let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        progress(d, total);
    };
    let source_name = input
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names: Vec<&str> = ex.store.entries().iter().map(|e| e.name.as_str()).collect();
    let sha = std::thread::scope(|s| -> Result<String> {
        let mut hasher = Some(s.spawn(|| sha256_hex(&ck.buf)));
        let mut sha = None;
        let mut join = || {
            let h = match hasher.take() {
                Some(t) => t.join().expect("sha256 thread panicked"),
                None => String::new(),
            };
            sha = Some(h.clone());
            h
        };
        match fmt {
            OutFormat::Pt => {
                pt_write::write(&ex.store, output, &tick)?;
                join();
            }
            OutFormat::Safetensors => {
                let meta =
                    safetensors_io::metadata(&ex.what, ex.config.as_ref(), Some((&source_name, "")), &names);
                safetensors_io::write(
                    &ex.store,
                    meta,
                    output,
                    &tick,
                    Some(("tiw.source_sha256", &mut join)),
                )?;
            }
        }
        Ok(sha.expect("hash joined"))
    })?;
    Ok(ConvertReport {
        what: ex.what,
        tensors: ex.store.len(),
        numel: ex.store.total_numel(),
        bytes: ex.store.total_bytes(),
        source_sha256: sha,
    })
}
