//! Position-keyed draws (`tiw::train::draws`): the σ, noise and augmentation a sample gets
//! depend on its global position in the step only — not on how the step is split into
//! ranks and accumulation rounds — and one rank with one round draws exactly what plain
//! `torch.randn` after `manual_seed(step seed)` draws.

use tch::{Device, Kind, Tensor};
use tiw::train::augment::AugmentPipe;
use tiw::train::draws::{Layout, PositionDraws, StepSplit};
use tiw::train::loss::{Draws, TorchDraws};

/// The draws of one augment-pipe call plus σ and noise, as the loss makes them.
fn loss_draws(d: &mut dyn Draws, n: i64) -> Vec<Tensor> {
    let pipe = AugmentPipe::edm(0.5);
    let x = Tensor::zeros([n, 3, 8, 8], (Kind::Float, Device::Cpu));
    let sigma = d.randn(&[n, 1, 1, 1]).unwrap();
    let (aug, labels) = pipe.forward(&x, d).unwrap();
    let noise = d.randn(&[n, 3, 8, 8]).unwrap();
    vec![sigma, aug, labels, noise]
}

/// The draws of every sample of a step split as `world × rounds × batch_gpu`, placed at
/// their global positions.
fn step_by_position(batch: usize, world: usize, batch_gpu: usize, seed: i64, layout: Layout) -> Vec<Tensor> {
    let mut parts: Vec<Vec<(i64, Vec<Tensor>)>> = vec![];
    for rank in 0..world {
        let split = StepSplit::with_layout(batch, world, rank, batch_gpu, layout).unwrap();
        for round in 0..split.rounds() {
            let mut d = PositionDraws::start_round(Device::Cpu, split, round, seed).unwrap();
            let out = loss_draws(&mut d, batch_gpu as i64);
            let pos = split.positions(round);
            for (i, &p) in pos.iter().enumerate() {
                parts.push(vec![(p, out.iter().map(|t| t.get(i as i64)).collect())]);
            }
        }
    }
    let mut rows: Vec<(i64, Vec<Tensor>)> = parts.into_iter().flatten().collect();
    rows.sort_by_key(|r| r.0);
    assert_eq!(rows.len(), batch);
    (0..rows[0].1.len())
        .map(|k| {
            Tensor::stack(
                &rows.iter().map(|r| r.1[k].shallow_clone()).collect::<Vec<_>>(),
                0,
            )
        })
        .collect()
}

#[test]
fn draws_do_not_depend_on_the_split() {
    let seed = 1234;
    let reference = step_by_position(8, 1, 8, seed, Layout::Blocked);
    for layout in [Layout::Blocked, Layout::Interleaved] {
        for (world, bg) in [(1, 2), (1, 4), (2, 4), (2, 2), (4, 1), (8, 1), (2, 1)] {
            let other = step_by_position(8, world, bg, seed, layout);
            for (k, (a, b)) in other.iter().zip(&reference).enumerate() {
                let same = a.equal(b);
                assert!(
                    same,
                    "{layout:?}, world {world}, batch_gpu {bg}: draw {k} differs"
                );
            }
        }
    }
    // one rank, one round: exactly plain draws after manual_seed
    tch::manual_seed(seed);
    let plain = loss_draws(&mut TorchDraws(Device::Cpu), 8);
    for (a, b) in plain.iter().zip(&reference) {
        assert!(a.equal(b), "one rank, one round differs from plain torch draws");
    }
    println!("draws identical for 7 splits × 2 layouts of a step of 8 (bit for bit)");
}

#[test]
fn splits_that_do_not_divide_are_rejected() {
    assert!(StepSplit::new(8, 3, 0, 1).is_err());
    assert!(StepSplit::new(8, 2, 2, 2).is_err());
    assert!(StepSplit::new(8, 2, 0, 3).is_err());
    let s = StepSplit::new(8, 2, 1, 2).unwrap();
    assert_eq!(s.rounds(), 2);
    assert_eq!(s.positions(0), vec![4, 5]);
    assert_eq!(s.positions(1), vec![6, 7]);
    let s = StepSplit::with_layout(8, 2, 1, 2, Layout::Interleaved).unwrap();
    assert_eq!(s.positions(0), vec![1, 3]);
    assert_eq!(s.positions(1), vec![5, 7]);
}
