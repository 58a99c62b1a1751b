//! Writers of the two training-data formats (for the demo and tests). Both write a temporary
//! file beside the target and rename it into place.
//!
//! * [`write_dataset_zip`]: `dataset_tool.py`'s layout — a ZIP_STORED archive of PNGs named
//!   `NNNNN/imgIIIIIIII.png` (`IIIIIIII` = index, 8 digits; `NNNNN` = its first 5 digits, i.e.
//!   `index / 1000`), followed by `dataset.json` = `{"labels": [["00000/img00000000.png", 3],
//!   …]}` (Python `json.dumps` spacing) or `{"labels": null}`. PNGs are 8-bit gray (C = 1) or
//!   RGB (C = 3), zlib level 0 like `compress_level=0`.
//! * [`write_samples_npz`]: `np.savez(samples=uint8 N×H×W×C)` (uncompressed).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

fn check_dims(len: usize, n: usize, h: usize, w: usize, c: usize) -> Result<()> {
    let want = n
        .checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .and_then(|x| x.checked_mul(c));
    if want != Some(len) {
        bail!("image buffer has {len} bytes, N×H×W×C = {n}×{h}×{w}×{c}");
    }
    Ok(())
}

fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))
}

/// Member name of image `i` in a `dataset_tool` archive: `format!("{:05}/img{:08}.png")`.
pub fn member_name(i: usize) -> String {
    format!("{:05}/img{i:08}.png", i / 1000)
}

/// Encodes one `H×W×C` uint8 image (C = 1 or 3) as PIL's `save(format='png',
/// compress_level=0)` does, byte for byte: `IHDR` (8-bit gray or RGB, no interlace), the zlib
/// stream in `IDAT` chunks of `max(65536, 4·W)` bytes, `IEND`. Each row's filter is PIL's
/// adaptive choice: the smallest sum of `min(v, 256 − v)` over the filtered bytes among None,
/// Up, Sub and Paeth, tried in that order (a later one wins only when strictly smaller). The
/// zlib stream (header `78 01`) holds the filtered rows in stored blocks as zlib level 0
/// emits them when fed row by row: a block as soon as the pending rows reach 32 KiB (at most
/// 65,535 bytes), then a final block with the rest (possibly empty), then the Adler-32.
pub fn encode_png(hwc: &[u8], h: usize, w: usize, c: usize) -> Result<Vec<u8>> {
    let color = match c {
        1 => 0u8,
        3 => 2u8,
        _ => bail!("PNG images need 1 or 3 channels, got {c}"),
    };
    check_dims(hwc.len(), 1, h, w, c)?;
    if h == 0 || w == 0 || h > u32::MAX as usize / 2 || w > u32::MAX as usize / 2 {
        bail!("cannot encode a {w}×{h} PNG");
    }
    let line = w * c;
    let mut zlib = Vec::with_capacity(h * (line + 1) + h * (line + 1) / 32768 * 5 + 16);
    zlib.extend_from_slice(&[0x78, 0x01]);
    let mut adler = Adler32::default();
    let mut pending: Vec<u8> = Vec::with_capacity(65536 + line + 1);
    let mut prev = vec![0u8; line];
    let mut bufs = [vec![0u8; line + 1], vec![0u8; line + 1], vec![0u8; line + 1]];
    for row in hwc.chunks_exact(line) {
        let chosen = filter_row(row, &prev, c, &mut bufs);
        let out: &[u8] = match chosen {
            0 => {
                pending.push(0);
                pending.extend_from_slice(row);
                &pending[pending.len() - line - 1..]
            }
            i => {
                pending.extend_from_slice(&bufs[i - 1]);
                &pending[pending.len() - line - 1..]
            }
        };
        adler.update(out);
        while pending.len() >= 32768 {
            let n = pending.len().min(65535);
            stored_block(&mut zlib, &pending[..n], false);
            pending.drain(..n);
        }
        prev.copy_from_slice(row);
    }
    stored_block(&mut zlib, &pending, true);
    zlib.extend_from_slice(&adler.finish().to_be_bytes());

    let mut out = Vec::with_capacity(zlib.len() + 64 + zlib.len() / 65536 * 12);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    for part in zlib.chunks(65536.max(4 * w)) {
        png_chunk(&mut out, b"IDAT", part);
    }
    png_chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// PIL's filter choice for one row (see [`encode_png`]): 0 = None (the row itself), else the
/// filter type whose bytes (type byte first) are left in `bufs[type − 1]` (1 = Sub, 2 = Up,
/// 3 = Paeth stored in `bufs[2]`).
fn filter_row(row: &[u8], prev: &[u8], bpp: usize, bufs: &mut [Vec<u8>; 3]) -> usize {
    let cost = |v: u8| -> u32 {
        if v < 128 {
            v as u32
        } else {
            256 - v as u32
        }
    };
    let mut best = 0usize;
    let mut sum: u32 = row.iter().map(|&v| cost(v)).sum();
    if sum > 0 {
        let up = &mut bufs[1];
        up[0] = 2;
        let mut s = 0;
        for i in 0..row.len() {
            let v = row[i].wrapping_sub(prev[i]);
            up[i + 1] = v;
            s += cost(v);
        }
        if s < sum {
            best = 2;
            sum = s;
        }
    }
    if sum > 0 {
        let sub = &mut bufs[0];
        sub[0] = 1;
        let mut s = 0;
        for i in 0..row.len() {
            let v = if i < bpp {
                row[i]
            } else {
                row[i].wrapping_sub(row[i - bpp])
            };
            sub[i + 1] = v;
            s += cost(v);
        }
        if s < sum {
            best = 1;
            sum = s;
        }
    }
    if sum > 0 {
        let pa = &mut bufs[2];
        pa[0] = 4;
        let mut s = 0;
        for i in 0..row.len() {
            let v = if i < bpp {
                row[i].wrapping_sub(prev[i])
            } else {
                let (a, b, cc) = (row[i - bpp] as i32, prev[i] as i32, prev[i - bpp] as i32);
                let (da, db, dc) = ((b - cc).abs(), (a - cc).abs(), (a + b - 2 * cc).abs());
                let p = if da <= db && da <= dc {
                    a
                } else if db <= dc {
                    b
                } else {
                    cc
                };
                row[i].wrapping_sub(p as u8)
            };
            pa[i + 1] = v;
            s += cost(v);
        }
        if s < sum {
            best = 3;
        }
    }
    best
}

fn stored_block(out: &mut Vec<u8>, data: &[u8], last: bool) {
    let n = data.len() as u16;
    out.push(last as u8);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(!n).to_le_bytes());
    out.extend_from_slice(data);
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// zlib's Adler-32.
struct Adler32 {
    a: u32,
    b: u32,
}

impl Default for Adler32 {
    fn default() -> Self {
        Adler32 { a: 1, b: 0 }
    }
}

impl Adler32 {
    fn update(&mut self, data: &[u8]) {
        for chunk in data.chunks(5552) {
            for &v in chunk {
                self.a += v as u32;
                self.b += self.a;
            }
            self.a %= 65521;
            self.b %= 65521;
        }
    }

    fn finish(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

/// A `dataset_tool.py` archive written member by member (bounded memory): a ZIP_STORED zip
/// built in a temporary file beside the target and renamed into place by [`Self::finish`]
/// (dropping the writer unfinished removes it). Members carry a fixed timestamp
/// (1980-01-01 00:00), so equal inputs give byte-identical archives.
pub struct DatasetZipWriter {
    path: std::path::PathBuf,
    zip: zip::ZipWriter<std::io::BufWriter<std::fs::File>>,
    tmp: tempfile::TempPath,
}

fn stored_options() -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644)
        .large_file(false)
}

impl DatasetZipWriter {
    /// Starts an archive that [`Self::finish`] will place at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_beside(path)?;
        let file = tmp.as_file().try_clone()?;
        Ok(DatasetZipWriter {
            path: path.to_path_buf(),
            zip: zip::ZipWriter::new(std::io::BufWriter::new(file)),
            tmp: tmp.into_temp_path(),
        })
    }

    /// Adds member `name` with `bytes`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let what = || format!("cannot write {}", self.path.display());
        self.zip.start_file(name, stored_options()).with_context(what)?;
        self.zip.write_all(bytes).with_context(what)
    }

    /// Writes `dataset.json` (see [`labels_json`]), closes the archive and renames it into
    /// place.
    pub fn finish(mut self, labels_json: &str) -> Result<()> {
        self.add("dataset.json", labels_json.as_bytes())?;
        let what = || format!("cannot write {}", self.path.display());
        self.zip.finish().with_context(what)?.flush().with_context(what)?;
        self.tmp.persist(&self.path).with_context(what)?;
        Ok(())
    }
}

/// `json.dumps({"labels": …})` as `dataset_tool.py` writes it: `{"labels": [["NAME", L],
/// …]}` or `{"labels": null}` when `labels` is `None`.
pub fn labels_json<'a>(labels: Option<impl IntoIterator<Item = (&'a str, i64)>>) -> String {
    match labels {
        Some(l) => {
            let items: Vec<String> = l
                .into_iter()
                .map(|(name, v)| format!("[{}, {v}]", serde_json::Value::from(name)))
                .collect();
            format!("{{\"labels\": [{}]}}", items.join(", "))
        }
        None => "{\"labels\": null}".to_string(),
    }
}

/// Writes `n` images (`images` = uint8 `N×H×W×C`, C = 1 or 3) and optional class labels as a
/// `dataset_tool.py` zip at `path` (see the module docs).
pub fn write_dataset_zip(
    path: &Path,
    images: &[u8],
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    labels: Option<&[u32]>,
) -> Result<()> {
    check_dims(images.len(), n, h, w, c)?;
    if let Some(l) = labels {
        if l.len() != n {
            bail!("{} labels for {n} images", l.len());
        }
    }
    let mut z = DatasetZipWriter::create(path)?;
    let per = h * w * c;
    for i in 0..n {
        z.add(
            &member_name(i),
            &encode_png(&images[i * per..(i + 1) * per], h, w, c)?,
        )?;
    }
    let names: Vec<String> = (0..n).map(member_name).collect();
    let json = labels_json(labels.map(|l| names.iter().map(String::as_str).zip(l.iter().map(|&v| v as i64))));
    z.finish(&json)
}

/// Writes uint8 `N×H×W×C` images as `np.savez(samples=…)` at `path`.
pub fn write_samples_npz(path: &Path, images: &[u8], n: usize, h: usize, w: usize, c: usize) -> Result<()> {
    check_dims(images.len(), n, h, w, c)?;
    crate::npz::write(
        path,
        &[crate::npz::Array {
            name: "samples".to_string(),
            shape: vec![n, h, w, c],
            data: crate::npz::Data::U8(images.to_vec()),
        }],
    )
}

/// The `.npy` (format 1.0) header of a C-order array: magic, version, header length, the
/// dict `{'descr': …, 'fortran_order': False, 'shape': (…), }` padded with spaces and a
/// newline to a multiple of 64 bytes.
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let hlen = dict.len() + pad + 1;
    let mut out = Vec::with_capacity(10 + hlen);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(hlen as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// `np.savez(samples=uint8 N×H×W×C[, labels=int64 N])` written image by image (bounded
/// memory) into a temporary file renamed into place by [`Self::finish`]; members are
/// ZIP_STORED with a fixed timestamp (byte-identical for equal inputs).
pub struct SamplesNpzWriter {
    path: std::path::PathBuf,
    zip: zip::ZipWriter<std::io::BufWriter<std::fs::File>>,
    tmp: tempfile::TempPath,
    n: usize,
    per: usize,
    written: usize,
    labels: Option<Vec<i64>>,
}

impl SamplesNpzWriter {
    /// Starts the file for `n` images of `h × w × c`; `with_labels`: each [`Self::push`]
    /// carries a label, written as `labels` (int64).
    pub fn create(path: &Path, n: usize, h: usize, w: usize, c: usize, with_labels: bool) -> Result<Self> {
        let per = h * w * c;
        let tmp = temp_beside(path)?;
        let file = tmp.as_file().try_clone()?;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
        let big = (n as u64).saturating_mul(per as u64) > u32::MAX as u64 - 4096;
        let what = || format!("cannot write {}", path.display());
        zip.start_file("samples.npy", stored_options().large_file(big))
            .with_context(what)?;
        zip.write_all(&npy_header("|u1", &[n, h, w, c]))
            .with_context(what)?;
        Ok(SamplesNpzWriter {
            path: path.to_path_buf(),
            zip,
            tmp: tmp.into_temp_path(),
            n,
            per,
            written: 0,
            labels: with_labels.then(Vec::new),
        })
    }

    /// Appends one `h × w × c` image (and its label when the file has labels).
    pub fn push(&mut self, hwc: &[u8], label: i64) -> Result<()> {
        if hwc.len() != self.per || self.written == self.n {
            bail!(
                "{}: image {} does not fit the declared array",
                self.path.display(),
                self.written
            );
        }
        self.zip
            .write_all(hwc)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        if let Some(l) = &mut self.labels {
            l.push(label);
        }
        self.written += 1;
        Ok(())
    }

    /// Writes `labels`, closes the archive and renames it into place.
    pub fn finish(mut self) -> Result<()> {
        if self.written != self.n {
            bail!(
                "{}: {} of {} images written",
                self.path.display(),
                self.written,
                self.n
            );
        }
        let what = || format!("cannot write {}", self.path.display());
        if let Some(l) = self.labels.take() {
            self.zip
                .start_file("labels.npy", stored_options())
                .with_context(what)?;
            self.zip
                .write_all(&npy_header("<i8", &[l.len()]))
                .with_context(what)?;
            let bytes: Vec<u8> = l.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.zip.write_all(&bytes).with_context(what)?;
        }
        self.zip.finish().with_context(what)?.flush().with_context(what)?;
        self.tmp.persist(&self.path).with_context(what)?;
        Ok(())
    }
}
