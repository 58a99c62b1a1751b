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

/// Encodes one `H×W×C` uint8 image (C = 1 or 3) as an uncompressed-zlib PNG.
pub fn encode_png(hwc: &[u8], h: usize, w: usize, c: usize) -> Result<Vec<u8>> {
    let color = match c {
        1 => png::ColorType::Grayscale,
        3 => png::ColorType::Rgb,
        _ => bail!("PNG images need 1 or 3 channels, got {c}"),
    };
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::NoCompression);
        let mut wr = enc.write_header()?;
        wr.write_image_data(hwc)?;
        wr.finish()?;
    }
    Ok(out)
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
    let tmp = temp_beside(path)?;
    let what = || format!("cannot write {}", path.display());
    {
        let mut z = zip::ZipWriter::new(std::io::BufWriter::new(tmp.as_file()));
        let opt = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(false);
        let per = h * w * c;
        for i in 0..n {
            let png = encode_png(&images[i * per..(i + 1) * per], h, w, c)?;
            z.start_file(member_name(i), opt).with_context(what)?;
            z.write_all(&png).with_context(what)?;
        }
        let json = match labels {
            Some(l) => {
                let items: Vec<String> = l
                    .iter()
                    .enumerate()
                    .map(|(i, v)| format!("[\"{}\", {v}]", member_name(i)))
                    .collect();
                format!("{{\"labels\": [{}]}}", items.join(", "))
            }
            None => "{\"labels\": null}".to_string(),
        };
        z.start_file("dataset.json", opt).with_context(what)?;
        z.write_all(json.as_bytes()).with_context(what)?;
        z.finish().with_context(what)?.flush().with_context(what)?;
    }
    tmp.persist(path).with_context(what)?;
    Ok(())
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
