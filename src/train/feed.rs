//! Adapters between the datasets/augmentation of [`crate::data`] and the training loop's
//! interfaces ([`TrainData`], [`IndexStream`], [`Augment`]).

use anyhow::Result;
use tch::{Device, Tensor};

use super::augment::AugmentPipe;
use super::loss::{Augment, Draws};
use super::score::{IndexStream, TrainData};
use crate::data::image_folder::ImageDataset;
use crate::data::sampler::InfiniteSampler;

/// An EDM dataset (zip or folder) as training data (batches assembled on the CPU).
pub struct FolderData(pub ImageDataset);

impl TrainData for FolderData {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn resolution(&self) -> usize {
        self.0.resolution()
    }
    fn channels(&self) -> usize {
        self.0.channels()
    }
    fn label_dim(&self) -> usize {
        self.0.label_dim()
    }
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        self.0.batch(idx, Device::Cpu)
    }
}

/// EDM's InfiniteSampler (single rank) counting the indices it hands out; a stream at
/// position p is rebuilt by replaying p indices from the seed.
pub struct SamplerStream {
    sampler: InfiniteSampler,
    position: u64,
}

impl SamplerStream {
    /// The training loop's sampler for `n` items and `seed`, advanced to `position`.
    pub fn new(n: usize, seed: u64, position: u64) -> Result<Self> {
        let mut sampler = InfiniteSampler::edm(n, 0, 1, seed as u32)?;
        sampler.advance(position);
        Ok(SamplerStream { sampler, position })
    }
}

impl IndexStream for SamplerStream {
    fn next_index(&mut self) -> usize {
        self.position += 1;
        self.sampler.next().expect("the infinite sampler never ends")
    }
    fn position(&self) -> u64 {
        self.position
    }
}

impl Augment for AugmentPipe {
    fn apply(&self, images: &Tensor, draws: &mut dyn Draws) -> Result<(Tensor, Tensor)> {
        self.forward(images, draws)
    }
}
