//! Sampling: the EDM and ablation samplers, per-seed noise, seeds and sharding, and the
//! runtimes' denoisers.

pub mod denoiser;
pub mod dg;
pub mod noise;
pub mod sampler;
pub mod seeds;

use anyhow::Result;

/// Deterministic EDM sampling (no churn) of `seeds` in batches of `batch`: per-seed latents
/// as `tiw generate` draws them (libtorch CPU generator), Heun with `steps` noise levels;
/// returns uint8 images N×H×W×C in seed order.
pub fn generate_images(
    den: &mut dyn denoiser::Denoiser,
    seeds: &[u64],
    batch: usize,
    steps: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<u8>> {
    let info = den.info().clone();
    let (c, r) = (info.channels, info.resolution);
    let settings = sampler::SamplerSettings {
        num_steps: steps,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(seeds.len() * c * r * r);
    for chunk in seeds.chunks(batch.max(1)) {
        let n = chunk.len();
        let drawn = noise::draw(chunk, c, r, info.label_dim, 0, None, tch::Device::Cpu)?;
        let zeros = vec![0f64; n * c * r * r];
        let (x, _) = sampler::edm_sample(
            den,
            &drawn.latents,
            n,
            drawn.labels.as_deref(),
            &settings,
            &mut |_| Ok(zeros.clone()),
        )?;
        out.extend(sampler::to_images(&x, n, c, r));
        on_batch(n);
    }
    Ok(out)
}

/// Writes uint8 pixels (`h×w×c`, row-major, c = 1 grey or 3 RGB) as a PNG: to `path.png.tmp`,
/// then renamed into place; parent folders are created.
pub fn write_png(path: &std::path::Path, data: &[u8], w: usize, h: usize, c: usize) -> Result<()> {
    use anyhow::Context;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    let tmp = path.with_extension("png.tmp");
    let (w, h) = (w as u32, h as u32);
    match c {
        1 => image::GrayImage::from_raw(w, h, data.to_vec())
            .context("image size")?
            .save_with_format(&tmp, image::ImageFormat::Png),
        3 => image::RgbImage::from_raw(w, h, data.to_vec())
            .context("image size")?
            .save_with_format(&tmp, image::ImageFormat::Png),
        other => anyhow::bail!("cannot write {other}-channel images as PNG"),
    }
    .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
