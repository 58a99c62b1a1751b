//! Writing a `torch.save` zip of an `OrderedDict` state_dict, loadable by
//! `torch.load(path, weights_only=True)` and by our own reader.
//!
//! `data.pkl` is pickle protocol 2 using only `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2` and `torch.<Type>Storage` (all on torch's weights-only
//! allow-list). Each tensor gets its own storage `data/<i>` holding its contiguous bytes,
//! 64-byte aligned like torch writes them. Members are stored (uncompressed) with a fixed
//! timestamp, so the output is a deterministic function of the tensors.

use std::io::Write;
use std::path::Path;

use crate::store::TensorStore;
use crate::{Error, Result};

/// Minimal protocol-2 pickle emitter.
struct Pickler {
    out: Vec<u8>,
    memo: std::collections::HashMap<String, u32>,
}

impl Pickler {
    fn new() -> Self {
        Pickler {
            out: vec![0x80, 2],
            memo: Default::default(),
        }
    }

    fn put(&mut self) {
        let i = self.memo.len() as u32;
        if i < 256 {
            self.out.extend([b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend(i.to_le_bytes());
        }
    }

    fn get(&mut self, i: u32) {
        if i < 256 {
            self.out.extend([b'h', i as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend(i.to_le_bytes());
        }
    }

    /// A global, memoised so each is written once.
    fn global(&mut self, module: &str, name: &str) {
        let key = format!("{module}\n{name}");
        if let Some(&i) = self.memo.get(&key) {
            self.get(i);
            return;
        }
        self.out.push(b'c');
        self.out.extend(key.as_bytes());
        self.out.push(b'\n');
        let i = self.memo.len() as u32;
        self.put();
        self.memo.insert(key, i);
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend(s.as_bytes());
    }

    fn int(&mut self, v: u64) {
        if v < 256 {
            self.out.extend([b'K', v as u8]);
        } else if v < 65536 {
            self.out.push(b'M');
            self.out.extend((v as u16).to_le_bytes());
        } else if v < (1 << 31) {
            self.out.push(b'J');
            self.out.extend((v as i32).to_le_bytes());
        } else {
            // LONG1 with 9 bytes: little-endian two's complement, non-negative.
            self.out.extend([0x8a, 9]);
            self.out.extend(v.to_le_bytes());
            self.out.push(0);
        }
    }

    fn int_tuple(&mut self, v: &[usize]) {
        match v.len() {
            0 => self.out.push(b')'),
            1..=3 => {
                for &x in v {
                    self.int(x as u64);
                }
                self.out.push(0x84 + v.len() as u8);
            }
            _ => {
                self.out.push(b'(');
                for &x in v {
                    self.int(x as u64);
                }
                self.out.push(b't');
            }
        }
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend([b')', b'R']);
    }
}

/// The `data.pkl` bytes for `store` (storage keys `0..n`).
pub fn state_dict_pickle(store: &TensorStore) -> Vec<u8> {
    let mut p = Pickler::new();
    p.empty_ordered_dict();
    let entries = store.entries();
    for (chunk_i, chunk) in entries.chunks(1000).enumerate() {
        p.out.push(b'(');
        for (j, e) in chunk.iter().enumerate() {
            let key = chunk_i * 1000 + j;
            p.str(&e.name);
            p.global("torch._utils", "_rebuild_tensor_v2");
            p.out.push(b'(');
            // persistent id ('storage', torch.<T>Storage, key, 'cpu', numel)
            p.out.push(b'(');
            p.str("storage");
            p.global("torch", e.dtype.torch_storage_name());
            p.str(&key.to_string());
            p.str("cpu");
            p.int(e.numel() as u64);
            p.out.extend([b't', b'Q']);
            p.int(0);
            p.int_tuple(&e.shape);
            let mut strides = vec![1usize; e.shape.len()];
            for d in (0..e.shape.len().saturating_sub(1)).rev() {
                strides[d] = strides[d + 1] * e.shape[d + 1].max(1);
            }
            p.int_tuple(&strides);
            p.out.push(0x89); // requires_grad False
            p.empty_ordered_dict(); // backward hooks
            p.out.extend([b't', b'R']);
        }
        p.out.push(b'u');
    }
    p.out.push(b'.');
    p.out
}

/// Writes `store` as a torch.save zip to `path` (temp file + rename). The archive folder is
/// the file stem, as `torch.save(obj, path)` names it. `progress` gets byte counts.
pub fn write(store: &TensorStore, path: &Path, progress: &dyn Fn(u64)) -> Result<()> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty() && s.is_ascii())
        .unwrap_or("archive")
        .to_string();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        error: source,
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        let w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut z = zip::ZipWriter::new(w);
        let ts = zip::DateTime::from_date_and_time(1980, 1, 1, 0, 0, 0).unwrap();
        let opts = |len: usize| {
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .last_modified_time(ts)
                .with_alignment(64)
                .large_file(len as u64 >= u32::MAX as u64)
        };
        let zerr = |e: zip::result::ZipError| Error::format(format!("{}: writing zip: {e}", path.display()));
        let member = |z: &mut zip::ZipWriter<_>, name: String, data: &[u8]| -> Result<()> {
            z.start_file(name, opts(data.len())).map_err(zerr)?;
            z.write_all(data).map_err(io)?;
            Ok(())
        };
        member(&mut z, format!("{stem}/data.pkl"), &state_dict_pickle(store))?;
        member(&mut z, format!("{stem}/byteorder"), b"little")?;
        for (i, e) in store.entries().iter().enumerate() {
            let bytes = store.bytes(e);
            member(&mut z, format!("{stem}/data/{i}"), &bytes)?;
            progress(bytes.len() as u64);
        }
        member(&mut z, format!("{stem}/version"), b"3\n")?;
        let mut w = z.finish().map_err(zerr)?;
        w.flush().map_err(io)?;
    }
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
