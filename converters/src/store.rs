//! [`TensorStore`]: named tensors (dtype, shape, bytes) in state_dict order, as views into
//! the memory-mapped source file. Data is copied once, when written out.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::pickle::{Arena, Obj, Value};
use crate::{Error, Result};

/// The bytes of a source file: memory-mapped, or owned.
pub enum Buffer {
    /// A read-only memory map of a file.
    Mmap(memmap2::Mmap),
    /// Bytes in memory.
    Owned(Vec<u8>),
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Mmap(m) => m,
            Buffer::Owned(v) => v,
        }
    }
}

impl Buffer {
    /// Tells the kernel that `range` will not be read again soon, so that a memory-mapped
    /// buffer stops counting those pages in the process's resident set (`MADV_DONTNEED` on
    /// the pages inside the range). The bytes stay valid: a later read maps them again from
    /// the file. No effect on owned buffers; failures are ignored (it is only a hint).
    pub fn release(&self, range: std::ops::Range<usize>) {
        if let Buffer::Mmap(m) = self {
            let end = range.end.min(m.len());
            if range.start >= end {
                return;
            }
            // SAFETY: the map is read-only and shared with the file, so dropping its pages
            // loses nothing; they are faulted in again from the page cache when read.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, end - range.start)
            };
        }
    }

    /// Memory-maps `path` read-only (an empty file becomes an empty buffer).
    pub fn open(path: &Path) -> Result<Buffer> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            error: source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let meta = f.metadata().map_err(io)?;
        if meta.is_dir() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                error: std::io::Error::other("is a directory"),
            });
        }
        if meta.len() == 0 {
            return Ok(Buffer::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only; like every mmap reader we assume the file is not
        // truncated by another process while we read it.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Ok(Buffer::Mmap(m))
    }
}

/// Where a tensor's elements are.
#[derive(Debug, Clone)]
pub enum TensorData {
    /// A strided view of a storage in the shared buffer.
    View {
        /// Absolute byte offset of the storage.
        storage_start: usize,
        /// Byte length of the storage.
        storage_len: usize,
        /// Offset of the first element, in elements.
        offset: usize,
        /// Strides in elements.
        strides: Vec<usize>,
    },
    /// Owned contiguous little-endian bytes.
    Owned(Arc<Vec<u8>>),
}

/// One named tensor.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    /// state_dict name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element location.
    pub data: TensorData,
    /// Whether it is a parameter (`false` for buffers; `true` when unknown).
    pub is_parameter: bool,
}

impl TensorEntry {
    /// Number of elements (product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the contiguous data in bytes.
    pub fn nbytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// The contiguous little-endian bytes of this tensor, whose views point into `buf` (the
    /// buffer of the store it came from); borrowed when already contiguous.
    pub fn bytes_in<'a>(&'a self, buf: &'a [u8]) -> Cow<'a, [u8]> {
        let es = self.dtype.size();
        match &self.data {
            TensorData::Owned(v) => Cow::Borrowed(v.as_slice()),
            TensorData::View {
                storage_start,
                storage_len,
                offset,
                strides,
            } => {
                let storage = &buf[*storage_start..*storage_start + *storage_len];
                let n = self.numel();
                if n == 0 {
                    // the offset of an empty view is not validated
                    return Cow::Borrowed(&[]);
                }
                if self.is_contiguous() {
                    return Cow::Borrowed(&storage[offset * es..(offset + n) * es]);
                }
                let mut out = Vec::with_capacity(n * es);
                let mut idx = vec![0usize; self.shape.len()];
                for _ in 0..n {
                    let el = offset + idx.iter().zip(strides).map(|(i, s)| i * s).sum::<usize>();
                    out.extend_from_slice(&storage[el * es..(el + 1) * es]);
                    for d in (0..idx.len()).rev() {
                        idx[d] += 1;
                        if idx[d] < self.shape[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// The byte range of `buf` this tensor's storage occupies (`None` for owned data).
    pub fn storage_range(&self) -> Option<std::ops::Range<usize>> {
        match &self.data {
            TensorData::Owned(_) => None,
            TensorData::View {
                storage_start,
                storage_len,
                ..
            } => Some(*storage_start..*storage_start + *storage_len),
        }
    }

    /// Whether the data is one contiguous row-major range.
    pub fn is_contiguous(&self) -> bool {
        match &self.data {
            TensorData::Owned(_) => true,
            TensorData::View { strides, .. } => {
                let mut expect = 1usize;
                for (d, s) in self.shape.iter().zip(strides).rev() {
                    if *d != 1 && *s != expect {
                        return false;
                    }
                    expect *= *d;
                }
                true
            }
        }
    }
}

/// An ordered set of named tensors backed by one buffer.
#[derive(Clone)]
pub struct TensorStore {
    buf: Arc<Buffer>,
    entries: Vec<TensorEntry>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl TensorStore {
    /// An empty store over `buf`.
    pub fn new(buf: Arc<Buffer>) -> Self {
        TensorStore {
            buf,
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// A store of owned tensors: `(name, dtype, shape, little-endian bytes)`.
    pub fn from_owned(tensors: Vec<(String, DType, Vec<usize>, Vec<u8>)>) -> Result<Self> {
        let mut s = TensorStore::new(Arc::new(Buffer::Owned(Vec::new())));
        for (name, dtype, shape, bytes) in tensors {
            let numel =
                checked_numel(&shape).ok_or_else(|| Error::format(format!("{name}: shape overflows")))?;
            if numel * dtype.size() != bytes.len() {
                return Err(Error::format(format!(
                    "{name}: {} bytes for shape {shape:?} of {dtype}",
                    bytes.len()
                )));
            }
            s.push(TensorEntry {
                name,
                dtype,
                shape,
                data: TensorData::Owned(Arc::new(bytes)),
                is_parameter: true,
            })?;
        }
        Ok(s)
    }

    /// Adds an entry; names must be unique.
    pub fn push(&mut self, e: TensorEntry) -> Result<()> {
        if self.index.contains_key(&e.name) {
            return Err(Error::format(format!("tensor name {:?} occurs twice", e.name)));
        }
        self.index.insert(e.name.clone(), self.entries.len());
        self.entries.push(e);
        Ok(())
    }

    /// Adds a tensor found by the pickle VM, validating its view against its storage.
    pub fn push_pickled(&mut self, arena: &Arena, name: String, v: Value, is_parameter: bool) -> Result<()> {
        let t = match arena.obj(v) {
            Some(Obj::Tensor(t)) => t,
            _ => {
                return Err(Error::format(format!(
                    "{name:?} is {} where a tensor was expected",
                    arena.describe(v)
                )))
            }
        };
        let Obj::Storage(s) = arena.get(t.storage) else {
            return Err(Error::format(format!("{name:?}: tensor without storage")));
        };
        let (start, len) = s
            .data
            .ok_or_else(|| Error::format(format!("{name:?}: storage {:?} has no data", s.key)))?;
        let bad = |why: &str| Error::format(format!("{name:?}: {why}"));
        let shape: Vec<usize> = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad("dimension too large")))
            .collect::<Result<_>>()?;
        let strides: Vec<usize> = t
            .stride
            .iter()
            .map(|&s| usize::try_from(s).map_err(|_| bad("negative stride")))
            .collect::<Result<_>>()?;
        let numel = checked_numel(&shape).ok_or_else(|| bad("element count overflows"))?;
        let offset = usize::try_from(t.offset).map_err(|_| bad("offset too large"))?;
        let storage_numel = len / s.dtype.size();
        if numel > 0 {
            let mut last = offset;
            for (d, st) in shape.iter().zip(&strides) {
                last = (d - 1)
                    .checked_mul(*st)
                    .and_then(|x| x.checked_add(last))
                    .ok_or_else(|| bad("view extent overflows"))?;
            }
            if last >= storage_numel {
                return Err(bad(&format!(
                    "view of shape {shape:?}, stride {strides:?}, offset {offset} reaches element {last} of a storage with {storage_numel} elements"
                )));
            }
        }
        // Only an overlapping view (e.g. stride 0) has more elements than its storage; its
        // contiguous copy would be unbounded by the file (and its byte size may overflow).
        if numel > storage_numel {
            return Err(bad(&format!(
                "view of shape {shape:?}, stride {strides:?} has {numel} elements, more than the {storage_numel} of its storage (expanded or overlapping views are not supported)"
            )));
        }
        self.push(TensorEntry {
            name,
            dtype: s.dtype,
            shape,
            data: TensorData::View {
                storage_start: start,
                storage_len: len,
                offset,
                strides,
            },
            is_parameter,
        })
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// Entry by name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of elements.
    pub fn total_numel(&self) -> usize {
        self.entries.iter().map(|e| e.numel()).sum()
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.nbytes()).sum()
    }

    /// Keeps only the entries for which `keep` is true, renaming them with `rename`.
    pub fn filter_map(&self, mut f: impl FnMut(&TensorEntry) -> Option<String>) -> Result<TensorStore> {
        let mut out = TensorStore::new(self.buf.clone());
        for e in &self.entries {
            if let Some(name) = f(e) {
                out.push(TensorEntry { name, ..e.clone() })?;
            }
        }
        Ok(out)
    }

    /// Appends all entries of `other` (which must share this store's buffer or own its data).
    pub fn extend(&mut self, other: TensorStore) -> Result<()> {
        if !Arc::ptr_eq(&self.buf, &other.buf)
            && other
                .entries
                .iter()
                .any(|e| matches!(e.data, TensorData::View { .. }))
        {
            return Err(Error::format("cannot merge tensor stores over different files"));
        }
        for e in other.entries {
            self.push(e)?;
        }
        Ok(())
    }

    /// The contiguous little-endian bytes of `e` (borrowed when already contiguous).
    pub fn bytes<'a>(&'a self, e: &'a TensorEntry) -> Cow<'a, [u8]> {
        e.bytes_in(&self.buf)
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &Arc<Buffer> {
        &self.buf
    }
}

/// Product of a shape, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}
