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
    on_batch: impl FnMut(usize),
) -> Result<Vec<u8>> {
    let settings = sampler::SamplerSettings {
        num_steps: steps,
        ..Default::default()
    };
    images_in_batches(den, seeds, batch, 0, on_batch, |den, drawn, n, step_noise| {
        let (x, _) = sampler::edm_sample(
            den,
            &drawn.latents,
            n,
            drawn.labels.as_deref(),
            &settings,
            step_noise,
        )?;
        Ok(x)
    })
}

/// Samples `seeds` in batches of `batch` with `sample`: per batch, the per-seed latents and
/// labels (libtorch CPU generators, as `tiw generate`), `noise_steps` steps of per-seed churn
/// noise (zeros where none were drawn), the final state turned into uint8 images N×H×W×C;
/// `on_batch(n)` after each batch. Images in seed order.
pub(crate) fn images_in_batches(
    den: &mut dyn denoiser::Denoiser,
    seeds: &[u64],
    batch: usize,
    noise_steps: usize,
    mut on_batch: impl FnMut(usize),
    mut sample: impl FnMut(
        &mut dyn denoiser::Denoiser,
        &noise::BatchNoise,
        usize,
        &mut dyn FnMut(usize) -> Result<Vec<f64>>,
    ) -> Result<Vec<f64>>,
) -> Result<Vec<u8>> {
    let info = den.info().clone();
    let (c, r) = (info.channels, info.resolution);
    let mut out = Vec::with_capacity(seeds.len() * c * r * r);
    for chunk in seeds.chunks(batch.max(1)) {
        let n = chunk.len();
        let drawn = noise::draw(chunk, c, r, info.label_dim, noise_steps, None, tch::Device::Cpu)?;
        let zeros = vec![0f64; n * c * r * r];
        let mut step_noise = |i: usize| Ok(drawn.steps.get(i).cloned().unwrap_or_else(|| zeros.clone()));
        let x = sample(den, &drawn, n, &mut step_noise)?;
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
