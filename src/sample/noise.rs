//! Per-seed random draws, reproducing generate.py's `StackedRandomGenerator`: one PyTorch
//! generator per seed (seeded `seed mod 2³²`), from which come, in order, the f32 latent
//! `randn([C,R,R])`, the class label `randint(label_dim)` (conditional nets), and one f64
//! `randn([C,R,R])` per sampler step. libtorch's own generator is used on every runtime (the
//! CPU one for `--device cpu`, the CUDA one for `--device cuda`), so `--runtime tch --device
//! cpu` yields exactly `torch.Generator('cpu').manual_seed(seed)`'s stream.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// Draws of one batch.
pub struct BatchNoise {
    /// Latents, `[n, C, R, R]` row-major.
    pub latents: Vec<f32>,
    /// One-hot class labels `[n, L]` (conditional nets).
    pub labels: Option<Vec<f32>>,
    /// Per-step noise, `steps × [n, C, R, R]` (empty when the sampler never uses it).
    pub steps: Vec<Vec<f64>>,
}

fn to_vec<T: tch::kind::Element>(t: &Tensor) -> Result<Vec<T>> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let mut v = vec![T::ZERO; t.numel()];
    t.f_copy_data(&mut v, t.numel())?;
    Ok(v)
}

/// Draws a batch. `steps` = number of per-step draws to make (0 when churn is off, since
/// the official sampler multiplies them by zero). `class` forces one class (after drawing).
pub fn draw(
    seeds: &[u64],
    c: usize,
    r: usize,
    label_dim: usize,
    steps: usize,
    class: Option<usize>,
    device: Device,
) -> Result<BatchNoise> {
    let n = seeds.len();
    let per = c * r * r;
    let mut latents = Vec::with_capacity(n * per);
    let mut labels = (label_dim > 0).then(|| vec![0f32; n * label_dim]);
    let mut step_noise = vec![vec![0f64; n * per]; steps];
    let shape = [c as i64, r as i64, r as i64];
    for (b, &seed) in seeds.iter().enumerate() {
        tch::manual_seed((seed % (1u64 << 32)) as i64);
        latents.extend(to_vec::<f32>(&Tensor::f_randn(shape, (Kind::Float, device))?)?);
        if let Some(l) = labels.as_mut() {
            let k = to_vec::<i64>(&Tensor::f_randint(
                label_dim as i64,
                [] as [i64; 0],
                (Kind::Int64, device),
            )?)?[0] as usize;
            let k = class.unwrap_or(k);
            l[b * label_dim + k.min(label_dim - 1)] = 1.0;
        }
        for s in step_noise.iter_mut() {
            let v = to_vec::<f64>(&Tensor::f_randn(shape, (Kind::Double, device))?)?;
            s[b * per..(b + 1) * per].copy_from_slice(&v);
        }
    }
    Ok(BatchNoise {
        latents,
        labels,
        steps: step_noise,
    })
}
