//! NumPy's legacy `RandomState` (MT19937) as far as EDM's dataset subset selection needs it.
//!
//! EDM's `ImageFolderDataset(path, max_size, random_seed)` keeps a random subset when the
//! set has more than `max_size` items:
//!
//! it starts from the indices `0..n` (int64); when `max_size` is given and `n > max_size`, it
//! shuffles them in place with `RandomState(random_seed mod 2^31)`, keeps the first `max_size`
//! and sorts them.
//!
//! * `RandomState(seed)` with an integer seed is MT19937's `init_genrand(seed)`
//!   (`mt[0] = seed`, `mt[i] = 1812433253·(mt[i−1] ⊕ (mt[i−1] ≫ 30)) + i` mod 2³²).
//! * `shuffle` of a 1-D array is the legacy Fisher–Yates: for `i = n−1 … 1`, swap `x[i]` with
//!   `x[j]`, `j = random_interval(i)`.
//! * `random_interval(max)` draws `v = next_u32() & mask` (`mask` = smallest `2^k − 1 ≥ max`)
//!   until `v ≤ max`; for `max > 2³² − 1` it uses `next_u64 = (next_u32 ≪ 32) | next_u32`.
//!
//! The items are then visited in increasing index order (the sorted subset).

/// MT19937 with NumPy's legacy `RandomState` seeding and draws.
#[derive(Clone)]
pub struct RandomState {
    mt: Box<[u32; 624]>,
    pos: usize,
}

impl std::fmt::Debug for RandomState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomState").field("pos", &self.pos).finish()
    }
}

impl RandomState {
    /// `np.random.RandomState(seed)` for an integer seed in `[0, 2³²)`.
    pub fn new(seed: u32) -> Self {
        let mut mt = Box::new([0u32; 624]);
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1812433253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        RandomState { mt, pos: 624 }
    }

    fn refill(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        let mt = &mut self.mt;
        for i in 0..624 {
            let y = (mt[i] & UPPER) | (mt[(i + 1) % 624] & LOWER);
            let mut v = mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= MATRIX_A;
            }
            mt[i] = v;
        }
        self.pos = 0;
    }

    /// The next tempered 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.refill();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `(next_u32 ≪ 32) | next_u32`.
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// NumPy's `random_interval(max)`: uniform in `[0, max]` by masked rejection.
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        if max <= 0xffff_ffff {
            loop {
                let v = self.next_u32() as u64 & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// The generator state: the 624-word MT19937 key and the read position (0…624), as
    /// numpy's `get_state()` returns them (`('MT19937', key, pos, 0, 0.0)`).
    pub fn state(&self) -> (Vec<u32>, usize) {
        (self.mt.to_vec(), self.pos)
    }

    /// A generator restored from [`RandomState::state`]; `None` unless the key has 624 words
    /// and `pos ≤ 624`.
    pub fn from_state(key: &[u32], pos: usize) -> Option<Self> {
        let mt: Box<[u32; 624]> = key.to_vec().into_boxed_slice().try_into().ok()?;
        (pos <= 624).then_some(RandomState { mt, pos })
    }

    /// `RandomState.randint(high)` (default dtype int64) for `high ≥ 1`: `random_interval(high − 1)`
    /// (masked rejection on 32-bit draws while `high − 1 < 2³²`; `high = 1` draws nothing).
    pub fn randint(&mut self, high: u64) -> u64 {
        self.random_interval(high.saturating_sub(1))
    }

    /// `RandomState.shuffle` of a 1-D array (legacy Fisher–Yates from the end).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.random_interval(i as u64) as usize;
            x.swap(i, j);
        }
    }
}

/// The indices EDM's `ImageFolderDataset(max_size, random_seed)` keeps out of `n` items, in
/// increasing order: all of them when `max_size` is `None` or `n ≤ max_size`, else the first
/// `max_size` of `RandomState(seed mod 2³¹).shuffle(arange(n))`, sorted.
pub fn subset_indices(n: usize, max_size: Option<usize>, seed: i64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(m) = max_size {
        if n > m {
            let s = seed.rem_euclid(1 << 31) as u32;
            RandomState::new(s).shuffle(&mut idx);
            idx.truncate(m);
            idx.sort_unstable();
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_outputs() {
        // genrand_int32 after init_genrand(5489): the reference implementation's first outputs
        let mut r = RandomState::new(5489);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [3499211612, 581869302, 3890346734]
        );
    }
}
