//! The `torch.save` zip format (default since torch 1.6).
//!
//! An ordinary zip archive whose members all share one top folder `<prefix>/`:
//! `<prefix>/data.pkl` (pickle protocol 2 of the object; storages as persistent ids
//! `('storage', <StorageClass>, key, location, numel)`), `<prefix>/data/<key>` (raw
//! little-endian bytes of each storage, usually 64-byte aligned) and small records
//! (`version`, `byteorder`, `.format_version`, `.storage_alignment`, `.data/serialization_id`).
//! Members must be stored (torch never compresses); their data is used in place.

use std::collections::HashMap;

use crate::pickle::{self, globals::Trace, Arena, Obj, Value};
use crate::torch_legacy::StorageIds;
use crate::{Error, Result};

/// One member of the archive.
#[derive(Debug, Clone)]
pub struct Member {
    /// Full name inside the archive.
    pub name: String,
    /// Absolute offset of its data.
    pub start: usize,
    /// Length of its data.
    pub len: usize,
}

/// The validated member table of a torch zip.
#[derive(Debug, Clone)]
pub struct ZipIndex {
    /// The common top folder (e.g. `archive`, or the file stem).
    pub prefix: String,
    /// Members by name.
    pub members: HashMap<String, Member>,
    /// Member names in archive order.
    pub names: Vec<String>,
}

impl ZipIndex {
    /// The member `<prefix>/<rel>`.
    pub fn get(&self, rel: &str) -> Option<&Member> {
        self.members.get(&format!("{}/{rel}", self.prefix))
    }

    /// The text of a small record, if present.
    pub fn record<'a>(&self, buf: &'a [u8], rel: &str) -> Option<&'a [u8]> {
        self.get(rel).map(|m| &buf[m.start..m.start + m.len])
    }
}

/// Whether `buf` looks like a zip archive (local header magic at the start, or an
/// end-of-central-directory record near the end, which also covers prefixed archives).
pub fn looks_like_zip(buf: &[u8]) -> bool {
    if buf.starts_with(b"PK\x03\x04") {
        return true;
    }
    let tail = &buf[buf.len().saturating_sub(65_557)..];
    tail.windows(4).any(|w| w == b"PK\x05\x06")
}

/// A name that occurs twice in the central directory starting at `dir_start`. The zip
/// crate keeps only the last entry of a name, and readers disagree on which one is meant,
/// so such an archive is ambiguous (one entry can be benign, the other not).
fn repeated_name(buf: &[u8], dir_start: u64) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let mut p = usize::try_from(dir_start).ok()?;
    while let Some(h) = buf.get(p..p.checked_add(46)?) {
        if h[..4] != *b"PK\x01\x02" {
            break;
        }
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]) as usize;
        let (name_len, extra_len, comment_len) = (le(28), le(30), le(32));
        let name = String::from_utf8_lossy(buf.get(p + 46..p + 46 + name_len)?);
        if !seen.insert(name.clone()) {
            return Some(name.into_owned());
        }
        p += 46 + name_len + extra_len + comment_len;
    }
    None
}

/// Reads and validates the member table: stored members only, inside the file, no
/// duplicate names, no overlapping data, exactly one `<prefix>/data.pkl`.
pub fn index(buf: &[u8]) -> Result<ZipIndex> {
    let zerr = |e: zip::result::ZipError| Error::format(format!("invalid zip archive: {e}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(buf)).map_err(zerr)?;
    if let Some(name) = repeated_name(buf, archive.central_directory_start()) {
        return Err(Error::format(format!("zip member {name:?} appears twice")));
    }
    let mut members = HashMap::new();
    let mut names = Vec::with_capacity(archive.len());
    let mut spans = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(zerr)?;
        let name = f.name().to_string();
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(Error::Unsupported(format!(
                "zip member {name:?} is compressed ({}); torch.save archives store members uncompressed",
                f.compression()
            )));
        }
        let start = f.data_start();
        let len = f.compressed_size();
        let end = start.checked_add(len).filter(|&e| e <= buf.len() as u64).ok_or_else(|| {
            Error::format(format!(
                "zip member {name:?} claims {len} bytes at offset {start}, beyond the end of the file ({} bytes)",
                buf.len()
            ))
        })?;
        if f.size() != len {
            return Err(Error::format(format!(
                "zip member {name:?}: stored size {len} differs from uncompressed size {}",
                f.size()
            )));
        }
        spans.push((start, end, name.clone()));
        let m = Member {
            name: name.clone(),
            start: start as usize,
            len: len as usize,
        };
        if members.insert(name.clone(), m).is_some() {
            return Err(Error::format(format!("zip member {name:?} appears twice")));
        }
        names.push(name);
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(Error::format(format!(
                "zip members {:?} and {:?} overlap",
                w[0].2, w[1].2
            )));
        }
    }
    let mut pkls: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .collect();
    if pkls.is_empty() {
        pkls = names.iter().filter(|n| *n == "data.pkl").collect();
    }
    let prefix = match pkls.as_slice() {
        [one] => one
            .strip_suffix("data.pkl")
            .unwrap()
            .trim_end_matches('/')
            .to_string(),
        [] => {
            return Err(Error::format(
                "zip archive has no <prefix>/data.pkl member: not a torch.save file",
            ))
        }
        many => {
            return Err(Error::format(format!(
                "zip archive has {} data.pkl members; which one is the checkpoint is ambiguous",
                many.len()
            )))
        }
    };
    Ok(ZipIndex {
        prefix,
        members,
        names,
    })
}

/// A decoded torch zip.
pub struct TorchZip {
    /// Member table.
    pub index: ZipIndex,
    /// The unpickled object.
    pub root: Value,
    /// Its storages.
    pub storages: StorageIds,
    /// Contents of the `version` record, if any.
    pub version: Option<String>,
}

/// Decodes a torch zip held in `buf`.
pub fn load(buf: &[u8], arena: &mut Arena, trace: &mut Trace) -> Result<TorchZip> {
    let index = index(buf)?;
    if let Some(b) = index.record(buf, "byteorder") {
        if b.trim_ascii() != b"little" {
            return Err(Error::Unsupported(format!(
                "byteorder record is {:?}; only little-endian checkpoints are supported",
                String::from_utf8_lossy(b)
            )));
        }
    }
    let version = index
        .record(buf, "version")
        .map(|v| String::from_utf8_lossy(v).trim().to_string());
    let pkl = index.get("data.pkl").unwrap().clone();
    let mut storages = StorageIds::default();
    let stream = pkl.name.clone();
    let out = pickle::run_vm(
        buf,
        pkl.start,
        pkl.start + pkl.len,
        &stream,
        arena,
        Some(&mut storages),
        trace,
    )?;
    for key in &storages.order {
        let id = storages.by_key[key];
        let Obj::Storage(s) = arena.get_mut(id) else {
            unreachable!()
        };
        let m = index.get(&format!("data/{key}")).ok_or_else(|| {
            Error::format(format!(
                "storage {key:?} is referenced by {stream} but member {}/data/{key} is missing",
                index.prefix
            ))
        })?;
        let need = s
            .numel
            .checked_mul(s.dtype.size() as u64)
            .ok_or_else(|| Error::format(format!("storage {key:?}: size overflows")))?;
        if (m.len as u64) < need {
            return Err(Error::format(format!(
                "storage {key:?} declares {} {} elements ({need} bytes) but its member holds {} bytes",
                s.numel, s.dtype, m.len
            )));
        }
        s.data = Some((m.start, need as usize));
    }
    Ok(TorchZip {
        index,
        root: out.value,
        storages,
        version,
    })
}
