//! AugmentPipe (SPEC §5.3): pinned-draw cases with known outputs, label layout, and the
//! distributions of the drawn parameters.

mod common;

use std::collections::VecDeque;

use common::tolerances::TOL_AUGMENT;
use tch::{Device, Kind, Tensor};
use tiw::parity::norm_err;
use tiw::train::augment::AugmentPipe;
use tiw::train::loss::{Recorded, TorchDraws};

fn vals(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
}

fn f(shape: &[i64], v: &[f32]) -> Tensor {
    let n: i64 = shape.iter().product();
    let t = if v.len() == 1 {
        Tensor::from_slice(&vec![v[0]; n as usize])
    } else {
        Tensor::from_slice(v)
    };
    t.reshape(shape)
}

fn i(shape: &[i64], v: &[i64]) -> Tensor {
    Tensor::from_slice(v).reshape(shape)
}

/// The 14 draws of `AugmentPipe::edm` for one sample, in the official order:
/// xflip (randint, U), yflip (randint, U), scale (randn, U), rotate (U₁, U), aniso (randn, U₁ for
/// r, U, U for r), translate (randn [2,1], U [1,1]).
#[allow(clippy::too_many_arguments)]
fn draws1(
    xflip: i64,
    yflip: i64,
    scale_w: f32,
    rot_u: f32,
    aniso_w: f32,
    aniso_r_u: f32,
    aniso_r_keep: f32,
    tx: f32,
    ty: f32,
) -> Recorded {
    let c = [1, 1, 1, 1];
    Recorded(VecDeque::from(vec![
        i(&c, &[xflip]),
        f(&c, &[0.0]),
        i(&c, &[yflip]),
        f(&c, &[0.0]),
        f(&[1], &[scale_w]),
        f(&[1], &[0.0]),
        f(&[1], &[rot_u]),
        f(&[1], &[0.0]),
        f(&[1], &[aniso_w]),
        f(&[1], &[aniso_r_u]),
        f(&[1], &[0.0]),
        f(&[1], &[aniso_r_keep]),
        f(&[2, 1], &[tx, ty]),
        f(&[1, 1], &[0.0]),
    ]))
}

fn test_image(c: i64, h: i64, w: i64) -> Tensor {
    tch::manual_seed(7);
    Tensor::rand([1, c, h, w], (Kind::Float, Device::Cpu)) * 2.0 - 1.0
}

// Tolerance 5e-6 (not exact): the geometric path always runs, and the f32 normalisation
// matrices S(2/W_up)·…·S(W_out/2) are not exactly the identity in f32 (as in the official
// code), shifting sampling positions by ~1e-6 px; f64 images give the same ~2e-6 error, so
// it is not the image arithmetic.
#[test]
fn identity_parameters_return_the_input() {
    let x = test_image(3, 16, 16);
    let pipe = AugmentPipe::edm(1.0);
    let (y, labels) = pipe
        .forward(&x, &mut draws1(0, 0, 0.0, 0.5, 0.0, 0.5, 0.9, 0.0, 0.0))
        .unwrap();
    let e = norm_err(&vals(&y), &vals(&x));
    println!("identity: normalised error {e:.3e}");
    assert!(e <= TOL_AUGMENT, "identity augmentation error {e}");
    assert_eq!(vals(&labels), vec![0f32; 9]);
    let xd = x.to_kind(Kind::Double);
    let (yd, _) = pipe
        .forward(&xd, &mut draws1(0, 0, 0.0, 0.5, 0.0, 0.5, 0.9, 0.0, 0.0))
        .unwrap();
    let ed = (yd - &xd).abs().max().double_value(&[]);
    println!("identity in f64 images: max abs error {ed:.3e}");
}

#[test]
fn xflip_is_exact() {
    let x = test_image(3, 8, 8);
    // geometry off: bit-exact torch.flip along W
    let mut pipe = AugmentPipe::none(1.0);
    pipe.xflip = 1e8;
    let mut d = Recorded(VecDeque::from(vec![
        i(&[1, 1, 1, 1], &[1]),
        f(&[1, 1, 1, 1], &[0.9]),
    ]));
    let (y, labels) = pipe.forward(&x, &mut d).unwrap();
    assert_eq!(vals(&y), vals(&x.flip([3])));
    assert_eq!(vals(&labels), vec![1.0]);
    // the full pipe with identity geometry: flip up to f32 rounding of the resampling
    let x = test_image(3, 16, 16);
    let (y, labels) = AugmentPipe::edm(1.0)
        .forward(&x, &mut draws1(1, 0, 0.0, 0.5, 0.0, 0.5, 0.9, 0.0, 0.0))
        .unwrap();
    let e = norm_err(&vals(&y), &vals(&x.flip([3])));
    println!("xflip through the geometric path: normalised error {e:.3e}");
    assert!(e <= TOL_AUGMENT, "{e}");
    assert_eq!(vals(&labels)[..2], [1.0, 0.0]);
    // and yflip
    let (y, _) = AugmentPipe::edm(1.0)
        .forward(&x, &mut draws1(0, 1, 0.0, 0.5, 0.0, 0.5, 0.9, 0.0, 0.0))
        .unwrap();
    let e = norm_err(&vals(&y), &vals(&x.flip([2])));
    assert!(e <= TOL_AUGMENT, "yflip {e}");
}

#[test]
fn integer_translation_is_exact_in_the_interior() {
    // W = H = 16: shift = w·0.125·16 = 2w px. tx w = 1 → +2 px in x, ty w = −0.5 → −1 px in y:
    // out[y][x] = in[y + 1][x − 2] for x in 2..16, y in 0..15 (the pixels whose source lies in
    // the image); elsewhere the source is the reflect padding.
    let x = test_image(2, 16, 16);
    let (y, labels) = AugmentPipe::edm(1.0)
        .forward(&x, &mut draws1(0, 0, 0.0, 0.5, 0.0, 0.5, 0.9, 1.0, -0.5))
        .unwrap();
    let got = y.narrow(3, 2, 14).narrow(2, 0, 15);
    let want = x.narrow(3, 0, 14).narrow(2, 1, 15);
    let e = norm_err(&vals(&got), &vals(&want));
    println!("translation (+2, −1) px, interior 15×14: normalised error {e:.3e}");
    assert!(e <= TOL_AUGMENT, "{e}");
    // the reflected border: column 1 of the output is source column −1 → reflect → column 1
    let got = y.narrow(3, 1, 1).narrow(2, 0, 15);
    let want = x.narrow(3, 1, 1).narrow(2, 1, 15);
    let e2 = norm_err(&vals(&got), &vals(&want));
    println!(
        "reflected column: {e2:.3e}; out col0 {:?} in cols {:?}",
        vals(&y.narrow(3, 0, 2).narrow(2, 0, 1).narrow(1, 0, 1)),
        vals(&x.narrow(3, 0, 3).narrow(2, 1, 1).narrow(1, 0, 1))
    );
    assert!(e2 <= TOL_AUGMENT);
    assert_eq!(vals(&labels)[7..], [1.0, -0.5]);
}

#[test]
fn labels_have_the_documented_layout() {
    // scale w = 0.5, rotation U₁ = 0.75 → w = π/2, aniso w = −1 with r: U₁ = 0.25 → −π/2 kept
    // (U = 0.1 < 0.5), translate (0.3, −0.7)
    let pipe = AugmentPipe::edm(1.0);
    let mut d = draws1(1, 0, 0.5, 0.75, -1.0, 0.25, 0.1, 0.3, -0.7);
    let p = pipe.sample(1, 8, 8, &mut d, Device::Cpu).unwrap();
    let l = vals(&p.labels);
    let pi = std::f32::consts::PI;
    let want = [
        1.0,
        0.0,
        0.5,
        (pi / 2.0).cos() - 1.0,
        (pi / 2.0).sin(),
        -(-pi / 2.0).cos(),
        -(-pi / 2.0).sin(),
        0.3,
        -0.7,
    ];
    println!("labels {l:?}");
    for k in 0..9 {
        assert!(
            (l[k] - want[k]).abs() <= 1e-6,
            "slot {k}: {} vs {}",
            l[k],
            want[k]
        );
    }
    // the anisotropy rotation is dropped when its coin fails (U = 0.9 ≥ 0.5): [w, 0]
    let mut d = draws1(0, 1, 0.0, 0.5, -1.0, 0.25, 0.9, 0.0, 0.0);
    let l = vals(&pipe.sample(1, 8, 8, &mut d, Device::Cpu).unwrap().labels);
    assert_eq!(l[..2], [0.0, 1.0]);
    assert_eq!(l[5..7], [-1.0, 0.0]);
    // p = 0: every op's coin fails (U = 0 is not < 0), labels all 0 even for drawn w ≠ 0
    let mut d = draws1(1, 1, 0.5, 0.75, -1.0, 0.25, 0.1, 0.3, -0.7);
    let l = vals(
        &AugmentPipe::edm(0.0)
            .sample(1, 8, 8, &mut d, Device::Cpu)
            .unwrap()
            .labels,
    );
    assert_eq!(l[..5], [0.0; 5]);
    assert_eq!(l[7..], [0.0; 2]);
    // the anisotropy rotation coin does not depend on p: w = 0 but r kept → labels still 0
    assert_eq!(l[5..7], [0.0, 0.0]);
}

#[test]
fn tiny_p_keeps_only_the_flip() {
    // q·p: xflip 1e8·1e-7 = 10 (always eligible), every other op 1e-7 (U = 1e-3 fails)
    let x = test_image(3, 16, 16);
    let c = [1, 1, 1, 1];
    let mut d = Recorded(VecDeque::from(vec![
        i(&c, &[1]),
        f(&c, &[0.999]),
        i(&c, &[1]),
        f(&c, &[1e-3]),
        f(&[1], &[1.3]),
        f(&[1], &[1e-3]),
        f(&[1], &[0.9]),
        f(&[1], &[1e-3]),
        f(&[1], &[2.0]),
        f(&[1], &[0.2]),
        f(&[1], &[1e-3]),
        f(&[1], &[0.9]),
        f(&[2, 1], &[1.0, 1.0]),
        f(&[1, 1], &[1e-3]),
    ]));
    let (y, labels) = AugmentPipe::edm(1e-7).forward(&x, &mut d).unwrap();
    let e = norm_err(&vals(&y), &vals(&x.flip([3])));
    println!("p = 1e-7: only the x-flip, normalised error {e:.3e}");
    assert!(e <= TOL_AUGMENT, "{e}");
    assert_eq!(vals(&labels), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    // p = 0 exactly: q·p = 0 for the flip too, so nothing changes
    let mut d = draws1(1, 1, 0.5, 0.75, -1.0, 0.25, 0.1, 0.3, -0.7);
    let (y, _) = AugmentPipe::edm(0.0).forward(&x, &mut d).unwrap();
    assert!(norm_err(&vals(&y), &vals(&x)) <= TOL_AUGMENT);
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

#[test]
fn parameter_distributions() {
    let n = 10_000i64;
    tch::manual_seed(123);
    let mut draws = TorchDraws(Device::Cpu);
    let p = AugmentPipe::edm(1.0)
        .sample(n, 32, 32, &mut draws, Device::Cpu)
        .unwrap();
    let l = Vec::<f32>::try_from(p.labels.contiguous().view(-1)).unwrap();
    let col = |k: usize| -> Vec<f32> { (0..n as usize).map(|r| l[r * 9 + k]).collect() };
    // 4σ bounds for a proportion of 10k draws: ±0.02
    for (k, what) in [(0, "xflip"), (1, "yflip")] {
        let (m, _) = mean_std(&col(k));
        println!("{what} rate {m:.4}");
        assert!((m - 0.5).abs() < 0.02, "{what} rate {m}");
    }
    let (m, s) = mean_std(&col(2));
    println!("scale w mean {m:.4} std {s:.4}");
    assert!(m.abs() < 0.04 && (s - 1.0).abs() < 0.03);
    // rotation angle from (cos − 1, sin): uniform on (−π, π): mean 0, std π/√3, quarters 25%
    let ang: Vec<f32> = col(3).iter().zip(col(4)).map(|(c, s)| s.atan2(c + 1.0)).collect();
    let (m, s) = mean_std(&ang);
    let q = ang
        .iter()
        .filter(|&&a| a > 0.0 && a < std::f32::consts::FRAC_PI_2)
        .count() as f64
        / n as f64;
    println!("rotation mean {m:.4} std {s:.4} (π/√3 = 1.8138), (0, π/2) share {q:.4}");
    assert!(m.abs() < 0.08 && (s - 1.8138).abs() < 0.04 && (q - 0.25).abs() < 0.02);
    // anisotropy: r kept with prob 0.5 → half of the sin components are exactly 0;
    // the norm of (w cos r, w sin r) is |w|, w ~ N(0,1): E|w| = √(2/π)
    let (a, b) = (col(5), col(6));
    let zero = b.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
    let norm: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x.hypot(*y)).collect();
    let (mn, _) = mean_std(&norm);
    println!("aniso r dropped {zero:.4}, E|w| {mn:.4} (0.7979)");
    assert!((zero - 0.5).abs() < 0.02 && (mn - 0.7979).abs() < 0.03);
    for (k, what) in [(7, "tx"), (8, "ty")] {
        let (m, s) = mean_std(&col(k));
        println!("{what} mean {m:.4} std {s:.4}");
        assert!(m.abs() < 0.04 && (s - 1.0).abs() < 0.03);
    }
    // with p = 0.12 the continuous ops are applied to ~12% of samples, the x-flip still to ~50%
    let p = AugmentPipe::edm(0.12)
        .sample(n, 32, 32, &mut draws, Device::Cpu)
        .unwrap();
    let l = Vec::<f32>::try_from(p.labels.contiguous().view(-1)).unwrap();
    let rate = |k: usize| (0..n as usize).filter(|&r| l[r * 9 + k] != 0.0).count() as f64 / n as f64;
    println!(
        "p = 0.12: xflip {:.4} yflip {:.4} scale {:.4} rot {:.4} aniso {:.4} translate {:.4}",
        rate(0),
        rate(1),
        rate(2),
        rate(4),
        rate(5),
        rate(7)
    );
    assert!((rate(0) - 0.5).abs() < 0.02);
    assert!((rate(1) - 0.06).abs() < 0.012);
    for k in [2, 4, 5, 7] {
        assert!((rate(k) - 0.12).abs() < 0.015, "slot {k}: {}", rate(k));
    }
}

#[test]
fn random_images_keep_shape_and_range() {
    // full pipeline with library draws on a batch: shape kept, finite, values bounded by the
    // filter's overshoot
    tch::manual_seed(5);
    let x = Tensor::rand([6, 3, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let (y, labels) = AugmentPipe::edm(1.0)
        .forward(&x, &mut TorchDraws(Device::Cpu))
        .unwrap();
    assert_eq!(y.size(), [6, 3, 8, 8]);
    assert_eq!(labels.size(), [6, 9]);
    let v = vals(&y);
    assert!(v.iter().all(|x| x.is_finite() && x.abs() < 2.0));
}

#[test]
fn cuda_matches_cpu_when_available() {
    if tiw::device::load_cuda_backend().is_err() || !tch::Cuda::is_available() {
        println!("SKIPPED: no CUDA device");
        return;
    }
    let x = test_image(3, 16, 16);
    let d = || draws1(1, 0, 0.7, 0.8, -0.4, 0.3, 0.2, 0.6, -0.9);
    let pipe = AugmentPipe::edm(1.0);
    let (yc, lc) = pipe.forward(&x, &mut d()).unwrap();
    let (yg, lg) = pipe.forward(&x.to_device(Device::Cuda(0)), &mut d()).unwrap();
    assert_eq!(yg.device(), Device::Cuda(0));
    let e = norm_err(&vals(&yg.to_device(Device::Cpu)), &vals(&yc));
    let el = norm_err(&vals(&lg.to_device(Device::Cpu)), &vals(&lc));
    println!("CUDA vs CPU: images {e:.3e}, labels {el:.3e}");
    assert!(e <= 1e-5 && el <= 1e-6, "{e} {el}");
}
