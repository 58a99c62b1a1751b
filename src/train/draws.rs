//! Random draws keyed by a sample's *global position* in an optimizer step, so that the
//! draws a sample gets do not depend on how the step is split into ranks and rounds.
//!
//! A step of `B` samples (the global `--batch`) is split into `world` ranks × `rounds`
//! accumulation rounds × `b` samples (`b = --batch-gpu`). Where sample `i` of round `j` on
//! rank `k` sits in the step ([`Layout`]):
//!
//! * `Blocked`: `p = k·B/world + j·b + i` — rank `k` holds the `k`-th contiguous block, so
//!   (rank `k`, round `j`) holds exactly the samples of round `k·rounds + j` of a one-process
//!   run with the same `--batch-gpu`: every network call sees the same samples on any world
//!   size (and TIW's official per-call weighting couples the same samples);
//! * `Interleaved`: `p = (j·b + i)·world + k` — the positions EDM's per-rank
//!   `InfiniteSampler` gives rank `k` (stream positions `≡ k (mod world)`).
//!
//! With one rank both are `p = j·b + i`.
//!
//! Every round seeds libtorch's generator with the step's seed and replays the loss's draw
//! sequence at full step size (`B` samples along the batch axis), keeping only its own
//! samples' rows. So sample `p` gets the same σ, noise and augmentation on any world size
//! and any `--batch-gpu`; for one rank and one round the draws are exactly those of a plain
//! `torch.randn([B, …])` sequence after `manual_seed(step seed)`.
//!
//! Dropout is drawn by the network after the loss's draws. To keep the masks of different
//! rounds and ranks independent, [`PositionDraws::before_network`] re-seeds the generator
//! from `(step seed, rank, round)` — except on rank 0's first round, which continues the
//! step's stream (one rank, one round: identical to an unsplit step). Dropout masks
//! therefore depend on the split; everything else does not.

use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

use super::loss::Draws;

/// The generator seed of optimizer step `step` of a run seeded with `seed` (splitmix64 of
/// the pair; a non-negative i64).
pub fn step_seed(seed: u64, step: u64) -> i64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1) as i64
}

/// Where a rank's samples sit in the step (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Rank `k` holds the `k`-th contiguous block of the step.
    Blocked,
    /// Rank `k` holds the positions `≡ k (mod world)` (EDM's per-rank sampler).
    Interleaved,
}

/// How one optimizer step is split: global batch, ranks, rounds per rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSplit {
    /// Samples per optimizer step over all ranks (`--batch`).
    pub batch: usize,
    /// Number of ranks.
    pub world: usize,
    /// This rank.
    pub rank: usize,
    /// Samples per accumulation round on one rank (`--batch-gpu`).
    pub batch_gpu: usize,
    /// Where this rank's samples sit.
    pub layout: Layout,
}

impl StepSplit {
    /// A blocked split; `batch` must be a multiple of `world · batch_gpu`.
    pub fn new(batch: usize, world: usize, rank: usize, batch_gpu: usize) -> Result<Self> {
        Self::with_layout(batch, world, rank, batch_gpu, Layout::Blocked)
    }

    /// A split with the given layout.
    pub fn with_layout(
        batch: usize,
        world: usize,
        rank: usize,
        batch_gpu: usize,
        layout: Layout,
    ) -> Result<Self> {
        ensure!(world > 0 && rank < world, "rank {rank} is not in 0..{world}");
        ensure!(
            batch_gpu > 0 && batch % (world * batch_gpu) == 0,
            "--batch {batch} is not a multiple of {world} rank(s) × --batch-gpu {batch_gpu}"
        );
        Ok(StepSplit {
            batch,
            world,
            rank,
            batch_gpu,
            layout,
        })
    }

    /// Accumulation rounds per rank and step.
    pub fn rounds(&self) -> usize {
        self.batch / (self.world * self.batch_gpu)
    }

    /// Global positions of the samples of `round` on this rank.
    pub fn positions(&self, round: usize) -> Vec<i64> {
        let share = self.batch / self.world;
        (0..self.batch_gpu)
            .map(|i| {
                let local = round * self.batch_gpu + i;
                match self.layout {
                    Layout::Blocked => self.rank * share + local,
                    Layout::Interleaved => local * self.world + self.rank,
                }
            })
            .map(|p| p as i64)
            .collect()
    }
}

/// [`Draws`] for one round: full-step draws from the step's seed, this round's rows kept.
pub struct PositionDraws {
    device: Device,
    split: StepSplit,
    round: usize,
    seed: i64,
    /// `None` when the round holds every position in order (one rank, one round).
    index: Option<Tensor>,
}

impl PositionDraws {
    /// Seeds libtorch's generator for step `seed` and returns the draws of `round`.
    pub fn start_round(device: Device, split: StepSplit, round: usize, seed: i64) -> Result<Self> {
        tch::manual_seed(seed);
        let positions = split.positions(round);
        let identity = positions.len() == split.batch;
        let index = if identity {
            None
        } else {
            Some(Tensor::f_from_slice(&positions)?.f_to_device(device)?)
        };
        Ok(PositionDraws {
            device,
            split,
            round,
            seed,
            index,
        })
    }

    fn full_shape(&self, shape: &[i64], axis: usize) -> Result<Vec<i64>> {
        ensure!(
            shape.get(axis) == Some(&(self.split.batch_gpu as i64)),
            "a draw of shape {shape:?} has no batch axis {axis} of {} samples",
            self.split.batch_gpu
        );
        let mut full = shape.to_vec();
        full[axis] = self.split.batch as i64;
        Ok(full)
    }

    fn keep(&self, full: Tensor, axis: usize) -> Result<Tensor> {
        match &self.index {
            None => Ok(full),
            Some(ix) => Ok(full.f_index_select(axis as i64, ix)?),
        }
    }
}

impl Draws for PositionDraws {
    fn randn_along(&mut self, shape: &[i64], axis: usize) -> Result<Tensor> {
        let full = Tensor::f_randn(self.full_shape(shape, axis)?, (Kind::Float, self.device))?;
        self.keep(full, axis)
    }
    fn rand_along(&mut self, shape: &[i64], axis: usize) -> Result<Tensor> {
        let full = Tensor::f_rand(self.full_shape(shape, axis)?, (Kind::Float, self.device))?;
        self.keep(full, axis)
    }
    fn randint_along(&mut self, high: i64, shape: &[i64], axis: usize) -> Result<Tensor> {
        let full = Tensor::f_randint(high, self.full_shape(shape, axis)?, (Kind::Int64, self.device))?;
        self.keep(full, axis)
    }
    fn before_network(&mut self) -> Result<()> {
        if self.split.rank != 0 || self.round != 0 {
            let key = (self.split.rank * self.split.rounds() + self.round) as u64;
            tch::manual_seed(step_seed(self.seed as u64, key));
        }
        Ok(())
    }
}
