//! The training losses against `loss/*.npz` (official draws fed back in), and TIW's
//! corrected forms against formulas evaluated on the fixture's own correction/prediction.

mod common;

use std::collections::VecDeque;

use common::tolerances::TOL_LOSS;
use common::{arr, fixture, read_npz, NpzArray};
use tch::{Device, Kind, Tensor};
use tiw::parity::norm_err;
use tiw::train::loss::{evaluate, tiw_official_broadcast, Loss, Recorded, TiwCorrection, TiwWeighting};
use tiw_models::guidance::Discriminator;
use tiw_models::tch_ops::TchOps;

fn t(a: &NpzArray) -> Tensor {
    let shape: Vec<i64> = if a.shape.is_empty() {
        vec![]
    } else {
        a.shape.iter().map(|&d| d as i64).collect()
    };
    Tensor::from_slice(&a.to_f32()).reshape(shape.as_slice())
}

fn v(x: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&x.to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

fn check(what: &str, ours: &Tensor, reference: &NpzArray, tol: f64) -> f64 {
    let e = norm_err(&v(ours), &reference.to_f32());
    println!("  {what:<34} err {e:.2e} (tol {tol:.0e})");
    assert!(e <= tol, "{what}: {e:.3e}");
    e
}

#[test]
fn edm_vp_ve_losses_match() {
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    for (file, net, first_draw, loss) in [
        (
            "loss/edm_loss.npz",
            "edm_ddpmpp_r16_uncond",
            "rnd_normal",
            Loss::edm(),
        ),
        (
            "loss/edm_loss_cond.npz",
            "edm_ddpmpp_r8_cond10",
            "rnd_normal",
            Loss::edm(),
        ),
        (
            "loss/vploss.npz",
            "vp_ddpmpp_r8_uncond",
            "rnd_uniform",
            Loss::Vp {
                beta_d: 19.9,
                beta_min: 0.1,
                epsilon_t: 1e-5,
            },
        ),
        (
            "loss/veloss.npz",
            "ve_ncsnpp_r8_uncond",
            "rnd_uniform",
            Loss::Ve {
                sigma_min: 0.02,
                sigma_max: 100.0,
            },
        ),
    ] {
        println!("{file}:");
        let f = read_npz(&fixture(file));
        let model =
            tiw_models::load::edm_denoiser(&o, &fixture(&format!("nets/{net}/network-snapshot-000000.pkl")))
                .unwrap();
        let mut draws = Recorded(VecDeque::from([t(arr(&f, first_draw)), t(arr(&f, "unit_noise"))]));
        let labels = f.iter().find(|a| a.name == "labels").map(t);
        let out = tch::no_grad(|| {
            evaluate(
                &loss,
                &model,
                &o,
                &t(arr(&f, "images")),
                labels.as_ref(),
                &mut draws,
                None,
                false,
                None,
            )
        })
        .unwrap();
        if f.iter().any(|a| a.name == "sigma") {
            check("sigma", &out.sigma, arr(&f, "sigma"), TOL_LOSS);
        }
        check("loss", &out.per_element, arr(&f, "loss"), TOL_LOSS);
    }
}

fn tiw_setup() -> (
    TchOps,
    tiw_models::edm::EdmDenoiser<TchOps>,
    tiw_models::adm::EncoderUNet<TchOps>,
    tiw_models::adm::EncoderUNet<TchOps>,
    Vec<NpzArray>,
) {
    let o = TchOps::new(Device::Cpu);
    let net = tiw_models::load::edm_denoiser(
        &o,
        &fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl"),
    )
    .unwrap();
    let fe = tiw_models::load::encoder(&o, &fixture("classifier/feature_extractor.pt"), None).unwrap();
    let dis = tiw_models::load::encoder(&o, &fixture("classifier/discriminator.pt"), None).unwrap();
    (o, net, fe, dis, read_npz(&fixture("loss/tiw_edm_loss.npz")))
}

#[test]
fn tiw_loss_official_mode_matches_including_the_broadcast() {
    tch::set_num_threads(2);
    let (o, net, fe, dis, f) = tiw_setup();
    let d = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &dis,
    };
    let mut draws = Recorded(VecDeque::from([
        t(arr(&f, "rnd_normal")),
        t(arr(&f, "unit_noise")),
    ]));
    let loss = Loss::tiw(TiwWeighting::Official, TiwCorrection::Official);
    let out = evaluate(
        &loss,
        &net,
        &o,
        &t(arr(&f, "images")),
        None,
        &mut draws,
        Some(&d),
        false,
        None,
    )
    .unwrap();
    println!("tiw_edm_loss.npz (official):");
    check("sigma", &out.sigma, arr(&f, "sigma"), TOL_LOSS);
    check("weight", &out.weight, arr(&f, "weight"), TOL_LOSS);
    check("n", &out.noise, arr(&f, "n"), TOL_LOSS);
    check("D_yn", &out.denoised, arr(&f, "D_yn"), TOL_LOSS);
    let (corr, pred) = out.tiw.as_ref().unwrap();
    check("correction", corr, arr(&f, "correction"), 2e-5);
    check("prediction", pred, arr(&f, "prediction"), TOL_LOSS);
    check(
        "target (= images_after_call)",
        &out.target,
        arr(&f, "images_after_call"),
        TOL_LOSS,
    );
    let full = tiw_official_broadcast(&out).unwrap();
    assert_eq!(
        full.size(),
        vec![4, 1, 1, 4, 3, 16, 16],
        "official loss shape (N,1,1,N,C,H,W)"
    );
    check("loss (N,1,1,N,C,H,W)", &full, arr(&f, "loss"), TOL_LOSS);
    check("loss_sum", &out.sum, arr(&f, "loss_sum"), TOL_LOSS);
}

#[test]
fn tiw_loss_per_sample_and_derived_follow_their_formulas() {
    tch::set_num_threads(2);
    let (o, net, fe, dis, f) = tiw_setup();
    let d = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &dis,
    };
    let y = t(arr(&f, "images"));
    let (corr, pred) = (t(arr(&f, "correction")), t(arr(&f, "prediction")));
    let (w, dyn_) = (t(arr(&f, "weight")), t(arr(&f, "D_yn")));
    let pred4 = pred.view([-1, 1, 1, 1]);
    for (weighting, correction) in [
        (TiwWeighting::PerSample, TiwCorrection::Official),
        (TiwWeighting::Official, TiwCorrection::Derived),
        (TiwWeighting::PerSample, TiwCorrection::Derived),
    ] {
        let mut draws = Recorded(VecDeque::from([
            t(arr(&f, "rnd_normal")),
            t(arr(&f, "unit_noise")),
        ]));
        let out = evaluate(
            &Loss::tiw(weighting, correction),
            &net,
            &o,
            &y,
            None,
            &mut draws,
            Some(&d),
            false,
            None,
        )
        .unwrap();
        // expected from the fixture's own correction and prediction
        let target = match correction {
            TiwCorrection::Official => &y + &corr,
            TiwCorrection::Derived => &y - &corr / &pred4,
        };
        let per = &w * (&dyn_ - &target).square();
        let expected_sum = match weighting {
            TiwWeighting::Official => per.sum(Kind::Float) * (&pred * 2.0).sum(Kind::Float),
            TiwWeighting::PerSample => (&per * (&pred4 * 2.0)).sum(Kind::Float),
        };
        let e_t = norm_err(&v(&out.target), &v(&target));
        let e_s = norm_err(&v(&out.sum), &v(&expected_sum));
        println!("{weighting:?}/{correction:?}: target err {e_t:.2e}, loss sum err {e_s:.2e}");
        assert!(e_t <= 2e-5 && e_s <= 2e-5, "{weighting:?}/{correction:?}");
    }
}
