//! Adapters between the datasets/augmentation of [`crate::data`] and the training loop's
//! interfaces ([`TrainData`], [`IndexStream`], [`Augment`]).

use anyhow::Result;
use tch::{Device, Tensor};

use super::augment::AugmentPipe;
use super::loss::{Augment, Draws};
use super::options::SamplerSplit;
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

/// EDM's InfiniteSampler as one rank's index stream, counting positions globally: a
/// stream at global position `p` (a step boundary) is rebuilt by replaying from the seed.
///
/// * [`SamplerSplit::Global`]: one stream for all ranks; rank `k` of `N` takes the `k`-th
///   block of `batch / N` positions of every step of `batch` (the blocked layout of
///   [`crate::train::draws`]): the data order is that of one process on any world size.
/// * [`SamplerSplit::Rank`]: EDM's own split: rank `k` runs its own copy of the stream and
///   takes the positions `≡ k (mod N)` (interleaved layout).
pub struct SamplerStream {
    sampler: InfiniteSampler,
    rank: u64,
    world: u64,
    /// Positions per step (the global batch).
    batch: u64,
    split: SamplerSplit,
    /// Global positions the underlying sampler has passed (`Global` split).
    passed: u64,
    /// Indices this rank has handed out since position 0.
    yielded: u64,
}

impl SamplerStream {
    /// The single-rank stream for `n` items and `seed`, advanced to `position`.
    pub fn new(n: usize, seed: u64, position: u64) -> Result<Self> {
        Self::for_rank(n, seed, position, 0, 1, 1, SamplerSplit::Global)
    }

    /// Rank `rank` of `world`'s stream for steps of `batch` indices, advanced to global
    /// `position` (a multiple of the world size; rounded down to one otherwise).
    pub fn for_rank(
        n: usize,
        seed: u64,
        position: u64,
        rank: usize,
        world: usize,
        batch: usize,
        split: SamplerSplit,
    ) -> Result<Self> {
        if world == 0 || batch % world != 0 {
            anyhow::bail!("a batch of {batch} does not split over {world} rank(s)");
        }
        let (world64, batch64) = (world as u64, batch as u64);
        let (sampler, passed) = match split {
            SamplerSplit::Rank => {
                let mut s = InfiniteSampler::edm(n, rank, world, seed as u32)?;
                s.advance(position / world64);
                (s, 0)
            }
            SamplerSplit::Global => {
                let mut s = InfiniteSampler::edm(n, 0, 1, seed as u32)?;
                let start = position / world64 * world64;
                s.advance(start);
                (s, start)
            }
        };
        Ok(SamplerStream {
            sampler,
            rank: rank as u64,
            world: world64,
            batch: batch64,
            split,
            passed,
            yielded: position / world64,
        })
    }

    /// The global position of this rank's `j`-th index (`Global` split).
    fn global_position(&self, j: u64) -> u64 {
        let share = self.batch / self.world;
        (j / share) * self.batch + self.rank * share + j % share
    }
}

impl IndexStream for SamplerStream {
    fn next_index(&mut self) -> usize {
        let j = self.yielded;
        self.yielded += 1;
        match self.split {
            SamplerSplit::Rank => self.sampler.next().expect("the infinite sampler never ends"),
            SamplerSplit::Global => {
                let target = self.global_position(j);
                while self.passed < target {
                    self.sampler.next();
                    self.passed += 1;
                }
                self.passed += 1;
                self.sampler.next().expect("the infinite sampler never ends")
            }
        }
    }
    fn position(&self) -> u64 {
        self.yielded * self.world
    }
}

impl Augment for AugmentPipe {
    fn apply(&self, images: &Tensor, draws: &mut dyn Draws) -> Result<(Tensor, Tensor)> {
        self.forward(images, draws)
    }
}
