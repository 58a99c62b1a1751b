//! EDM's `ImageFolderDataset` (SPEC §5.4): the score-model training images.
//!
//! * **Source**: a directory or a `.zip` (`dataset_tool.py` output). The image files are every
//!   file (recursively for a directory; every member for a zip) whose lower-cased extension is
//!   a PIL image extension, sorted by relative `/`-separated path (code-point order). Only
//!   **PNG** content can be decoded (the `png` crate; EDM datasets are PNG): another format, an
//!   alpha channel (RGBA / gray+alpha) or a 16-bit image reduced to 8 bits is documented in
//!   [`crate::data::images::decode`]; palette images are expanded to RGB.
//! * **Shape**: raw shape `[N, C, H, W]` from the first image (`H×W` gray → `C = 1`). Every image
//!   must have that shape (checked from the PNG header before decoding) and it must be square.
//!   An image may hold at most [`MAX_PIXELS`] pixels.
//! * **Labels** (`use_labels` only): the top-level `dataset.json`, `{"labels": [[fname, label],
//!   …]}` or `{"labels": null}`, looked up by file name. Integer labels become one-hot f32 with
//!   `label_dim = max + 1`; labels that are lists of numbers are used as f32 vectors
//!   (`label_dim` = their length). No `dataset.json` or `null` → `label_dim = 0`.
//! * **Subset** (`max_size`): when `N > max_size`, the kept raw indices are the first
//!   `max_size` of `arange(N)` shuffled by numpy's `RandomState(seed mod 2³¹)`, sorted
//!   ([`crate::data::random::subset_indices`], identical to numpy).
//! * **xflip**: the index list is doubled (`raw_idx` tiled twice); items of the second half are
//!   mirrored along the width axis.
//! * **Decoding**: lazy, on first access of a raw index; with `cache` (default) the decoded
//!   `C×H×W` bytes are kept (as EDM's `cache=True`). `&ImageDataset` is `Sync`: loader threads
//!   may share it (zip reads are serialised by a mutex, decoding is not).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::data::images::{decode, has_image_ext, walk, MAX_IMAGE_BYTES};

/// Largest accepted image, in pixels (`H·W`): 2²⁶ (e.g. 8192×8192).
pub const MAX_PIXELS: u64 = 1 << 26;
/// Largest accepted `label_dim`.
pub const MAX_LABEL_DIM: usize = 1 << 20;
/// Largest accepted `dataset.json`, in bytes.
const MAX_JSON_BYTES: u64 = 1 << 28;

/// How a dataset is opened (EDM's `ImageFolderDataset` keyword arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Read labels from `dataset.json` (EDM `use_labels`; TIW: off).
    pub use_labels: bool,
    /// Double the items with width-mirrored copies (EDM `xflip`).
    pub xflip: bool,
    /// Keep a random subset of at most this many raw images (EDM `max_size`).
    pub max_size: Option<usize>,
    /// Seed of the subset choice (EDM `random_seed`, default 0).
    pub seed: i64,
    /// Keep decoded images in memory (EDM `cache`, default on).
    pub cache: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            use_labels: false,
            xflip: false,
            max_size: None,
            seed: 0,
            cache: true,
        }
    }
}

enum Source {
    Dir,
    Zip(Mutex<zip::ZipArchive<BufReader<File>>>),
}

/// Raw labels, one per raw image file.
#[derive(Debug, Clone)]
enum Labels {
    /// Class indices (one-hot on access).
    Class(Vec<u64>),
    /// Float vectors, row-major `N × label_dim`.
    Vector(Vec<f32>),
}

/// An opened image-folder dataset (see the module docs).
pub struct ImageDataset {
    path: PathBuf,
    name: String,
    source: Source,
    files: Vec<String>,
    raw_idx: Vec<usize>,
    flip: Vec<bool>,
    shape: [usize; 3],
    labels: Option<Labels>,
    label_dim: usize,
    cache: Option<Vec<OnceLock<Arc<[u8]>>>>,
}

impl std::fmt::Debug for ImageDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageDataset")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("shape", &self.shape)
            .field("label_dim", &self.label_dim)
            .finish()
    }
}

/// Width and height from a PNG header, if `bytes` starts with one.
fn png_dims(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < 24 || !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?) as u64;
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?) as u64;
    Some((w, h))
}

/// Decodes image bytes to `C×H×W`, rejecting more than [`MAX_PIXELS`] pixels or (when given)
/// a shape other than `expect` before decoding.
fn decode_chw(bytes: &[u8], expect: Option<[usize; 3]>) -> Result<([usize; 3], Vec<u8>)> {
    if let Some((w, h)) = png_dims(bytes) {
        if w * h > MAX_PIXELS {
            bail!("PNG header declares {w}×{h} pixels (more than the limit of {MAX_PIXELS})");
        }
        if let Some([_, eh, ew]) = expect {
            if (h, w) != (eh as u64, ew as u64) {
                bail!("image is {h}×{w} (H×W) but the dataset's images are {eh}×{ew} (from the first image)");
            }
        }
    }
    let img = decode(bytes)?;
    let shape = [img.channels, img.height, img.width];
    if let Some(e) = expect {
        if shape != e {
            bail!("image has shape {shape:?} (C,H,W) but the dataset's images have {e:?} (from the first image)");
        }
    }
    let (c, plane) = (img.channels, img.height * img.width);
    let mut chw = vec![0u8; c * plane];
    for p in 0..plane {
        for ch in 0..c {
            chw[ch * plane + p] = img.data[p * c + ch];
        }
    }
    Ok((shape, chw))
}

impl ImageDataset {
    /// Opens a directory or `.zip` dataset: lists the images, decodes the first to learn the
    /// shape, reads labels (see the module docs). Errors name the file and member.
    pub fn open(path: &Path, opts: DatasetOptions) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{}: no such file or directory", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (source, all) = if meta.is_dir() {
            let mut all = Vec::new();
            walk(path, "", &mut all)?;
            (Source::Dir, all)
        } else {
            let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let z = zip::ZipArchive::new(BufReader::new(f)).with_context(|| {
                format!(
                    "{}: not a valid zip archive (a dataset is a directory or a dataset_tool .zip)",
                    path.display()
                )
            })?;
            let all: Vec<String> = z.file_names().map(str::to_string).collect();
            (Source::Zip(Mutex::new(z)), all)
        };
        let mut files: Vec<String> = all.iter().filter(|n| has_image_ext(n)).cloned().collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            bail!("{}: no image files found", path.display());
        }
        let mut ds = ImageDataset {
            path: path.to_path_buf(),
            name,
            source,
            files,
            raw_idx: Vec::new(),
            flip: Vec::new(),
            shape: [0; 3],
            labels: None,
            label_dim: 0,
            cache: None,
        };
        let first = ds.read_member(0)?;
        let (shape, chw) = decode_chw(&first, None).with_context(|| ds.what(0))?;
        if shape[1] != shape[2] {
            bail!(
                "{}: images must be square, but {} is {}×{} (H×W)",
                path.display(),
                ds.files[0],
                shape[1],
                shape[2]
            );
        }
        ds.shape = shape;
        let n = ds.files.len();
        if opts.cache {
            let cache: Vec<OnceLock<Arc<[u8]>>> = (0..n).map(|_| OnceLock::new()).collect();
            let _ = cache[0].set(chw.into());
            ds.cache = Some(cache);
        }
        if opts.use_labels && all.iter().any(|n| n == "dataset.json") {
            ds.load_labels()?;
        }
        let mut raw_idx = crate::data::random::subset_indices(n, opts.max_size, opts.seed);
        let mut flip = vec![false; raw_idx.len()];
        if opts.xflip {
            raw_idx.extend_from_within(..);
            flip.extend(std::iter::repeat_n(true, flip.len()));
        }
        ds.raw_idx = raw_idx;
        ds.flip = flip;
        Ok(ds)
    }

    fn what(&self, raw: usize) -> String {
        format!("{}: {}", self.path.display(), self.files[raw])
    }

    /// The bytes of the file/member `name` (at most `limit` bytes accepted).
    fn read_named(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let what = || format!("{}: {name}", self.path.display());
        match &self.source {
            Source::Dir => {
                let p = self.path.join(name);
                let len = std::fs::metadata(&p).with_context(what)?.len();
                if len > limit {
                    bail!("{}: {len} bytes is more than the limit of {limit}", what());
                }
                std::fs::read(&p).with_context(what)
            }
            Source::Zip(z) => {
                let mut z = z.lock().map_err(|_| anyhow!("{}: zip reader poisoned", what()))?;
                let mut f = z.by_name(name).with_context(what)?;
                if f.size() > limit {
                    bail!("{}: {} bytes is more than the limit of {limit}", what(), f.size());
                }
                let mut bytes = Vec::with_capacity(f.size() as usize);
                (&mut f)
                    .take(limit)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("{}: corrupt or truncated member", what()))?;
                Ok(bytes)
            }
        }
    }

    fn read_member(&self, raw: usize) -> Result<Vec<u8>> {
        self.read_named(&self.files[raw], MAX_IMAGE_BYTES as u64)
    }

    fn load_labels(&mut self) -> Result<()> {
        let what = format!("{}: dataset.json", self.path.display());
        let bytes = self.read_named("dataset.json", MAX_JSON_BYTES)?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{what}: not valid JSON"))?;
        let list = match v.get("labels") {
            None => {
                bail!("{what}: no \"labels\" key (expected {{\"labels\": [[fname, label], ...]}} or null)")
            }
            Some(serde_json::Value::Null) => return Ok(()),
            Some(serde_json::Value::Array(a)) => a,
            Some(_) => bail!("{what}: \"labels\" must be a list of [fname, label] pairs or null"),
        };
        let mut map: HashMap<&str, &serde_json::Value> = HashMap::with_capacity(list.len());
        for (k, e) in list.iter().enumerate() {
            match e.as_array().map(Vec::as_slice) {
                Some([serde_json::Value::String(f), l]) => {
                    map.insert(f.as_str(), l);
                }
                _ => bail!("{what}: labels[{k}] is not a [fname, label] pair"),
            }
        }
        let mut classes = Vec::new();
        let mut vectors: Vec<f32> = Vec::new();
        let mut vdim: Option<usize> = None;
        for f in &self.files {
            let key = f.replace('\\', "/");
            let l = map
                .get(key.as_str())
                .ok_or_else(|| anyhow!("{what}: no label for image {f}"))?;
            match l {
                serde_json::Value::Number(num) => {
                    let c = num.as_u64().ok_or_else(|| {
                        anyhow!("{what}: label of {f} is {num}; class labels must be integers ≥ 0")
                    })?;
                    if c as usize >= MAX_LABEL_DIM {
                        bail!("{what}: label of {f} is {c}; at most {MAX_LABEL_DIM} classes are supported");
                    }
                    classes.push(c);
                }
                serde_json::Value::Array(xs) => {
                    if vdim.is_some_and(|d| d != xs.len()) || xs.len() > MAX_LABEL_DIM {
                        bail!(
                            "{what}: label vector of {f} has length {}, others {vdim:?}",
                            xs.len()
                        );
                    }
                    vdim = Some(xs.len());
                    for x in xs {
                        vectors.push(
                            x.as_f64()
                                .ok_or_else(|| anyhow!("{what}: label of {f} holds a non-number {x}"))?
                                as f32,
                        );
                    }
                }
                other => bail!("{what}: label of {f} is {other}; expected an integer or a list of numbers"),
            }
        }
        if !classes.is_empty() && vdim.is_some() {
            bail!("{what}: labels mix class integers and vectors");
        }
        if let Some(d) = vdim {
            self.label_dim = d;
            self.labels = Some(Labels::Vector(vectors));
        } else {
            self.label_dim = classes.iter().max().map_or(0, |&m| m as usize + 1);
            self.labels = Some(Labels::Class(classes));
        }
        Ok(())
    }

    /// Number of items (`2·kept` with xflip).
    pub fn len(&self) -> usize {
        self.raw_idx.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.raw_idx.is_empty()
    }

    /// Dataset name: the file stem of the path (EDM `name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Side length of the (square) images.
    pub fn resolution(&self) -> usize {
        self.shape[1]
    }

    /// Channels (1 gray, 3 RGB).
    pub fn channels(&self) -> usize {
        self.shape[0]
    }

    /// Item shape `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Length of the label vectors (0 without labels).
    pub fn label_dim(&self) -> usize {
        self.label_dim
    }

    /// Whether items carry labels (`label_dim > 0`).
    pub fn has_labels(&self) -> bool {
        self.label_dim > 0
    }

    /// Number of raw image files (before subset and xflip).
    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    /// Relative path (zip member) of raw image `raw`.
    pub fn file_name(&self, raw: usize) -> &str {
        &self.files[raw]
    }

    /// Raw file index of item `i`.
    pub fn raw_idx(&self, i: usize) -> usize {
        self.raw_idx[i]
    }

    /// Whether item `i` is mirrored.
    pub fn is_flipped(&self, i: usize) -> bool {
        self.flip[i]
    }

    fn raw_image(&self, raw: usize) -> Result<Arc<[u8]>> {
        if let Some(c) = self.cache.as_ref().and_then(|c| c[raw].get()) {
            return Ok(c.clone());
        }
        let bytes = self.read_member(raw)?;
        let (_, chw) = decode_chw(&bytes, Some(self.shape)).with_context(|| self.what(raw))?;
        let chw: Arc<[u8]> = chw.into();
        if let Some(c) = &self.cache {
            let _ = c[raw].set(chw.clone());
        }
        Ok(chw)
    }

    /// Item `i` as uint8 `C×H×W` (mirrored along W for the xflip half).
    pub fn image(&self, i: usize) -> Result<Vec<u8>> {
        if i >= self.len() {
            bail!(
                "{}: item {i} out of range ({} items)",
                self.path.display(),
                self.len()
            );
        }
        let raw = self.raw_image(self.raw_idx[i])?;
        if !self.flip[i] {
            return Ok(raw.to_vec());
        }
        let w = self.shape[2];
        let mut out = Vec::with_capacity(raw.len());
        for row in raw.chunks_exact(w) {
            out.extend(row.iter().rev());
        }
        Ok(out)
    }

    /// Label of item `i`: one-hot (class labels) or the stored vector, length `label_dim`.
    pub fn label(&self, i: usize) -> Vec<f32> {
        let raw = self.raw_idx[i];
        let mut v = vec![0f32; self.label_dim];
        match &self.labels {
            Some(Labels::Class(c)) => v[c[raw] as usize] = 1.0,
            Some(Labels::Vector(x)) => {
                v.copy_from_slice(&x[raw * self.label_dim..(raw + 1) * self.label_dim])
            }
            None => {}
        }
        v
    }

    /// Decodes every image (validating all of them; fills the cache when on).
    pub fn preload(&self) -> Result<()> {
        for raw in 0..self.files.len() {
            self.raw_image(raw)?;
        }
        Ok(())
    }

    /// A training batch of items `idx`: images `[B, C, H, W]` f32 on `device`, computed there as
    /// `uint8 → f32, x / 127.5 − 1` (EDM's training loop), and labels `[B, label_dim]` f32.
    pub fn batch(&self, idx: &[usize], device: Device) -> Result<(Tensor, Tensor)> {
        let [c, h, w] = self.shape;
        let mut bytes = Vec::with_capacity(idx.len() * c * h * w);
        let mut labels = Vec::with_capacity(idx.len() * self.label_dim);
        for &i in idx {
            bytes.extend(self.image(i)?);
            labels.extend(self.label(i));
        }
        let b = idx.len() as i64;
        let images = Tensor::from_slice(&bytes)
            .f_reshape([b, c as i64, h as i64, w as i64])?
            .f_to_device(device)?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(127.5)?
            .f_sub_scalar(1.0)?;
        let labels = Tensor::from_slice(&labels)
            .f_reshape([b, self.label_dim as i64])?
            .f_to_device(device)?;
        Ok((images, labels))
    }
}
