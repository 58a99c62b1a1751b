//! Seed lists (`0-49999`, `1,5,7-9`) and the official per-rank batching.

use anyhow::{bail, Context, Result};

/// Parses `a-b` ranges and comma lists, in order (like generate.py's `parse_int_list`).
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u64 = a.trim().parse().with_context(|| format!("seed range {part:?}"))?;
                let b: u64 = b.trim().parse().with_context(|| format!("seed range {part:?}"))?;
                if b < a {
                    bail!("seed range {part:?} is empty (end before start)");
                }
                if b - a >= 100_000_000 {
                    bail!("seed range {part:?} has more than 10^8 seeds");
                }
                out.extend(a..=b);
            }
            None => out.push(
                part.parse()
                    .with_context(|| format!("seed {part:?} is not a non-negative integer"))?,
            ),
        }
    }
    if out.is_empty() {
        bail!("no seeds given");
    }
    Ok(out)
}

/// `torch.tensor_split(seeds, k)`: k chunks, the first `len mod k` one element longer.
pub fn tensor_split(seeds: &[u64], k: usize) -> Vec<Vec<u64>> {
    let n = seeds.len();
    let (q, r) = (n / k, n % k);
    let mut out = Vec::with_capacity(k);
    let mut s = 0;
    for i in 0..k {
        let len = q + usize::from(i < r);
        out.push(seeds[s..s + len].to_vec());
        s += len;
    }
    out
}

/// The batches of shard `rank` of `world` as generate.py assigns them to ranks:
/// `num_batches = ((len − 1) // (batch·world) + 1)·world`, split evenly, rank r takes chunks
/// r, r + world, …. Empty chunks (more chunks than seeds) are dropped.
pub fn shard_batches(seeds: &[u64], batch: usize, rank: usize, world: usize) -> Vec<Vec<u64>> {
    let num_batches = ((seeds.len() - 1) / (batch * world) + 1) * world;
    tensor_split(seeds, num_batches)
        .into_iter()
        .skip(rank)
        .step_by(world)
        .filter(|b| !b.is_empty())
        .collect()
}

/// Parses `I/N` (0 ≤ I < N).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard {s:?}: expected I/N"))?;
    let (i, n): (usize, usize) = (i.trim().parse()?, n.trim().parse()?);
    if n == 0 || i >= n {
        bail!("--shard {s:?}: need 0 <= I < N");
    }
    Ok((i, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_syntax() {
        assert_eq!(parse_seeds("1,5,7-9").unwrap(), vec![1, 5, 7, 8, 9]);
        assert_eq!(parse_seeds("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert!(parse_seeds("5-1").is_err());
        assert!(parse_seeds("x").is_err());
    }

    #[test]
    fn official_split_50k_two_ranks() {
        let seeds: Vec<u64> = (0..50_000).collect();
        let r0 = shard_batches(&seeds, 64, 0, 2);
        let r1 = shard_batches(&seeds, 64, 1, 2);
        assert_eq!(r0.len() + r1.len(), 782);
        let sizes: Vec<usize> = tensor_split(&seeds, 782).iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().filter(|&&s| s == 64).count(), 734);
        assert_eq!(sizes.iter().filter(|&&s| s == 63).count(), 48);
        let mut all: Vec<u64> = r0.into_iter().chain(r1).flatten().collect();
        all.sort();
        assert_eq!(all, seeds);
    }
}
