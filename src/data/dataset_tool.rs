//! `tiw dataset convert`: EDM's `dataset_tool.py convert` (SPEC §5.4) — any image source to
//! a `dataset.zip` that `tiw train` reads.
//!
//! **Sources** (and their order and labels, as the tool's):
//! * a **directory**: every file below it (recursively) whose name's extension (after the
//!   last `.`, lower-cased) is a PIL image extension, ordered by path components (Python's
//!   `sorted(Path.rglob('*'))`). Labels from a top-level `dataset.json` (`{"labels":
//!   [[relpath, int], …]}`); when it gives none, from the top-level folder names when there
//!   are at least two (sorted names → 0, 1, …; files directly in the root count as the name
//!   `""`);
//! * a **`.zip`**: its members with an image extension, sorted by name; labels from its
//!   `dataset.json`;
//! * a **CIFAR python tarball** (`*.tar.gz`, see [`super::cifar`]) with its labels;
//! * an **`.npz`** (extension): uint8 `samples` or `images`, `N×H×W×C` or `N×C×H×W`
//!   ([`super::images::ImageSet`]), labels from an optional `labels` (ints, length N) or
//!   `label` (one-hot rows, argmax) array.
//!
//! **Per image** (`--max-images N`: the first N source images): decode (PNG exactly as PIL;
//! JPEG through zune-jpeg, within a few levels of PIL's libjpeg-turbo; palette images are
//! expanded to RGB where PIL would keep the indices; alpha is refused), then
//! * no transform: resize to `--resolution` W×H with PIL's Lanczos ([`super::resample`]) unless
//!   it already has that size;
//! * `center-crop`: the centred `s × s` square (`s = min(H, W)`, offsets `(H − s) // 2`,
//!   `(W − s) // 2`), gray made RGB, resized to W×H;
//! * `center-crop-wide`: `ch = round_half_even(W_out · H / W)` centred rows, gray made RGB,
//!   resized to W_out×H_out and pasted at rows `(W_out − H_out) // 2` of a black W_out×W_out
//!   canvas; an image narrower than W_out or with `ch < H_out` is skipped (as the tool does).
//!
//! The first written image fixes width, height and channels: they must be square and a power
//! of two. An image that cannot be decoded, or that differs from the first, is an error
//! naming it — or, with `skip_bad`, left out and counted. Image `i` of the source is written
//! as `{i // 1000:05}/img{i:08}.png` (skipped images leave gaps, as the tool's center-crop-wide
//! skips do), encoded as PIL's `compress_level=0` PNG ([`super::writer::encode_png`]); then
//! `dataset.json` with the labels when every written image has one, else `null`.
//!
//! Memory is bounded by a batch of images (the CIFAR tarball and compressed `.npz` arrays
//! are held whole); the archive is built in a temporary file renamed into place only on
//! success.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::cifar::{self, CifarImages};
use super::images::{
    decode, decode_jpeg, is_jpeg, stat_with_extension, walk, zip_image_names, Image, ImageSet,
    MAX_IMAGE_BYTES, PIL_EXTENSIONS,
};
use super::resample::resize_lanczos;
use super::writer::{encode_png, labels_json, member_name, DatasetZipWriter};

/// Crop modes of `--transform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// Centred square crop, then resize.
    CenterCrop,
    /// Centred wide crop letter-boxed into a square canvas.
    CenterCropWide,
}

/// Options of [`convert`].
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Output `(width, height)`.
    pub resolution: Option<(usize, usize)>,
    /// Crop mode (needs `resolution`).
    pub transform: Option<Transform>,
    /// Use only the first N source images.
    pub max_images: Option<usize>,
    /// Leave unreadable or mismatched images out instead of failing.
    pub skip_bad: bool,
    /// Worker threads for decoding/resizing/encoding (0 = available cores).
    pub threads: usize,
}

/// What [`convert`] did.
#[derive(Debug, Clone, Default)]
pub struct ConvertSummary {
    /// Images written.
    pub written: usize,
    /// Images left out by `skip_bad`.
    pub skipped_bad: usize,
    /// The first few left out, with the reason.
    pub skipped_examples: Vec<String>,
    /// Images skipped by `center-crop-wide` (too small).
    pub skipped_small: usize,
    /// `(width, height, channels)` of the dataset.
    pub shape: (usize, usize, usize),
    /// Whether `dataset.json` holds labels.
    pub labelled: bool,
    /// Written images without a label (then `dataset.json` has `null`).
    pub unlabelled: usize,
}

/// Source data of one image.
enum Input {
    Encoded(Vec<u8>),
    Pixels(Image),
}

struct Item {
    index: usize,
    name: String,
    input: Result<Input>,
    label: Option<i64>,
}

enum Kind {
    Dir(PathBuf),
    Zip(Box<zip::ZipArchive<BufReader<std::fs::File>>>),
    Npz(ImageSet),
    Cifar(CifarImages),
}

/// An ordered image source (see the module docs).
struct Source {
    kind: Kind,
    /// File or member names (directory, zip).
    files: Vec<String>,
    labels: Vec<Option<i64>>,
    len: usize,
    pos: usize,
}

/// Whether a file name has a PIL image extension, as the tool tests it (the text after the
/// last `.` of the name).
fn is_image_name(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    match base.rfind('.') {
        Some(i) => PIL_EXTENSIONS.contains(&base[i..].to_lowercase().as_str()),
        None => false,
    }
}

/// `{"labels": [[name, int], …] | null}` → name → label (empty when null).
fn parse_labels_json(text: &[u8], what: &str) -> Result<HashMap<String, i64>> {
    let v: serde_json::Value =
        serde_json::from_slice(text).with_context(|| format!("{what}: not valid JSON"))?;
    let labels = v
        .get("labels")
        .ok_or_else(|| anyhow!("{what}: no \"labels\" key"))?;
    let mut out = HashMap::new();
    if labels.is_null() {
        return Ok(out);
    }
    let items = labels
        .as_array()
        .ok_or_else(|| anyhow!("{what}: \"labels\" is neither a list nor null"))?;
    for it in items {
        let (name, label) = match it.as_array().map(Vec::as_slice) {
            Some([n, l]) => (n, l),
            _ => bail!("{what}: a labels entry is not a [name, label] pair: {it}"),
        };
        let name = name
            .as_str()
            .ok_or_else(|| anyhow!("{what}: a label's file name is not a string: {it}"))?;
        let label = label
            .as_i64()
            .ok_or_else(|| anyhow!("{what}: the label of {name} is not an integer class index: {it}"))?;
        out.insert(name.to_string(), label);
    }
    Ok(out)
}

impl Source {
    fn open(path: &Path) -> Result<Source> {
        let (meta, ext) = stat_with_extension(path)?;
        if meta.is_dir() {
            Self::open_dir(path)
        } else if cifar::is_tarball(path) {
            let c = cifar::read_tarball(path)?;
            let labels = c.labels.iter().map(|&l| Some(l)).collect();
            Ok(Source::new(Kind::Cifar(c), Vec::new(), labels))
        } else if ext == "zip" {
            Self::open_zip(path)
        } else if ext == "npz" {
            let set = ImageSet::open(path)?;
            let labels = match npz_labels(path, set.len())? {
                Some(l) => l.into_iter().map(Some).collect(),
                None => vec![None; set.len()],
            };
            Ok(Source::new(Kind::Npz(set), Vec::new(), labels))
        } else {
            bail!(
                "{}: unknown source (expected a directory, a .zip, a CIFAR python .tar.gz or an .npz)",
                path.display()
            )
        }
    }

    fn new(kind: Kind, files: Vec<String>, labels: Vec<Option<i64>>) -> Source {
        Source {
            kind,
            len: labels.len(),
            files,
            labels,
            pos: 0,
        }
    }

    fn open_dir(root: &Path) -> Result<Source> {
        let mut all = Vec::new();
        walk(root, "", &mut all)?;
        let mut files: Vec<String> = all
            .into_iter()
            .filter(|n| is_image_name(n) && root.join(n).is_file())
            .collect();
        files.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        if files.is_empty() {
            bail!("{}: no image files found in the directory", root.display());
        }
        let meta = root.join("dataset.json");
        let mut map = if meta.is_file() {
            let text = std::fs::read(&meta).with_context(|| format!("cannot read {}", meta.display()))?;
            parse_labels_json(&text, &meta.display().to_string())?
        } else {
            HashMap::new()
        };
        if map.is_empty() {
            let top = |f: &str| f.split_once('/').map(|(t, _)| t.to_string()).unwrap_or_default();
            let names: BTreeSet<String> = files.iter().map(|f| top(f)).collect();
            if names.len() > 1 {
                let idx: HashMap<&String, i64> = names.iter().zip(0..).collect();
                map = files.iter().map(|f| (f.clone(), idx[&top(f)])).collect();
            }
        }
        let labels = files.iter().map(|f| map.get(f).copied()).collect();
        Ok(Source::new(Kind::Dir(root.to_path_buf()), files, labels))
    }

    fn open_zip(path: &Path) -> Result<Source> {
        let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut z = zip::ZipArchive::new(BufReader::new(f))
            .with_context(|| format!("{}: not a valid zip archive", path.display()))?;
        let files = zip_image_names(&z, path, is_image_name)?;
        let map = match z.by_name("dataset.json") {
            Ok(m) => {
                let mut text = Vec::new();
                m.take(1 << 28).read_to_end(&mut text)?;
                parse_labels_json(&text, &format!("{}: dataset.json", path.display()))?
            }
            Err(_) => HashMap::new(),
        };
        let labels = files.iter().map(|f| map.get(f).copied()).collect();
        Ok(Source::new(Kind::Zip(Box::new(z)), files, labels))
    }

    fn name(&self, i: usize) -> String {
        match &self.kind {
            Kind::Dir(root) => root.join(&self.files[i]).display().to_string(),
            Kind::Zip(_) => self.files[i].clone(),
            Kind::Npz(set) => set.name(i),
            Kind::Cifar(_) => format!("CIFAR training image {i}"),
        }
    }

    /// The next up to `max` items (`limit`: total to read).
    fn next_batch(&mut self, max: usize, limit: usize) -> Vec<Item> {
        let end = (self.pos + max).min(limit).min(self.len);
        let range = self.pos..end;
        self.pos = end;
        let inputs: Vec<Result<Input>> = match &mut self.kind {
            Kind::Dir(root) => range
                .clone()
                .map(|i| read_capped(&root.join(&self.files[i])).map(Input::Encoded))
                .collect(),
            Kind::Zip(z) => range
                .clone()
                .map(|i| read_member(z, &self.files[i]).map(Input::Encoded))
                .collect(),
            Kind::Cifar(c) => range
                .clone()
                .map(|i| {
                    Ok(Input::Pixels(Image {
                        width: 32,
                        height: 32,
                        channels: 3,
                        data: c.image_hwc(i),
                    }))
                })
                .collect(),
            Kind::Npz(set) => match set.reader() {
                Ok(mut r) => range.clone().map(|i| r.load(i).map(Input::Pixels)).collect(),
                Err(e) => range.clone().map(|_| Err(anyhow!("{e:#}"))).collect(),
            },
        };
        range
            .zip(inputs)
            .map(|(i, input)| Item {
                index: i,
                name: self.name(i),
                input,
                label: self.labels[i],
            })
            .collect()
    }
}

fn read_capped(p: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut b = Vec::new();
    f.take(MAX_IMAGE_BYTES as u64)
        .read_to_end(&mut b)
        .with_context(|| format!("cannot read {}", p.display()))?;
    Ok(b)
}

fn read_member(z: &mut zip::ZipArchive<BufReader<std::fs::File>>, name: &str) -> Result<Vec<u8>> {
    let mut m = z.by_name(name).context("cannot read the member")?;
    let mut b = Vec::with_capacity(m.size().min(MAX_IMAGE_BYTES as u64) as usize);
    (&mut m)
        .take(MAX_IMAGE_BYTES as u64)
        .read_to_end(&mut b)
        .context("corrupt zip member")?;
    Ok(b)
}

/// The optional labels of an `.npz` source: `labels` (integers, length n) or `label`
/// (one-hot rows; the argmax is taken).
fn npz_labels(path: &Path, n: usize) -> Result<Option<Vec<i64>>> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut z = zip::ZipArchive::new(BufReader::new(f))
        .with_context(|| format!("{}: not a valid .npz", path.display()))?;
    for key in ["labels", "label"] {
        let Ok(mut m) = z.by_name(&format!("{key}.npy")) else {
            continue;
        };
        let what = || format!("{}: array {key}", path.display());
        let (descr, fortran, shape, _) = super::images::read_npy_header(&mut m).with_context(what)?;
        let size: usize = match descr.trim_start_matches(['<', '|', '=']) {
            "i1" | "u1" | "b1" => 1,
            "i2" | "u2" => 2,
            "i4" | "u4" | "f4" => 4,
            "i8" | "u8" | "f8" => 8,
            _ => bail!("{}: dtype {descr} is not supported for labels", what()),
        };
        let cols = match shape.as_slice() {
            [m] if *m == n => 1,
            [m, k] if *m == n && *k > 0 && *k <= 1 << 20 => *k,
            _ => bail!("{}: shape {shape:?} does not match {n} images", what()),
        };
        if fortran || descr.starts_with('>') {
            bail!("{}: big-endian or Fortran-order labels are not supported", what());
        }
        let total = n * cols * size;
        let mut raw = Vec::with_capacity(total);
        (&mut m)
            .take(total as u64)
            .read_to_end(&mut raw)
            .with_context(what)?;
        if raw.len() != total {
            bail!("{}: truncated", what());
        }
        let code = descr.trim_start_matches(['<', '|', '=']);
        let val = |b: &[u8]| -> f64 {
            match code {
                "i1" => b[0] as i8 as f64,
                "u1" | "b1" => b[0] as f64,
                "i2" => i16::from_le_bytes([b[0], b[1]]) as f64,
                "u2" => u16::from_le_bytes([b[0], b[1]]) as f64,
                "i4" => i32::from_le_bytes(b.try_into().unwrap()) as f64,
                "u4" => u32::from_le_bytes(b.try_into().unwrap()) as f64,
                "f4" => f32::from_le_bytes(b.try_into().unwrap()) as f64,
                "i8" => i64::from_le_bytes(b.try_into().unwrap()) as f64,
                "u8" => u64::from_le_bytes(b.try_into().unwrap()) as f64,
                _ => f64::from_le_bytes(b.try_into().unwrap()),
            }
        };
        let vals: Vec<f64> = raw.chunks_exact(size).map(val).collect();
        let labels = if cols == 1 {
            vals.iter()
                .map(|&v| {
                    if v.fract() == 0.0 && (0.0..1e9).contains(&v) {
                        Ok(v as i64)
                    } else {
                        Err(anyhow!("{}: label {v} is not a class index", what()))
                    }
                })
                .collect::<Result<Vec<i64>>>()?
        } else {
            vals.chunks_exact(cols)
                .map(|row| {
                    let mut best = 0;
                    for (j, &v) in row.iter().enumerate() {
                        if v > row[best] {
                            best = j;
                        }
                    }
                    best as i64
                })
                .collect()
        };
        return Ok(Some(labels));
    }
    Ok(None)
}

/// Gray → RGB by repeating the channel (`img[:, :, None].repeat(3, axis=2)`).
fn to_rgb(img: Image) -> Image {
    if img.channels == 3 {
        return img;
    }
    Image {
        data: img.data.iter().flat_map(|&v| [v, v, v]).collect(),
        channels: 3,
        ..img
    }
}

/// Rows `y0..y0+hh` and columns `x0..x0+ww` of `img`.
fn crop(img: &Image, y0: usize, x0: usize, hh: usize, ww: usize) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(hh * ww * c);
    for y in y0..y0 + hh {
        let row = (y * img.width + x0) * c;
        data.extend_from_slice(&img.data[row..row + ww * c]);
    }
    Image {
        width: ww,
        height: hh,
        channels: c,
        data,
    }
}

fn resized(img: Image, w: usize, h: usize) -> Image {
    if (img.width, img.height) == (w, h) {
        return img;
    }
    let data = resize_lanczos(&img.data, img.width, img.height, img.channels, w, h);
    Image {
        width: w,
        height: h,
        channels: img.channels,
        data,
    }
}

/// `round` with ties to even (`np.round`).
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// Applies the transform of the module docs; `None` = skipped (center-crop-wide, too small).
pub fn transform_image(
    img: Image,
    transform: Option<Transform>,
    resolution: Option<(usize, usize)>,
) -> Result<Option<Image>> {
    check_options(&ConvertOptions {
        resolution,
        transform,
        ..Default::default()
    })?;
    match (transform, resolution) {
        (None, None) => Ok(Some(img)),
        (None, Some((w, h))) => Ok(Some(resized(img, w, h))),
        (Some(Transform::CenterCrop), Some((w, h))) => {
            let s = img.width.min(img.height);
            let sq = crop(&img, (img.height - s) / 2, (img.width - s) / 2, s, s);
            Ok(Some(resized(to_rgb(sq), w, h)))
        }
        (Some(Transform::CenterCropWide), Some((w, h))) => {
            let ch = round_half_even(w as f64 * img.height as f64 / img.width as f64) as usize;
            if img.width < w || ch < h {
                return Ok(None);
            }
            let band = crop(&img, (img.height - ch) / 2, 0, ch, img.width);
            let small = resized(to_rgb(band), w, h);
            let mut canvas = vec![0u8; w * w * 3];
            let y0 = (w - h) / 2;
            canvas[y0 * w * 3..(y0 + h) * w * 3].copy_from_slice(&small.data);
            Ok(Some(Image {
                width: w,
                height: w,
                channels: 3,
                data: canvas,
            }))
        }
        (Some(_), None) => bail!("--transform needs --resolution WxH"),
    }
}

/// A converted image: `(width, height, channels, PNG bytes)`.
type Prepared = (usize, usize, usize, Vec<u8>);

/// Set once the first JPEG source image has been decoded (its note is printed once).
static JPEG_NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn prepare(input: Input, opts: &ConvertOptions) -> Result<Option<Prepared>> {
    let img = match input {
        Input::Encoded(b) if is_jpeg(&b) => {
            if !JPEG_NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!(
                    "note: JPEG sources are decoded by zune-jpeg; pixels can differ from PIL's libjpeg-turbo (dataset_tool.py) by a few levels"
                );
            }
            decode_jpeg(&b)?
        }
        Input::Encoded(b) => decode(&b)?,
        Input::Pixels(p) => p,
    };
    let Some(img) = transform_image(img, opts.transform, opts.resolution)? else {
        return Ok(None);
    };
    let png = encode_png(&img.data, img.height, img.width, img.channels)?;
    Ok(Some((img.width, img.height, img.channels, png)))
}

/// Runs [`prepare`] on a batch with `threads` workers, keeping the order.
fn prepare_batch(items: &mut [Item], opts: &ConvertOptions, threads: usize) -> Vec<Result<Option<Prepared>>> {
    let inputs: Vec<Result<Input>> = items
        .iter_mut()
        .map(|it| std::mem::replace(&mut it.input, Err(anyhow!("taken"))))
        .collect();
    let per = inputs.len().div_ceil(threads.max(1)).max(1);
    let mut chunks: Vec<Vec<Result<Input>>> = Vec::new();
    let mut it = inputs.into_iter().peekable();
    while it.peek().is_some() {
        chunks.push(it.by_ref().take(per).collect());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|r| r.and_then(|i| prepare(i, opts)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("dataset worker panicked"))
            .collect()
    })
}

fn check_options(opts: &ConvertOptions) -> Result<()> {
    if let Some((w, h)) = opts.resolution {
        if w == 0 || h == 0 {
            bail!("--resolution {w}x{h}: both sizes must be positive");
        }
        if opts.transform == Some(Transform::CenterCropWide) && h > w {
            bail!("--transform center-crop-wide needs a resolution no taller than wide (got {w}x{h})");
        }
    } else if opts.transform.is_some() {
        bail!("--transform needs --resolution WxH");
    }
    Ok(())
}

/// Converts `source` into a `dataset_tool.py` zip at `dest` (see the module docs);
/// `progress(done, total)` is called after each batch.
pub fn convert(
    source: &Path,
    dest: &Path,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertSummary> {
    check_options(opts)?;
    if !dest.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        bail!("{}: --dest must be a .zip file", dest.display());
    }
    let mut src = Source::open(source)?;
    let total = opts.max_images.map_or(src.len, |m| m.min(src.len));
    if total == 0 {
        bail!("{}: no images to convert", source.display());
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf);
    let created = match &parent {
        Some(p) if !p.exists() => {
            std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
            Some(p.clone())
        }
        _ => None,
    };
    let r = write_all(&mut src, dest, total, opts, progress);
    if r.is_err() {
        if let Some(p) = created {
            let _ = std::fs::remove_dir(p);
        }
    }
    r
}

fn write_all(
    src: &mut Source,
    dest: &Path,
    total: usize,
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ConvertSummary> {
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
    let mut zip = DatasetZipWriter::create(dest)?;
    let mut sum = ConvertSummary::default();
    let mut first: Option<((usize, usize, usize), String)> = None;
    let mut labels: Vec<(String, Option<i64>)> = Vec::new();
    let mut done = 0;
    while done < total {
        let mut items = src.next_batch(64 * threads, total);
        let prepared = prepare_batch(&mut items, opts, threads);
        for (item, p) in items.iter().zip(prepared) {
            let bad = |sum: &mut ConvertSummary, why: String| -> Result<()> {
                if !opts.skip_bad {
                    bail!("{why}; use --skip-bad to leave such images out");
                }
                sum.skipped_bad += 1;
                if sum.skipped_examples.len() < 5 {
                    sum.skipped_examples.push(why);
                }
                Ok(())
            };
            let (w, h, c, png) = match p {
                Err(e) => {
                    bad(&mut sum, format!("{}: {e:#}", item.name))?;
                    continue;
                }
                Ok(None) => {
                    sum.skipped_small += 1;
                    continue;
                }
                Ok(Some(x)) => x,
            };
            match &first {
                None => {
                    if w != h {
                        bail!("{}: images must be square after scale and crop, this one is {w}×{h} (W×H); use --resolution WxH or --transform center-crop", item.name);
                    }
                    if !w.is_power_of_two() {
                        bail!(
                            "{}: the image size {w}×{h} is not a power of two; use --resolution WxH",
                            item.name
                        );
                    }
                    first = Some(((w, h, c), item.name.clone()));
                }
                Some((shape, from)) if *shape != (w, h, c) => {
                    let why = format!(
                        "{} is {w}×{h}×{c} (W×H×C) but the dataset's images are {}×{}×{} (set by {from}); --resolution WxH resizes every image",
                        item.name, shape.0, shape.1, shape.2
                    );
                    bad(&mut sum, why)?;
                    continue;
                }
                Some(_) => {}
            }
            let name = member_name(item.index);
            zip.add(&name, &png)?;
            labels.push((name, item.label));
            sum.written += 1;
        }
        done += items.len();
        progress(done, total);
    }
    let Some((shape, _)) = first else {
        bail!(
            "no image could be converted ({} unreadable or mismatched, {} too small)",
            sum.skipped_bad,
            sum.skipped_small
        );
    };
    sum.shape = shape;
    sum.unlabelled = labels.iter().filter(|(_, l)| l.is_none()).count();
    sum.labelled = sum.unlabelled == 0;
    let json = labels_json(
        sum.labelled
            .then(|| labels.iter().map(|(n, l)| (n.as_str(), l.unwrap_or_default()))),
    );
    zip.finish(&json)?;
    Ok(sum)
}
