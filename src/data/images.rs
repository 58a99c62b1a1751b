//! Image sets, for the training datasets and FID alike, read like EDM's `ImageFolderDataset`:
//!
//! * a **directory**: every file below it (recursively; symlinked files followed, symlinked
//!   directories not entered, as `os.walk`) whose lower-cased extension is a PIL image
//!   extension, ordered by relative path (`/`-separated, code-point order);
//! * a **`.zip`** (EDM's `dataset_tool.py` output): the member names with an image
//!   extension, de-duplicated and sorted the same way;
//! * an **`.npz`** holding `samples` (discriminator data, `np.savez(samples=…)`) or `images`
//!   (`tiw` sample output): uint8 `N×H×W×C` (C = 1 or 3), `N×H×W` (gray) or — recognised when
//!   the last axis is not 1/3 but the second is — `N×C×H×W`. Stored (`np.savez`) members
//!   are read image by image from the file; compressed ones are inflated into memory once.
//!
//! Images are decoded to `H×W×C` uint8 with C = 1 (gray) or 3 (RGB). PNG only (EDM
//! datasets are PNG): palette images are expanded to RGB and 16-bit samples reduced to their
//! high byte (as pyspng/PIL do for RGB); a `tRNS` transparency chunk is ignored; images with
//! an alpha channel are rejected, as EDM's detector rejects 4-channel input.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

/// A decoded image, row-major `height × width × channels` (channels 1 or 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Interleaved samples.
    pub data: Vec<u8>,
}

/// File extensions PIL 11 registers (`PIL.Image.EXTENSION`); EDM lists files with these.
pub const PIL_EXTENSIONS: &[&str] = &[
    ".apng", ".avif", ".avifs", ".blp", ".bmp", ".bufr", ".bw", ".cur", ".dcx", ".dds", ".dib", ".emf",
    ".eps", ".fit", ".fits", ".flc", ".fli", ".ftc", ".ftu", ".gbr", ".gif", ".grib", ".h5", ".hdf", ".icb",
    ".icns", ".ico", ".iim", ".im", ".j2c", ".j2k", ".jfif", ".jp2", ".jpc", ".jpe", ".jpeg", ".jpf", ".jpg",
    ".jpx", ".mpeg", ".mpg", ".mpo", ".msp", ".palm", ".pbm", ".pcd", ".pcx", ".pdf", ".pfm", ".pgm", ".png",
    ".pnm", ".ppm", ".ps", ".psd", ".pxr", ".qoi", ".ras", ".rgb", ".rgba", ".sgi", ".tga", ".tif", ".tiff",
    ".vda", ".vst", ".webp", ".wmf", ".xbm", ".xpm",
];

/// Upper bound on one decoded image (bytes), against hostile headers.
pub(crate) const MAX_IMAGE_BYTES: usize = 1 << 30;

/// `path`'s metadata (an error naming it when it does not exist) and its lower-case
/// extension ("" without one): how image-set sources are told apart.
pub(crate) fn stat_with_extension(path: &Path) -> Result<(std::fs::Metadata, String)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{}: no such file or directory", path.display()))?;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    Ok((meta, ext))
}

/// The member names of zip archive `z` (read from `path`) that `keep` accepts, sorted and
/// deduplicated; an error naming `path` when there are none.
pub(crate) fn zip_image_names<R: Read + Seek>(
    z: &zip::ZipArchive<R>,
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut files: Vec<String> = z.file_names().filter(|n| keep(n)).map(str::to_string).collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        bail!("{}: no image files found in the zip archive", path.display());
    }
    Ok(files)
}

pub(crate) fn has_image_ext(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    // os.path.splitext: the extension starts at the last dot that is not leading
    let trimmed = base.trim_start_matches('.');
    match trimmed.rfind('.') {
        Some(i) => {
            let ext = trimmed[i..].to_lowercase();
            PIL_EXTENSIONS.contains(&ext.as_str())
        }
        None => false,
    }
}

/// Axis order of an `.npz` image array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Nhwc,
    Nchw,
}

#[derive(Debug, Clone)]
enum NpzData {
    /// Byte offset of image 0 in the (stored) `.npz` file.
    Stored(u64),
    /// Inflated array.
    Memory(Arc<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct NpzImages {
    key: String,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    layout: Layout,
    data: NpzData,
}

#[derive(Debug, Clone)]
enum Source {
    Dir(Vec<String>),
    Zip(Vec<String>),
    Npz(NpzImages),
}

/// An ordered, indexable set of images (see the module docs).
#[derive(Debug, Clone)]
pub struct ImageSet {
    path: PathBuf,
    source: Source,
}

pub(crate) fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relname = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let ft = entry.file_type()?;
        if ft.is_dir() {
            walk(root, &relname, out)?;
        } else if ft.is_symlink() {
            // os.walk lists a symlink to a directory among the directories without entering it
            if std::fs::metadata(entry.path())
                .map(|m| !m.is_dir())
                .unwrap_or(true)
            {
                out.push(relname);
            }
        } else {
            out.push(relname);
        }
    }
    Ok(())
}

/// Parsed `.npy` header: (descr, fortran_order, shape, header length in bytes).
pub(crate) fn read_npy_header(r: &mut impl Read) -> Result<(String, bool, Vec<usize>, u64)> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).context("truncated .npy header")?;
    if &magic[..6] != b"\x93NUMPY" {
        bail!("not an .npy array (bad magic)");
    }
    let (hlen, pre) = match magic[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).context("truncated .npy header")?;
            (u16::from_le_bytes(b) as usize, 10)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).context("truncated .npy header")?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => bail!(".npy format version {v} is not supported"),
    };
    if hlen > 1 << 20 {
        bail!(".npy header of {hlen} bytes is implausible");
    }
    let mut h = vec![0u8; hlen];
    r.read_exact(&mut h).context("truncated .npy header")?;
    let h = String::from_utf8_lossy(&h).into_owned();
    let field = |key: &str| -> Result<String> {
        let k = format!("'{key}':");
        let i = h
            .find(&k)
            .ok_or_else(|| anyhow!(".npy header without {key}: {h}"))?;
        Ok(h[i + k.len()..].trim_start().to_string())
    };
    let descr = field("descr")?;
    let descr = descr
        .split('\'')
        .nth(1)
        .ok_or_else(|| anyhow!("bad .npy descr in {h}"))?
        .to_string();
    let fortran = field("fortran_order")?.starts_with("True");
    let shape_txt = field("shape")?;
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| anyhow!("bad .npy shape in {h}"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| anyhow!("bad .npy shape in {h}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((descr, fortran, shape, (pre + hlen) as u64))
}

impl ImageSet {
    /// Lists the images of a directory, `.zip` or `.npz`.
    pub fn open(path: &Path) -> Result<Self> {
        let (meta, ext) = stat_with_extension(path)?;
        let source = if meta.is_dir() {
            let mut all = Vec::new();
            walk(path, "", &mut all)?;
            let mut files: Vec<String> = all.into_iter().filter(|n| has_image_ext(n)).collect();
            files.sort();
            if files.is_empty() {
                bail!("{}: no image files found in the directory", path.display());
            }
            Source::Dir(files)
        } else if ext == "zip" {
            let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let z = zip::ZipArchive::new(BufReader::new(f))
                .with_context(|| format!("{}: not a valid zip archive", path.display()))?;
            Source::Zip(zip_image_names(&z, path, has_image_ext)?)
        } else if ext == "npz" {
            Source::Npz(Self::open_npz(path)?)
        } else {
            bail!("{}: an image set must be a directory, a .zip (EDM dataset_tool) or an .npz (samples/images uint8 NHWC)", path.display());
        };
        Ok(ImageSet {
            path: path.to_path_buf(),
            source,
        })
    }

    fn open_npz(path: &Path) -> Result<NpzImages> {
        let ctx = || format!("{}: not a valid .npz file", path.display());
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let file_len = f.metadata()?.len();
        let mut z = zip::ZipArchive::new(BufReader::new(f)).with_context(ctx)?;
        let names: Vec<String> = z.file_names().map(str::to_string).collect();
        let key = ["samples", "images"]
            .into_iter()
            .find(|k| names.iter().any(|n| n == &format!("{k}.npy")))
            .ok_or_else(|| {
                anyhow!(
                    "{}: no `samples` or `images` array (has: {})",
                    path.display(),
                    names
                        .iter()
                        .map(|n| n.trim_end_matches(".npy"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        let mut m = z.by_name(&format!("{key}.npy")).with_context(ctx)?;
        let stored = m.compression() == zip::CompressionMethod::Stored;
        let data_start = m.data_start();
        let (descr, fortran, shape, hlen) =
            read_npy_header(&mut m).with_context(|| format!("{}: array {key}", path.display()))?;
        if !matches!(descr.as_str(), "|u1" | "<u1" | "u1" | "B") {
            bail!(
                "{}: array {key} has dtype {descr}; images must be uint8",
                path.display()
            );
        }
        if fortran {
            bail!(
                "{}: array {key} is in Fortran order; write it C-contiguous",
                path.display()
            );
        }
        let (n, h, w, c, layout) = match *shape.as_slice() {
            [n, h, w] => (n, h, w, 1, Layout::Nhwc),
            [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c, Layout::Nhwc),
            [n, c, h, w] if c == 1 || c == 3 => (n, h, w, c, Layout::Nchw),
            _ => bail!(
                "{}: array {key} has shape {shape:?}; expected N×H×W×C uint8 with C = 1 or 3",
                path.display()
            ),
        };
        if h == 0 || w == 0 {
            bail!(
                "{}: array {key} has empty images (shape {shape:?})",
                path.display()
            );
        }
        let per = h
            .checked_mul(w)
            .and_then(|x| x.checked_mul(c))
            .filter(|&x| x <= MAX_IMAGE_BYTES);
        let total = per
            .and_then(|p| p.checked_mul(n))
            .ok_or_else(|| anyhow!("{}: array {key} shape {shape:?} is too large", path.display()))?;
        let data = if stored {
            let off = data_start + hlen;
            if off + total as u64 > file_len {
                bail!(
                    "{}: array {key} is truncated ({} bytes declared, file has {})",
                    path.display(),
                    total,
                    file_len.saturating_sub(off)
                );
            }
            NpzData::Stored(off)
        } else {
            let mut buf = Vec::new();
            (&mut m)
                .take(total as u64)
                .read_to_end(&mut buf)
                .with_context(|| format!("{}: array {key}: corrupt data", path.display()))?;
            if buf.len() != total {
                bail!(
                    "{}: array {key} is truncated ({} of {} bytes)",
                    path.display(),
                    buf.len(),
                    total
                );
            }
            NpzData::Memory(Arc::new(buf))
        };
        Ok(NpzImages {
            key: key.to_string(),
            n,
            h,
            w,
            c,
            layout,
            data,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Dir(f) | Source::Zip(f) => f.len(),
            Source::Npz(a) => a.n,
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path the set was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A short description (kind and count).
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Dir(f) => format!("directory with {} image files", f.len()),
            Source::Zip(f) => format!("zip with {} image files", f.len()),
            Source::Npz(a) => format!("npz array {:?} of {} images {}×{}×{}", a.key, a.n, a.h, a.w, a.c),
        }
    }

    /// Name of image `i` for messages.
    pub fn name(&self, i: usize) -> String {
        match &self.source {
            Source::Dir(f) | Source::Zip(f) => f[i].clone(),
            Source::Npz(a) => format!("{}[{i}]", a.key),
        }
    }

    /// A reader (own file handles; one per thread).
    pub fn reader(&self) -> Result<Reader<'_>> {
        let open = || File::open(&self.path).with_context(|| format!("cannot open {}", self.path.display()));
        let inner = match &self.source {
            Source::Dir(_) => ReaderInner::Dir,
            Source::Zip(_) => ReaderInner::Zip(Box::new(
                zip::ZipArchive::new(BufReader::new(open()?))
                    .with_context(|| format!("{}: not a valid zip archive", self.path.display()))?,
            )),
            Source::Npz(a) => match &a.data {
                NpzData::Stored(_) => ReaderInner::NpzFile(open()?),
                NpzData::Memory(_) => ReaderInner::NpzMemory,
            },
        };
        Ok(Reader { set: self, inner })
    }
}

enum ReaderInner {
    Dir,
    Zip(Box<zip::ZipArchive<BufReader<File>>>),
    NpzFile(File),
    NpzMemory,
}

/// Loads images of an [`ImageSet`].
pub struct Reader<'a> {
    set: &'a ImageSet,
    inner: ReaderInner,
}

impl Reader<'_> {
    /// Image `i`, decoded.
    pub fn load(&mut self, i: usize) -> Result<Image> {
        let set = self.set;
        let what = || format!("{}: {}", set.path.display(), set.name(i));
        match (&set.source, &mut self.inner) {
            (Source::Dir(files), _) => {
                let p = set.path.join(&files[i]);
                let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
                decode(&bytes).with_context(what)
            }
            (Source::Zip(files), ReaderInner::Zip(z)) => {
                let mut f = z.by_name(&files[i]).with_context(what)?;
                let mut bytes = Vec::with_capacity(f.size().min(MAX_IMAGE_BYTES as u64) as usize);
                (&mut f)
                    .take(MAX_IMAGE_BYTES as u64)
                    .read_to_end(&mut bytes)
                    .with_context(what)?;
                decode(&bytes).with_context(what)
            }
            (Source::Npz(a), inner) => {
                let per = a.h * a.w * a.c;
                let mut raw = vec![0u8; per];
                match (&a.data, inner) {
                    (NpzData::Stored(off), ReaderInner::NpzFile(f)) => {
                        f.seek(SeekFrom::Start(off + (i * per) as u64))
                            .with_context(what)?;
                        f.read_exact(&mut raw).with_context(what)?;
                    }
                    (NpzData::Memory(buf), _) => raw.copy_from_slice(&buf[i * per..(i + 1) * per]),
                    _ => unreachable!("reader matches its set"),
                }
                let data = match a.layout {
                    Layout::Nhwc => raw,
                    Layout::Nchw => {
                        let plane = a.h * a.w;
                        let mut d = vec![0u8; per];
                        for ch in 0..a.c {
                            for p in 0..plane {
                                d[p * a.c + ch] = raw[ch * plane + p];
                            }
                        }
                        d
                    }
                };
                Ok(Image {
                    width: a.w,
                    height: a.h,
                    channels: a.c,
                    data,
                })
            }
            _ => unreachable!("reader matches its set"),
        }
    }
}

/// Decodes a baseline or progressive JPEG (zune-jpeg, through the `image` crate) to gray (a
/// one-component file) or RGB (YCbCr, with the decoder's chroma upsampling): PIL's modes `L`
/// and `RGB`. Pixel values can differ from PIL's libjpeg-turbo by a few levels (IDCT and
/// upsampling are implementation-defined in JPEG; measured: at most 4 levels with 4:2:0
/// chroma, 1 for gray). The size is checked against [`MAX_IMAGE_BYTES`] from the header
/// before decoding; CMYK files are refused.
pub fn decode_jpeg(bytes: &[u8]) -> Result<Image> {
    use image::{ColorType, ImageDecoder};
    let dec = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| anyhow!("corrupt JPEG: {e}"))?;
    let (w, h) = dec.dimensions();
    let channels = match dec.color_type() {
        ColorType::L8 => 1,
        ColorType::Rgb8 => 3,
        other => bail!("JPEG with colour type {other:?}; only gray or RGB images are supported"),
    };
    let size = (w as u64) * (h as u64) * channels as u64;
    if size > MAX_IMAGE_BYTES as u64 {
        bail!("JPEG of {w}×{h} is larger than the {MAX_IMAGE_BYTES}-byte limit");
    }
    let mut data = vec![0u8; size as usize];
    dec.read_image(&mut data)
        .map_err(|e| anyhow!("corrupt JPEG: {e}"))?;
    Ok(Image {
        width: w as usize,
        height: h as usize,
        channels,
        data,
    })
}

/// Whether `bytes` start like a JPEG file (SOI marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
}

/// Decodes a PNG to gray or RGB (see the module docs). JPEG is refused here (training data
/// and FID image sets must decode exactly as PIL does); `tiw dataset convert` accepts it
/// through [`decode_jpeg`].
pub fn decode(bytes: &[u8]) -> Result<Image> {
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        let hint = if is_jpeg(bytes) {
            " (a JPEG: convert it with `tiw dataset convert` first)"
        } else {
            ""
        };
        bail!("not a PNG file{hint} (only PNG images are supported)");
    }
    let mut dec = png::Decoder::new_with_limits(
        std::io::Cursor::new(bytes),
        png::Limits {
            bytes: MAX_IMAGE_BYTES,
        },
    );
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = dec.read_info().map_err(|e| anyhow!("corrupt PNG: {e}"))?;
    let src_color = r.info().color_type;
    if matches!(src_color, png::ColorType::GrayscaleAlpha | png::ColorType::Rgba) {
        bail!("PNG with an alpha channel ({src_color:?}); only gray or RGB images are supported");
    }
    let size = r.output_buffer_size().ok_or_else(|| anyhow!("PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = r.next_frame(&mut buf).map_err(|e| anyhow!("corrupt PNG: {e}"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let out_ch = info.color_type.samples();
    let keep = match info.color_type {
        png::ColorType::Grayscale | png::ColorType::GrayscaleAlpha => 1,
        _ => 3,
    };
    let mut data = Vec::with_capacity(w * h * keep);
    for row in buf.chunks(info.line_size).take(h) {
        if out_ch == keep {
            data.extend_from_slice(&row[..w * keep]);
        } else {
            // alpha made from tRNS: dropped (PIL's array of an RGB/L image ignores tRNS)
            for px in row[..w * out_ch].chunks_exact(out_ch) {
                data.extend_from_slice(&px[..keep]);
            }
        }
    }
    Ok(Image {
        width: w,
        height: h,
        channels: keep,
        data,
    })
}
