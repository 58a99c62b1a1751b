//! EDM's `InfiniteSampler` (SPEC §5.1), index stream identical to numpy's.
//!
//! With `shuffle`: `order = arange(N)` shuffled by `RandomState(seed)`, `window =
//! rint(window_size·N)` (round half to even). Then for `idx = 0, 1, …`: `i = idx mod N`; when
//! `idx mod world == rank` the sampler yields `order[i]` and, if `window ≥ 2`, swaps `order[i]`
//! with `order[j]`, `j = (i − rnd.randint(window)) mod N`. Without `shuffle` it cycles
//! `0 … N−1` (this rank's share). Each rank runs its own copy of the stream, so its swaps
//! depend only on its own positions.
//!
//! The generator is [`RandomState`] (MT19937 with numpy's legacy seeding, `shuffle` and
//! masked-rejection `randint`). [`SamplerState`] captures everything needed to continue the
//! stream exactly (training resume); [`InfiniteSampler::advance`] replays instead.

use anyhow::{bail, Result};

use crate::data::random::RandomState;

/// An endless stream of dataset indices for one rank (see the module docs).
#[derive(Debug, Clone)]
pub struct InfiniteSampler {
    rank: usize,
    world: usize,
    order: Vec<usize>,
    rng: Option<RandomState>,
    window: u64,
    idx: u64,
}

/// A resumable snapshot of an [`InfiniteSampler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerState {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Next global position `idx` (counts every rank's positions).
    pub idx: u64,
    /// Current permutation.
    pub order: Vec<usize>,
    /// Swap window (0 or 1 = no swaps).
    pub window: u64,
    /// MT19937 key (624 words) and position, `None` without shuffle.
    pub rng: Option<(Vec<u32>, usize)>,
}

impl InfiniteSampler {
    /// EDM's `InfiniteSampler(dataset of n items, rank, num_replicas=world, shuffle, seed,
    /// window_size)`; EDM's defaults are `shuffle = true`, `seed = 0`, `window_size = 0.5`.
    pub fn new(
        n: usize,
        rank: usize,
        world: usize,
        shuffle: bool,
        seed: u32,
        window_size: f64,
    ) -> Result<Self> {
        if n == 0 {
            bail!("InfiniteSampler: the dataset is empty");
        }
        if world == 0 || rank >= world {
            bail!("InfiniteSampler: rank {rank} is not in 0..{world}");
        }
        if !(0.0..=1.0).contains(&window_size) {
            bail!("InfiniteSampler: window_size {window_size} is not in [0, 1]");
        }
        let mut order: Vec<usize> = (0..n).collect();
        let (rng, window) = if shuffle {
            let mut rng = RandomState::new(seed);
            rng.shuffle(&mut order);
            let window = (n as f64 * window_size).round_ties_even() as u64;
            (Some(rng), window)
        } else {
            (None, 0)
        };
        Ok(InfiniteSampler {
            rank,
            world,
            order,
            rng,
            window,
            idx: 0,
        })
    }

    /// The training loop's sampler: shuffled, window 0.5.
    pub fn edm(n: usize, rank: usize, world: usize, seed: u32) -> Result<Self> {
        Self::new(n, rank, world, true, seed, 0.5)
    }

    /// Advances past the next `count` yielded indices (replay; O(count·world)).
    pub fn advance(&mut self, count: u64) {
        for _ in 0..count {
            self.next();
        }
    }

    /// The state to continue this stream later.
    pub fn state(&self) -> SamplerState {
        SamplerState {
            rank: self.rank,
            world: self.world,
            idx: self.idx,
            order: self.order.clone(),
            window: self.window,
            rng: self.rng.as_ref().map(RandomState::state),
        }
    }

    /// A sampler continuing from `s`; errors when `s` is inconsistent.
    pub fn from_state(s: &SamplerState) -> Result<Self> {
        let n = s.order.len();
        let mut seen = vec![false; n];
        for &o in &s.order {
            if o >= n || std::mem::replace(&mut seen[o], true) {
                bail!("sampler state: order is not a permutation of 0..{n}");
            }
        }
        if n == 0 || s.world == 0 || s.rank >= s.world || s.window > n as u64 {
            bail!("sampler state: inconsistent rank/world/window/order");
        }
        let rng = match &s.rng {
            Some((key, pos)) => Some(
                RandomState::from_state(key, *pos)
                    .ok_or_else(|| anyhow::anyhow!("sampler state: bad MT19937 state"))?,
            ),
            None => None,
        };
        Ok(InfiniteSampler {
            rank: s.rank,
            world: s.world,
            order: s.order.clone(),
            rng,
            window: s.window,
            idx: s.idx,
        })
    }

    /// The state as JSON (`{"rank", "world", "idx", "window", "order": [...], "mt_key":
    /// [...]|null, "mt_pos"}`).
    pub fn state_json(&self) -> serde_json::Value {
        let s = self.state();
        serde_json::json!({
            "rank": s.rank, "world": s.world, "idx": s.idx, "window": s.window, "order": s.order,
            "mt_key": s.rng.as_ref().map(|r| r.0.clone()), "mt_pos": s.rng.as_ref().map_or(0, |r| r.1),
        })
    }

    /// A sampler from [`InfiniteSampler::state_json`]'s output.
    pub fn from_state_json(v: &serde_json::Value) -> Result<Self> {
        let u = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| anyhow::anyhow!("sampler state: missing or bad {k:?}"))
        };
        let arr = |k: &str| -> Result<Option<Vec<u64>>> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_u64()
                            .ok_or_else(|| anyhow::anyhow!("sampler state: bad {k:?}"))
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some),
                Some(_) => bail!("sampler state: bad {k:?}"),
            }
        };
        let order = arr("order")?.ok_or_else(|| anyhow::anyhow!("sampler state: no order"))?;
        let key = arr("mt_key")?;
        let rng = match key {
            Some(k) => Some((
                k.iter()
                    .map(|&x| u32::try_from(x).map_err(|_| anyhow::anyhow!("sampler state: bad mt_key")))
                    .collect::<Result<Vec<_>>>()?,
                u("mt_pos")? as usize,
            )),
            None => None,
        };
        Self::from_state(&SamplerState {
            rank: u("rank")? as usize,
            world: u("world")? as usize,
            idx: u("idx")?,
            order: order.into_iter().map(|x| x as usize).collect(),
            window: u("window")?,
            rng,
        })
    }
}

impl Iterator for InfiniteSampler {
    type Item = usize;

    /// The next index of this rank (never `None`).
    fn next(&mut self) -> Option<usize> {
        let n = self.order.len() as u64;
        loop {
            let idx = self.idx;
            self.idx += 1;
            if idx % self.world as u64 != self.rank as u64 {
                continue;
            }
            let i = (idx % n) as usize;
            let out = self.order[i];
            if self.window >= 2 {
                if let Some(rng) = self.rng.as_mut() {
                    let r = rng.randint(self.window);
                    let j = ((i as u64 + n - r % n) % n) as usize;
                    self.order.swap(i, j);
                }
            }
            return Some(out);
        }
    }
}
