//! The legacy (non-zip) `torch.save` format, also used for the storage payloads inside EDM
//! snapshots (`torch.storage._load_from_bytes`).
//!
//! Layout: five consecutive pickles — magic number `0x1950a86a20f9469cfc6c`, protocol
//! version `1001`, `sys_info` dict, the object (storages as persistent ids
//! `('storage', <StorageClass>, key, location, numel, view_metadata)`), the list of storage
//! keys — followed, for each key in that list's order, by `numel` as little-endian i64 and
//! `numel × element size` raw little-endian bytes.

use std::collections::HashMap;

use crate::dtype::DType;
use crate::pickle::{self, globals::Trace, Arena, Obj, ObjId, Storage, Value};
use crate::{Error, Result};

/// The magic number that starts a legacy file.
pub const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The only legacy protocol version.
pub const PROTOCOL_VERSION: i64 = 1001;

/// Resolves `('storage', cls, key, location, numel, ...)` persistent ids; storages with the
/// same key are one object.
#[derive(Default)]
pub struct StorageIds {
    /// Storage objects by key, in first-encounter order.
    pub by_key: HashMap<String, ObjId>,
    /// Keys in first-encounter order.
    pub order: Vec<String>,
    /// Whether the 6-element legacy form is expected (else the 5-element zip form).
    pub legacy: bool,
}

impl StorageIds {
    /// Parses a storage persistent id into (dtype, key, location, numel).
    pub fn parse_pid(
        arena: &Arena,
        pid: Value,
        legacy: bool,
    ) -> std::result::Result<(DType, String, String, u64), String> {
        let t = arena
            .as_seq(pid)
            .ok_or_else(|| format!("persistent id is not a tuple ({})", arena.describe(pid)))?;
        let want = if legacy { 6 } else { 5 };
        if t.len() != want && !(legacy && t.len() == 5) {
            return Err(format!(
                "storage persistent id has {} fields, expected {want}",
                t.len()
            ));
        }
        if arena.as_str(t[0]) != Some("storage") {
            return Err(format!(
                "persistent id tag is {} (expected 'storage')",
                arena.describe(t[0])
            ));
        }
        let dtype = match arena.obj(t[1]) {
            Some(Obj::Global { module, name }) if module == "torch" => {
                DType::from_torch_storage_name(name)
                    .ok_or_else(|| format!("unknown storage class torch.{name}"))?
            }
            _ => {
                return Err(format!(
                    "storage class is {} (expected a torch.*Storage global)",
                    arena.describe(t[1])
                ))
            }
        };
        let key = arena.as_str(t[2]).ok_or("storage key is not a str")?.to_string();
        let location = arena.as_str(t[3]).unwrap_or("?").to_string();
        let numel = match t[4] {
            Value::Int(n) if n >= 0 => n as u64,
            other => {
                return Err(format!(
                    "storage numel is {} (expected a non-negative int)",
                    arena.describe(other)
                ))
            }
        };
        if legacy && t.len() == 6 && t[5] != Value::None {
            return Err("storage views (view_metadata) are not supported".into());
        }
        Ok((dtype, key, location, numel))
    }
}

impl pickle::PersistentLoader for StorageIds {
    fn load(&mut self, arena: &mut Arena, pid: Value) -> std::result::Result<Value, String> {
        let (dtype, key, location, numel) = Self::parse_pid(arena, pid, self.legacy)?;
        if let Some(&id) = self.by_key.get(&key) {
            match arena.get(id) {
                Obj::Storage(s) if s.dtype == dtype && s.numel == numel => return Ok(Value::Ref(id)),
                _ => {
                    return Err(format!(
                        "storage key {key:?} reused with a different dtype or size"
                    ))
                }
            }
        }
        let v = arena.push(Obj::Storage(Storage {
            dtype,
            numel,
            key: key.clone(),
            location,
            data: None,
        }));
        let Value::Ref(id) = v else { unreachable!() };
        self.by_key.insert(key.clone(), id);
        self.order.push(key);
        Ok(v)
    }
}

/// A decoded legacy file (or payload).
pub struct Legacy {
    /// The unpickled object.
    pub root: Value,
    /// Its storages.
    pub storages: StorageIds,
    /// Absolute offset after the data section.
    pub end: usize,
}

/// Decodes the legacy format in `buf[start..start + len]`; storage data spans are absolute.
pub fn load_legacy(
    buf: &[u8],
    start: usize,
    len: usize,
    arena: &mut Arena,
    trace: &mut Trace,
    stream: &str,
) -> Result<Legacy> {
    let end = start
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| Error::format(format!("{stream}: range outside the file")))?;
    let mut pos = start;
    #[allow(clippy::too_many_arguments)]
    fn next<'b>(
        buf: &[u8],
        pos: &mut usize,
        end: usize,
        stream: &str,
        what: &str,
        arena: &'b mut Arena,
        trace: &'b mut Trace,
        loader: Option<&'b mut dyn pickle::PersistentLoader>,
    ) -> Result<Value> {
        let out = pickle::run_vm(
            buf,
            *pos,
            end,
            &format!("{stream} ({what})"),
            arena,
            loader,
            trace,
        )?;
        *pos = out.end;
        Ok(out.value)
    }
    let magic = next(buf, &mut pos, end, stream, "magic number", arena, trace, None)?;
    let ok = matches!(arena.obj(magic), Some(Obj::BigInt(Some(m), _)) if *m == MAGIC);
    if !ok {
        return Err(Error::format(format!(
            "{stream}: not a torch.save file (magic number is {}, expected {MAGIC})",
            arena.describe(magic)
        )));
    }
    let proto = next(buf, &mut pos, end, stream, "protocol version", arena, trace, None)?;
    if proto != Value::Int(PROTOCOL_VERSION) {
        return Err(Error::Unsupported(format!(
            "{stream}: legacy protocol version {} (only {PROTOCOL_VERSION} exists)",
            arena.describe(proto)
        )));
    }
    let sys_info = next(buf, &mut pos, end, stream, "sys_info", arena, trace, None)?;
    if let Some(Value::Bool(false)) = arena.dict_get(sys_info, "little_endian") {
        return Err(Error::Unsupported(format!("{stream}: big-endian legacy files")));
    }
    let mut storages = StorageIds {
        legacy: true,
        ..Default::default()
    };
    let root = next(
        buf,
        &mut pos,
        end,
        stream,
        "object",
        arena,
        trace,
        Some(&mut storages),
    )?;
    let keys_v = next(buf, &mut pos, end, stream, "storage keys", arena, trace, None)?;
    let keys: Vec<String> = arena
        .as_seq(keys_v)
        .ok_or_else(|| Error::format(format!("{stream}: storage key list is not a list")))?
        .iter()
        .map(|k| {
            arena
                .as_str(*k)
                .map(str::to_string)
                .ok_or_else(|| Error::format(format!("{stream}: storage key is not a str")))
        })
        .collect::<Result<_>>()?;
    let mut p = pos;
    for key in &keys {
        let hdr = buf.get(p..p + 8).filter(|_| p + 8 <= end).ok_or_else(|| {
            Error::format(format!(
                "{stream}: truncated: storage {key:?} header at byte {p} is past the end"
            ))
        })?;
        let numel = i64::from_le_bytes(hdr.try_into().unwrap());
        p += 8;
        let id = *storages.by_key.get(key).ok_or_else(|| {
            Error::format(format!("{stream}: data for storage {key:?} that no tensor uses"))
        })?;
        let Obj::Storage(s) = arena.get_mut(id) else {
            unreachable!()
        };
        if numel < 0 || numel as u64 != s.numel {
            return Err(Error::format(format!(
                "{stream}: storage {key:?} has {numel} elements in the data section but {} in its id",
                s.numel
            )));
        }
        let nbytes = (numel as u64)
            .checked_mul(s.dtype.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= end - p)
            .ok_or_else(|| {
                Error::format(format!(
                    "{stream}: truncated: storage {key:?} declares {numel} elements, more than the {} bytes left",
                    end - p
                ))
            })?;
        if s.data.is_some() {
            return Err(Error::format(format!("{stream}: storage {key:?} listed twice")));
        }
        s.data = Some((p, nbytes));
        p += nbytes;
    }
    for key in &storages.order {
        if let Obj::Storage(s) = arena.get(storages.by_key[key]) {
            if s.data.is_none() {
                return Err(Error::format(format!(
                    "{stream}: storage key {key:?} is missing from the data section"
                )));
            }
        }
    }
    Ok(Legacy {
        root,
        storages,
        end: p,
    })
}

/// Decodes a `_load_from_bytes` payload: a legacy file whose object is one storage.
pub fn load_storage_payload(
    buf: &[u8],
    start: usize,
    len: usize,
    arena: &mut Arena,
    trace: &mut Trace,
) -> Result<Value> {
    let l = load_legacy(buf, start, len, arena, trace, "storage payload")?;
    match arena.obj(l.root) {
        Some(Obj::Storage(_)) => Ok(l.root),
        _ => Err(Error::format(format!(
            "storage payload holds {} instead of a storage",
            arena.describe(l.root)
        ))),
    }
}
