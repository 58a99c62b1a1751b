//! safetensors reading and writing (through the `safetensors` crate).
//!
//! Written files carry in `__metadata__`: `format` = `pt`, `tiw.kind`, `tiw.config` (the
//! recovered configuration as Python-compatible JSON), `tiw.source`, `tiw.source_sha256`,
//! `tiw.converter` and `tiw.names` (the state_dict order, since safetensors stores tensors
//! sorted by dtype and name).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::pyjson::Json;
use crate::store::{Buffer, TensorData, TensorEntry, TensorStore};
use crate::{Error, Result};

/// Reads a safetensors file held in `buf`; tensors stay views into it. The order is the
/// one recorded in `tiw.names` when present and consistent, else by data offset.
pub fn read(buf: Arc<Buffer>) -> Result<(TensorStore, BTreeMap<String, String>)> {
    let st = safetensors::SafeTensors::deserialize(&buf)
        .map_err(|e| Error::format(format!("invalid safetensors file: {e}")))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&buf)
        .map_err(|e| Error::format(format!("invalid safetensors header: {e}")))?;
    let metadata: BTreeMap<String, String> =
        meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let base = buf.as_ptr() as usize;
    let mut views: Vec<(usize, String, DType, Vec<usize>, usize)> = Vec::new();
    for (name, view) in st.iter() {
        let dtype =
            DType::from_safetensors(view.dtype()).map_err(|e| Error::format(format!("{name}: {e}")))?;
        let data = view.data();
        let start = data.as_ptr() as usize - base;
        views.push((start, name.to_string(), dtype, view.shape().to_vec(), data.len()));
    }
    views.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    if let Some(Json::Array(names)) = metadata.get("tiw.names").and_then(|t| Json::parse(t).ok()) {
        {
            let pos: HashMap<&str, usize> = names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.as_str().map(|s| (s, i)))
                .collect();
            if pos.len() == views.len() && views.iter().all(|v| pos.contains_key(v.1.as_str())) {
                views.sort_by_key(|v| pos[v.1.as_str()]);
            }
        }
    }
    let mut store = TensorStore::new(buf.clone());
    for (start, name, dtype, shape, len) in views {
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        store.push(TensorEntry {
            name,
            dtype,
            shape,
            data: TensorData::View {
                storage_start: start,
                storage_len: len,
                offset: 0,
                strides,
            },
            is_parameter: true,
        })?;
    }
    Ok((store, metadata))
}

/// Metadata of a written file.
pub fn metadata(
    kind: &str,
    config: Option<&Json>,
    source: Option<(&str, &str)>,
    names: &[&str],
) -> HashMap<String, String> {
    let mut m = HashMap::new();
    m.insert("format".into(), "pt".into());
    m.insert("tiw.kind".into(), kind.into());
    m.insert(
        "tiw.converter".into(),
        format!("tiw-converters {}", env!("CARGO_PKG_VERSION")),
    );
    if let Some(c) = config {
        m.insert("tiw.config".into(), c.to_text());
    }
    if let Some((name, sha)) = source {
        m.insert("tiw.source".into(), name.into());
        m.insert("tiw.source_sha256".into(), sha.into());
    }
    let names = Json::Array(names.iter().map(|n| Json::Str(n.to_string())).collect());
    m.insert("tiw.names".into(), names.to_text());
    m
}

/// Placeholder written for a metadata value that is only known after the data
/// (see [`write`]'s `late`); exactly 64 characters, the length of a hex SHA-256.
pub const LATE_PLACEHOLDER: &str = "tiw:late-value-placeholder:0000000000000000000000000000000000000";

/// Writes `store` to `path` as safetensors (temp file + rename).
///
/// Tensors are laid out by decreasing element size (so every tensor is naturally aligned),
/// then in state_dict order. The header is JSON: `__metadata__` then one
/// `{dtype, shape, data_offsets}` entry per tensor, padded with spaces to a multiple of 8.
/// `late`, if given, is `(metadata key, f)`: the key is written with [`LATE_PLACEHOLDER`]
/// and `f()` (a 64-character string, e.g. a SHA-256 computed concurrently) replaces it
/// before the file is renamed into place. `progress` gets byte counts. On any error the
/// temporary file is removed and `path` is left as it was.
pub fn write(
    store: &TensorStore,
    meta: HashMap<String, String>,
    path: &Path,
    progress: &dyn Fn(u64),
    late: Option<(&str, &mut dyn FnMut() -> String)>,
) -> Result<()> {
    write_with_faults(store, meta, path, progress, late, &WriteFaults::default())
}

/// Test hook: faults injected into [`write_with_faults`] (tests of the callers' error
/// handling; every field `None` in normal use).
#[derive(Debug, Clone, Default)]
pub struct WriteFaults {
    /// Fail with "no space left on device" (`ErrorKind::StorageFull`) once this many bytes
    /// of the temporary file are written.
    pub fail_after_bytes: Option<u64>,
    /// Sleep this long after the data is written, before the rename (a window for signals).
    pub delay_before_rename: Option<std::time::Duration>,
}

/// A writer that fails like a full disk after a byte budget (the [`WriteFaults`] hook).
struct FaultyWriter<W> {
    inner: W,
    left: Option<u64>,
}

impl<W: std::io::Write> std::io::Write for FaultyWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(left) = &mut self.left {
            if *left < buf.len() as u64 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device (injected by the WriteFaults test hook)",
                ));
            }
            *left -= buf.len() as u64;
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// [`write`] with injected `faults` (a test hook; see [`WriteFaults`]).
pub fn write_with_faults(
    store: &TensorStore,
    mut meta: HashMap<String, String>,
    path: &Path,
    progress: &dyn Fn(u64),
    late: Option<(&str, &mut dyn FnMut() -> String)>,
    faults: &WriteFaults,
) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let mut order: Vec<&TensorEntry> = store.entries().iter().collect();
    order.sort_by_key(|e| std::cmp::Reverse(e.dtype.size()));
    let mut header = serde_json::Map::new();
    if let Some((key, _)) = &late {
        meta.insert(key.to_string(), LATE_PLACEHOLDER.to_string());
    }
    let meta_sorted: BTreeMap<String, String> = meta.into_iter().collect();
    header.insert("__metadata__".into(), serde_json::to_value(&meta_sorted).unwrap());
    let mut offset = 0usize;
    for e in &order {
        let n = e.nbytes();
        header.insert(
            e.name.clone(),
            serde_json::json!({
                "dtype": e.dtype.safetensors_name(),
                "shape": e.shape,
                "data_offsets": [offset, offset + n],
            }),
        );
        offset += n;
    }
    let mut hbytes = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| Error::format(format!("safetensors header: {e}")))?;
    while hbytes.len() % 8 != 0 {
        hbytes.push(b' ');
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        let sink = FaultyWriter {
            inner: tmp.as_file(),
            left: faults.fail_after_bytes,
        };
        let mut w = std::io::BufWriter::with_capacity(1 << 20, sink);
        w.write_all(&(hbytes.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&hbytes).map_err(io)?;
        for e in &order {
            let d = store.bytes(e);
            w.write_all(&d).map_err(io)?;
            progress(d.len() as u64);
        }
        w.flush().map_err(io)?;
    }
    if let Some((key, f)) = late {
        let value = f();
        if value.len() != LATE_PLACEHOLDER.len() || value.contains(['"', '\\']) {
            return Err(Error::format(format!(
                "late metadata value for {key} must be 64 plain characters"
            )));
        }
        let needle = LATE_PLACEHOLDER.as_bytes();
        let at = hbytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("placeholder is in the header");
        let mut file = tmp.as_file();
        file.seek(SeekFrom::Start(8 + at as u64)).map_err(io)?;
        file.write_all(value.as_bytes()).map_err(io)?;
    }
    if let Some(d) = faults.delay_before_rename {
        std::thread::sleep(d);
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
