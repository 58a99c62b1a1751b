//! Discriminator-training images (SPEC §5.4): `np.load(path)["samples"]`, uint8 `N×H×W×C`.
//!
//! Accepted sources:
//! * an `.npz` holding `samples` (or `images`) — `np.savez` (stored) or `np.savez_compressed`
//!   (deflate) — read through [`crate::data::images::ImageSet`] (declared sizes checked against
//!   the bytes present; other arrays such as `label` are ignored). All images are held in memory,
//!   as the official `np.load(...)["samples"]` does;
//! * a dataset `.zip` or directory ([`ImageDataset`]; images only, labels ignored).
//!
//! Tensors follow `train_classifier.BasicDataset(..., transforms.ToTensor())` and its scaling:
//! `ToTensor` = `HWC → CHW`, `f32(x) / 255`; the network input is `2·t − 1`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use super::image_folder::{DatasetOptions, ImageDataset};
use crate::data::images::ImageSet;

enum Inner {
    /// `N×H×W×C` bytes.
    Memory(Vec<u8>),
    Folder(Box<ImageDataset>),
}

/// Discriminator-training images (see the module docs).
pub struct SamplesDataset {
    n: usize,
    /// `[C, H, W]`.
    shape: [usize; 3],
    inner: Inner,
}

impl std::fmt::Debug for SamplesDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplesDataset")
            .field("len", &self.n)
            .field("shape", &self.shape)
            .finish()
    }
}

impl SamplesDataset {
    /// Opens an `.npz` (by extension) or a dataset zip/directory.
    pub fn open(path: &Path) -> Result<Self> {
        let is_npz = path
            .extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("npz"));
        if !is_npz {
            let ds = ImageDataset::open(path, DatasetOptions::default())?;
            return Ok(SamplesDataset {
                n: ds.len(),
                shape: ds.image_shape(),
                inner: Inner::Folder(Box::new(ds)),
            });
        }
        let set = ImageSet::open(path)?;
        let mut reader = set.reader()?;
        let n = set.len();
        let mut data = Vec::new();
        let mut shape = [0usize; 3];
        for i in 0..n {
            let img = reader.load(i)?;
            let s = [img.channels, img.height, img.width];
            if i == 0 {
                shape = s;
                data.reserve_exact(n * img.data.len());
            }
            data.extend_from_slice(&img.data);
        }
        if n == 0 {
            bail!("{}: the samples array holds no images", path.display());
        }
        Ok(SamplesDataset {
            n,
            shape,
            inner: Inner::Memory(data),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Image shape `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        self.shape
    }

    /// Image height (= resolution for square images).
    pub fn resolution(&self) -> usize {
        self.shape[1]
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.shape[0]
    }

    /// Image `i` as uint8 `H×W×C` (the `samples[i]` layout).
    pub fn image_hwc(&self, i: usize) -> Result<Vec<u8>> {
        if i >= self.n {
            bail!("image {i} out of range ({} images)", self.n);
        }
        let [c, h, w] = self.shape;
        match &self.inner {
            Inner::Memory(d) => Ok(d[i * c * h * w..(i + 1) * c * h * w].to_vec()),
            Inner::Folder(ds) => {
                let chw = ds.image(i)?;
                let plane = h * w;
                let mut hwc = vec![0u8; chw.len()];
                for ch in 0..c {
                    for p in 0..plane {
                        hwc[p * c + ch] = chw[ch * plane + p];
                    }
                }
                Ok(hwc)
            }
        }
    }

    /// `ToTensor` of images `idx`: `[B, C, H, W]` f32 `x / 255` on `device`.
    pub fn to_unit_tensor(&self, idx: &[usize], device: Device) -> Result<Tensor> {
        let [c, h, w] = self.shape;
        let mut bytes = Vec::with_capacity(idx.len() * c * h * w);
        for &i in idx {
            bytes.extend(self.image_hwc(i).with_context(|| format!("samples[{i}]"))?);
        }
        Ok(Tensor::from_slice(&bytes)
            .f_reshape([idx.len() as i64, h as i64, w as i64, c as i64])?
            .f_to_device(device)?
            .f_permute([0, 3, 1, 2])?
            .f_contiguous()?
            .f_to_kind(Kind::Float)?
            .f_div_scalar(255.0)?)
    }

    /// The discriminator's input for images `idx`: `2·ToTensor(x) − 1`, `[B, C, H, W]` f32.
    pub fn to_tensor(&self, idx: &[usize], device: Device) -> Result<Tensor> {
        Ok(self
            .to_unit_tensor(idx, device)?
            .f_mul_scalar(2.0)?
            .f_sub_scalar(1.0)?)
    }
}
