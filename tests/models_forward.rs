//! Forward parity of the Rust model zoo (tch runtime) with the official PyTorch outputs.
//! Every comparison is max|ours − ref| / max|ref| against the tolerance of its kind below,
//! and every test prints the worst error it saw.

mod common;

use common::tolerances::TOL_NET_FORWARD;
use common::{arr, fixture, read_npz, NpzArray};
use tch::{Device, Tensor};
use tiw::parity::norm_err;
use tiw_models::backend::Ops;
use tiw_models::tch_ops::{TchOps, TchTensor};

fn tensor(a: &NpzArray) -> TchTensor {
    let v = a.to_f32();
    let shape: Vec<i64> = if a.shape.is_empty() {
        vec![1]
    } else {
        a.shape.iter().map(|&d| d as i64).collect()
    };
    TchTensor(Tensor::from_slice(&v).reshape(shape))
}

fn values(t: &TchTensor) -> Vec<f32> {
    let t = t.0.to_kind(tch::Kind::Float).contiguous().view(-1);
    Vec::<f32>::try_from(&t).unwrap()
}

struct Worst(f64, String);

impl Worst {
    fn check(&mut self, what: &str, ours: &TchTensor, reference: &NpzArray, tol: f64) {
        let e = norm_err(&values(ours), &reference.to_f32());
        println!("  {what:<40} err {e:.2e} (tol {tol:.0e})");
        assert!(e <= tol, "{what}: normalised error {e:.3e} > {tol:.0e}");
        if e > self.0 {
            *self = Worst(e, what.to_string());
        }
    }
}

#[test]
fn edm_nets_match_forward_npz() {
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    let mut worst = Worst(0.0, String::new());
    for net in [
        "edm_adm_r16_uncond",
        "edm_ddpmpp_r16_uncond",
        "edm_ddpmpp_r8_cond10",
        "edm_ncsnpp_r16_uncond",
        "ve_ncsnpp_r8_uncond",
        "vp_ddpmpp_r8_uncond",
    ] {
        println!("{net}:");
        let model =
            tiw_models::load::edm_denoiser(&o, &fixture(&format!("nets/{net}/network-snapshot-000000.pkl")))
                .unwrap();
        let f = read_npz(&fixture(&format!("nets/{net}/forward.npz")));
        let has = |n: &str| f.iter().any(|a| a.name == n);
        let x = tensor(arr(&f, "x"));
        let sigma = tensor(arr(&f, "sigma"));
        let labels = has("class_labels").then(|| tensor(arr(&f, "class_labels")));
        let out = tch::no_grad(|| model.forward(&o, &x, &sigma, labels.as_ref(), None, false)).unwrap();
        worst.check(&format!("{net}/D"), &out.d, arr(&f, "D"), TOL_NET_FORWARD);
        worst.check(&format!("{net}/F_x"), &out.f, arr(&f, "F_x"), TOL_NET_FORWARD);
        worst.check(
            &format!("{net}/model_in"),
            &out.model_in,
            arr(&f, "model_in"),
            TOL_NET_FORWARD,
        );
        worst.check(
            &format!("{net}/noise_labels"),
            &out.noise_labels,
            arr(&f, "noise_labels"),
            TOL_NET_FORWARD,
        );
        if has("D_labels_none") {
            let out = tch::no_grad(|| model.forward(&o, &x, &sigma, None, None, false)).unwrap();
            worst.check(
                &format!("{net}/D_labels_none"),
                &out.d,
                arr(&f, "D_labels_none"),
                TOL_NET_FORWARD,
            );
        }
        if has("augment_labels") {
            let aug = tensor(arr(&f, "augment_labels"));
            let out =
                tch::no_grad(|| model.forward(&o, &x, &sigma, labels.as_ref(), Some(&aug), false)).unwrap();
            worst.check(
                &format!("{net}/D_augment"),
                &out.d,
                arr(&f, "D_augment"),
                TOL_NET_FORWARD,
            );
        }
        let s = tensor(arr(&f, "sigma_scalar"));
        let out = tch::no_grad(|| model.forward(&o, &x, &s, labels.as_ref(), None, false)).unwrap();
        worst.check(
            &format!("{net}/D_scalar_sigma"),
            &out.d,
            arr(&f, "D_scalar_sigma"),
            TOL_NET_FORWARD,
        );
    }
    println!("worst: {:.2e} at {}", worst.0, worst.1);
    let _ = o.constant(&[0.0], &[1]);
}
