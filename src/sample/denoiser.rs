//! The denoiser `D(x; σ)` the samplers call, on any runtime of [`crate::runtime`]: libtorch
//! (eager, CPU/CUDA), ONNX Runtime (CPU/CUDA EP) or tract. Sampler state is f64; the network
//! runs in f32 (f16 on CUDA for `use_fp16` networks under the libtorch precision policy).

use std::path::Path;

use anyhow::{bail, Result};

use crate::device::DeviceSpec;
use crate::runtime::{Backend, NamedArray, NetKind, Network, Runtime};

pub use crate::runtime::NetInfo;

/// A network evaluated at one scalar σ for a batch.
pub trait Denoiser {
    /// Network facts.
    fn info(&self) -> &NetInfo;
    /// `D(x; σ)` for `x` = `n` images (row-major f64), optional one-hot labels `[n, L]`.
    fn denoise(&mut self, x: &[f64], n: usize, sigma: f64, class_labels: Option<&[f32]>) -> Result<Vec<f64>>;
    /// `D(x_b; σ_b)` with one σ per image (`sigmas.len() == n`), as DG's sampler calls the
    /// network in its Euler step. Default: one [`Denoiser::denoise`] call per distinct σ.
    fn denoise_each(
        &mut self,
        x: &[f64],
        n: usize,
        sigmas: &[f64],
        class_labels: Option<&[f32]>,
    ) -> Result<Vec<f64>> {
        if sigmas.len() != n || n == 0 || x.len() % n != 0 {
            bail!("denoise: {} σ values for {n} images", sigmas.len());
        }
        if sigmas.iter().all(|&s| s == sigmas[0]) {
            return self.denoise(x, n, sigmas[0], class_labels);
        }
        let per = x.len() / n;
        let ld = self.info().label_dim;
        let mut out = vec![0f64; x.len()];
        let mut done = vec![false; n];
        for b0 in 0..n {
            if done[b0] {
                continue;
            }
            let group: Vec<usize> = (b0..n).filter(|&b| !done[b] && sigmas[b] == sigmas[b0]).collect();
            let xs: Vec<f64> = group
                .iter()
                .flat_map(|&b| x[b * per..(b + 1) * per].iter().copied())
                .collect();
            let ls: Option<Vec<f32>> = class_labels.map(|l| {
                group
                    .iter()
                    .flat_map(|&b| l[b * ld..(b + 1) * ld].iter().copied())
                    .collect()
            });
            let d = self.denoise(&xs, group.len(), sigmas[b0], ls.as_deref())?;
            for (j, &b) in group.iter().enumerate() {
                out[b * per..(b + 1) * per].copy_from_slice(&d[j * per..(j + 1) * per]);
                done[b] = true;
            }
        }
        Ok(out)
    }
    /// Runtime description.
    fn describe(&self) -> String;
}

/// `denoise_each` takes one σ per image.
fn check_each(sigmas: &[f64], n: usize) -> Result<()> {
    if sigmas.len() != n {
        bail!("denoise: {} σ values for {n} images", sigmas.len());
    }
    Ok(())
}

/// A denoiser [`Network`] on any runtime, called by the samplers.
pub struct NetDenoiser {
    net: Network,
    info: NetInfo,
    label: String,
}

impl NetDenoiser {
    /// Loads a network file (.pkl/.pt/.safetensors, or .onnx for ort/tract) on `backend`
    /// (ort/tract: a checkpoint is exported to ONNX in memory).
    pub fn load(path: &Path, backend: Backend) -> Result<Self> {
        let net = Network::load(NetKind::Denoiser, path, backend, None)?;
        Self::new(net, path.display().to_string())
    }

    /// Wraps a loaded denoiser network; `label` names it in messages.
    pub fn new(mut net: Network, label: String) -> Result<Self> {
        let info = match net.info() {
            Some(i) if net.kind() == NetKind::Denoiser => i.clone(),
            _ => bail!("{label}: not a denoiser"),
        };
        net.for_sampler();
        Ok(NetDenoiser { net, info, label })
    }

    /// Applies a precision policy to a libtorch network (`use_fp16` networks in f16 on CUDA
    /// unless forced to f32; see [`crate::precision::TchPrecision`]); returns whether it runs
    /// in f16 (false on ONNX runtimes).
    pub fn set_precision(&mut self, p: &crate::precision::TchPrecision) -> bool {
        self.net.set_precision(p).is_some_and(|(_, f16)| f16)
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// `D(x; σ)` with `sigmas` of length 1 (one σ for the batch: a 0-dim σ in PyTorch terms,
    /// expanded to `(N,)` for ONNX graphs) or n (one per image).
    fn run(&mut self, x: &[f64], n: usize, sigmas: &[f64], class_labels: Option<&[f32]>) -> Result<Vec<f64>> {
        let i = &self.info;
        let mut ins = vec![
            NamedArray::new(
                "x",
                vec![n, i.channels, i.resolution, i.resolution],
                x.iter().map(|&v| v as f32).collect(),
            ),
            NamedArray::new(
                "sigma",
                vec![sigmas.len()],
                sigmas.iter().map(|&v| v as f32).collect(),
            ),
        ];
        if let Some(l) = class_labels {
            ins.push(NamedArray::new("class_labels", vec![n, i.label_dim], l.to_vec()));
        }
        let out = self.net.run(ins, &self.label, None)?;
        let d = out
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the denoiser gave no output"))?;
        Ok(d.data.iter().map(|&v| v as f64).collect())
    }
}

impl Denoiser for NetDenoiser {
    fn info(&self) -> &NetInfo {
        &self.info
    }

    fn denoise(&mut self, x: &[f64], n: usize, sigma: f64, class_labels: Option<&[f32]>) -> Result<Vec<f64>> {
        self.run(x, n, &[sigma], class_labels)
    }

    fn denoise_each(
        &mut self,
        x: &[f64],
        n: usize,
        sigmas: &[f64],
        class_labels: Option<&[f32]>,
    ) -> Result<Vec<f64>> {
        check_each(sigmas, n)?;
        self.run(x, n, sigmas, class_labels)
    }

    fn describe(&self) -> String {
        self.net.describe()
    }
}

/// The libtorch constructor of [`NetDenoiser`].
pub struct TchDenoiser;

impl TchDenoiser {
    /// Loads a network file (.pkl/.pt/.safetensors) on libtorch on `device`.
    pub fn load(path: &Path, device: DeviceSpec) -> Result<NetDenoiser> {
        NetDenoiser::load(path, Backend::new(Runtime::Tch, device))
    }
}

/// The ONNX Runtime / tract constructor of [`NetDenoiser`].
pub struct OnnxDenoiser;

impl OnnxDenoiser {
    /// Loads an `.onnx` denoiser, or exports one in memory from a checkpoint, on `rt`.
    pub fn load(path: &Path, rt: Runtime, device: DeviceSpec) -> Result<NetDenoiser> {
        NetDenoiser::load(path, Backend::new(rt, device))
    }
}
