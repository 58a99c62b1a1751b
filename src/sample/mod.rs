//! Sampling: the EDM and ablation samplers, per-seed noise, seeds and sharding, and the
//! runtimes' denoisers.

pub mod denoiser;
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
        let (x, _) = sampler::edm_sample(den, &drawn.latents, n, drawn.labels.as_deref(), &settings, &mut |_| {
            Ok(zeros.clone())
        })?;
        out.extend(sampler::to_images(&x, n, c, r));
        on_batch(n);
    }
    Ok(out)
}
