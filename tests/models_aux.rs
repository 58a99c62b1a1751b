//! Parity of preconditioning coefficients, the VP SDE helpers, the ADM feature extractor and
//! discriminators, and the guidance terms (autograd) with the official outputs.

mod common;

use common::tolerances::{
    TOL_CHANNELS_LAST, TOL_CLASSIFIER, TOL_FUSED_ATTENTION, TOL_PRECOND, TOL_VPSDE_F32, TOL_VPSDE_F64,
};
use common::{arr, fixture, read_npz, NpzArray};
use tch::{Device, Kind, Tensor};
use tiw::parity::norm_err;
use tiw_models::adm::EncoderConfig;
use tiw_models::config::Precond;
use tiw_models::edm::precond::coefficients;
use tiw_models::guidance::{Discriminator, GuidanceOpts};
use tiw_models::tch_ops::{TchOps, TchTensor};
use tiw_models::vpsde::VpSde;

fn tensor(a: &NpzArray) -> Tensor {
    let shape: Vec<i64> = if a.shape.is_empty() {
        vec![1]
    } else {
        a.shape.iter().map(|&d| d as i64).collect()
    };
    Tensor::from_slice(&a.to_f32()).reshape(shape)
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

#[derive(Default)]
struct Worst(f64, String);

impl Worst {
    fn cmp(&mut self, what: &str, ours: &[f32], reference: &[f32], tol: f64) {
        let e = norm_err(ours, reference);
        println!("  {what:<44} err {e:.2e} (tol {tol:.0e})");
        assert!(e <= tol, "{what}: normalised error {e:.3e} > {tol:.0e}");
        if e > self.0 {
            *self = Worst(e, what.into());
        }
    }
    fn cmp64(&mut self, what: &str, ours: &[f64], reference: &[f64], tol: f64) {
        let scale = reference.iter().fold(0f64, |m, x| m.max(x.abs()));
        let diff = ours
            .iter()
            .zip(reference)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        let e = if scale > 0.0 { diff / scale } else { diff };
        println!("  {what:<44} err {e:.2e} (tol {tol:.0e})");
        assert!(e <= tol, "{what}: normalised error {e:.3e} > {tol:.0e}");
        if e > self.0 {
            *self = Worst(e, what.into());
        }
    }
}

#[test]
fn preconditioning_coefficients() {
    let f = read_npz(&fixture("precond/precond.npz"));
    let o = TchOps::new(Device::Cpu);
    let sigma = TchTensor(tensor(arr(&f, "sigma")));
    let mut w = Worst::default();
    let cases = [
        (
            "edm",
            Precond::Edm {
                sigma_min: 0.0,
                sigma_max: f64::INFINITY,
                sigma_data: 0.5,
            },
        ),
        (
            "edm_sd0.6",
            Precond::Edm {
                sigma_min: 0.0,
                sigma_max: f64::INFINITY,
                sigma_data: 0.6,
            },
        ),
        (
            "vp",
            Precond::Vp {
                beta_d: 19.9,
                beta_min: 0.1,
                m: 1000.0,
                epsilon_t: 1e-5,
            },
        ),
        (
            "vp_bd15_bm0.2_M500",
            Precond::Vp {
                beta_d: 15.0,
                beta_min: 0.2,
                m: 500.0,
                epsilon_t: 1e-5,
            },
        ),
        (
            "ve",
            Precond::Ve {
                sigma_min: 0.02,
                sigma_max: 100.0,
            },
        ),
    ];
    let n = arr(&f, "sigma").shape[0];
    for (name, p) in cases {
        let c = coefficients(&p, &o, &sigma, None).unwrap();
        let one = vec![1f32; n];
        let or_one = |t: &Option<TchTensor>| t.as_ref().map(|t| values(t)).unwrap_or_else(|| one.clone());
        w.cmp(
            &format!("{name}_c_skip"),
            &or_one(&c.c_skip),
            &arr(&f, &format!("{name}_c_skip")).to_f32(),
            TOL_PRECOND,
        );
        w.cmp(
            &format!("{name}_c_out"),
            &values(&c.c_out),
            &arr(&f, &format!("{name}_c_out")).to_f32(),
            TOL_PRECOND,
        );
        w.cmp(
            &format!("{name}_c_in"),
            &or_one(&c.c_in),
            &arr(&f, &format!("{name}_c_in")).to_f32(),
            TOL_PRECOND,
        );
        w.cmp(
            &format!("{name}_c_noise"),
            &values(&c.c_noise),
            &arr(&f, &format!("{name}_c_noise")).to_f32(),
            TOL_PRECOND,
        );
        // round_sigma is the identity for these
        w.cmp(
            &format!("{name}_round_sigma"),
            &values(&sigma),
            &arr(&f, &format!("{name}_round_sigma")).to_f32(),
            0.0,
        );
        let lim = |k: &str| arr(&f, &format!("{name}_{k}")).to_f64()[0];
        w.cmp64(
            &format!("{name}_sigma_min"),
            &[p.sigma_min()],
            &[lim("sigma_min")],
            TOL_PRECOND,
        );
        let smax = p.sigma_max();
        if smax.is_finite() {
            w.cmp64(
                &format!("{name}_sigma_max"),
                &[smax],
                &[lim("sigma_max")],
                TOL_PRECOND,
            );
        } else {
            assert_eq!(lim("sigma_max"), f64::INFINITY);
        }
        if let Precond::Vp { beta_d, beta_min, .. } = p {
            let t = arr(&f, &format!("{name}_t")).to_f32();
            let st: Vec<f32> = t
                .iter()
                .map(|&t| Precond::vp_sigma(beta_d, beta_min, t as f64) as f32)
                .collect();
            w.cmp(
                &format!("{name}_sigma_of_t"),
                &st,
                &arr(&f, &format!("{name}_sigma_of_t")).to_f32(),
                TOL_PRECOND,
            );
            let s = arr(&f, "sigma").to_f32();
            let si: Vec<f32> = s
                .iter()
                .map(|&s| Precond::vp_sigma_inv(beta_d, beta_min, s as f64) as f32)
                .collect();
            w.cmp(
                &format!("{name}_sigma_inv"),
                &si,
                &arr(&f, &format!("{name}_sigma_inv")).to_f32(),
                TOL_PRECOND,
            );
        }
    }
    println!("worst: {:.2e} at {}", w.0, w.1);
}

#[test]
fn vpsde_matches_on_f32_and_f64_grids() {
    let f = read_npz(&fixture("vpsde/vpsde.npz"));
    let sde = VpSde::default();
    let mut w = Worst::default();
    // f32 grid, f32 arithmetic
    let t = arr(&f, "t_f32").to_f32();
    let s = arr(&f, "std_wve_t_f32").to_f32();
    let map = |v: &[f32], g: &dyn Fn(f32) -> f32| v.iter().map(|&x| g(x)).collect::<Vec<f32>>();
    w.cmp(
        "marginal_mean_f32",
        &map(&t, &|x| sde.marginal_prob(x).0),
        &arr(&f, "marginal_mean_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "marginal_std_f32",
        &map(&t, &|x| sde.marginal_prob(x).1),
        &arr(&f, "marginal_std_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "compute_tau_f32",
        &map(&s, &|x| sde.compute_tau(x)),
        &arr(&f, "compute_tau_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "wve_to_vp_mean_f32",
        &map(&s, &|x| sde.wve_to_vp(x).0),
        &arr(&f, "wve_to_vp_mean_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "wve_to_vp_tau_f32",
        &map(&s, &|x| sde.wve_to_vp(x).1),
        &arr(&f, "wve_to_vp_tau_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "wve_to_vp_std_f32",
        &map(&s, &|x| sde.wve_to_vp(x).2),
        &arr(&f, "wve_to_vp_std_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "t_cos_from_t_lin_f32",
        &map(&t, &|x| sde.t_cos_from_t_lin(x)),
        &arr(&f, "t_cos_from_t_lin_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "compute_reverse_tau_f32",
        &map(&t, &|x| sde.compute_reverse_tau(x)),
        &arr(&f, "compute_reverse_tau_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "integral_beta_f32",
        &map(&t, &|x| sde.integral_beta(x)),
        &arr(&f, "integral_beta_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    w.cmp(
        "antiderivative_f32",
        &map(&t, &|x| sde.antiderivative(x)),
        &arr(&f, "antiderivative_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    // The official compute_reverse_tau mutates its argument in place (SPEC §9.10): the
    // recorded argument afterwards is t·(β₁−β₀). Ours is pure; this documents the quirk.
    let d = (sde.beta_1 - sde.beta_0) as f32;
    w.cmp(
        "compute_reverse_tau_arg_after_f32 = t(b1-b0)",
        &map(&t, &|x| x * d),
        &arr(&f, "compute_reverse_tau_arg_after_f32").to_f32(),
        TOL_VPSDE_F32,
    );
    let d64 = sde.beta_1 - sde.beta_0;
    let t64 = arr(&f, "t_f64").to_f64();
    w.cmp64(
        "compute_reverse_tau_arg_after_f64 = t(b1-b0)",
        &t64.iter().map(|x| x * d64).collect::<Vec<_>>(),
        &arr(&f, "compute_reverse_tau_arg_after_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    // f64 grid, f64 arithmetic
    let t = arr(&f, "t_f64").to_f64();
    let s = arr(&f, "std_wve_t_f64").to_f64();
    let map = |v: &[f64], g: &dyn Fn(f64) -> f64| v.iter().map(|&x| g(x)).collect::<Vec<f64>>();
    w.cmp64(
        "marginal_mean_f64",
        &map(&t, &|x| sde.marginal_prob(x).0),
        &arr(&f, "marginal_mean_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "marginal_std_f64",
        &map(&t, &|x| sde.marginal_prob(x).1),
        &arr(&f, "marginal_std_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "compute_tau_f64",
        &map(&s, &|x| sde.compute_tau(x)),
        &arr(&f, "compute_tau_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "wve_to_vp_mean_f64",
        &map(&s, &|x| sde.wve_to_vp(x).0),
        &arr(&f, "wve_to_vp_mean_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "wve_to_vp_tau_f64",
        &map(&s, &|x| sde.wve_to_vp(x).1),
        &arr(&f, "wve_to_vp_tau_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "wve_to_vp_std_f64",
        &map(&s, &|x| sde.wve_to_vp(x).2),
        &arr(&f, "wve_to_vp_std_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "t_cos_from_t_lin_f64",
        &map(&t, &|x| sde.t_cos_from_t_lin(x)),
        &arr(&f, "t_cos_from_t_lin_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "compute_reverse_tau_f64",
        &map(&t, &|x| sde.compute_reverse_tau(x)),
        &arr(&f, "compute_reverse_tau_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "integral_beta_f64",
        &map(&t, &|x| sde.integral_beta(x)),
        &arr(&f, "integral_beta_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    w.cmp64(
        "antiderivative_f64",
        &map(&t, &|x| sde.antiderivative(x)),
        &arr(&f, "antiderivative_f64").to_f64(),
        TOL_VPSDE_F64,
    );
    // scalars and importance-sampled times (f32)
    let sc = |k: &str| arr(&f, k).to_f32()[0];
    w.cmp(
        "normalizing_constant_1e-5",
        &[sde.normalizing_constant(1e-5f32)],
        &[sc("normalizing_constant_1e-5")],
        TOL_VPSDE_F32,
    );
    w.cmp(
        "normalizing_constant_1e-3",
        &[sde.normalizing_constant(1e-3f32)],
        &[sc("normalizing_constant_1e-3")],
        TOL_VPSDE_F32,
    );
    w.cmp(
        "antiderivative_T",
        &[sde.antiderivative(1f32)],
        &[sc("antiderivative_T")],
        TOL_VPSDE_F32,
    );
    w.cmp(
        "antiderivative_1e-5",
        &[sde.antiderivative(1e-5f32)],
        &[sc("antiderivative_1e-5")],
        TOL_VPSDE_F32,
    );
    w.cmp(
        "get_diffusion_time_is_Z",
        &[sde.normalizing_constant(1e-5f32)],
        &[sc("get_diffusion_time_is_Z")],
        TOL_VPSDE_F32,
    );
    let u = arr(&f, "get_diffusion_time_is_u").to_f32();
    let ts: Vec<f32> = u.iter().map(|&u| sde.importance_time(u, 1e-5)).collect();
    w.cmp(
        "get_diffusion_time_is_t",
        &ts,
        &arr(&f, "get_diffusion_time_is_t").to_f32(),
        TOL_VPSDE_F32,
    );
    let u = arr(&f, "get_diffusion_time_uniform_u").to_f32();
    let ts: Vec<f32> = u.iter().map(|&u| sde.uniform_time(u, 1e-5)).collect();
    w.cmp(
        "get_diffusion_time_uniform_t",
        &ts,
        &arr(&f, "get_diffusion_time_uniform_t").to_f32(),
        TOL_VPSDE_F32,
    );
    println!("worst: {:.2e} at {}", w.0, w.1);
}

fn onehot(labels: &[i64], classes: usize) -> Tensor {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l as usize] = 1.0;
    }
    Tensor::from_slice(&v).reshape([labels.len() as i64, classes as i64])
}

fn ints(a: &NpzArray) -> Vec<i64> {
    a.to_i64()
}

#[test]
fn feature_extractor_and_discriminators() {
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    let f = read_npz(&fixture("classifier/forward.npz"));
    let fe = tiw_models::load::encoder(&o, &fixture("classifier/feature_extractor.pt"), None).unwrap();
    let dis = tiw_models::load::encoder(&o, &fixture("classifier/discriminator.pt"), None).unwrap();
    let cdis =
        tiw_models::load::encoder(&o, &fixture("classifier/discriminator_cond_legacy.pt"), None).unwrap();
    assert_eq!(fe.cfg.image_size, 16);
    assert_eq!(fe.cfg.channel_mult, vec![1, 2]);
    assert_eq!(dis.cfg.image_size, 8);
    assert_eq!(cdis.cfg.num_class, Some(1000));
    let x = TchTensor(tensor(arr(&f, "x")));
    let t = TchTensor(tensor(arr(&f, "t")));
    let mut w = Worst::default();
    let out = tch::no_grad(|| fe.forward(&o, &x, &t, None, true)).unwrap();
    w.cmp(
        "features",
        &values(&out.features),
        &arr(&f, "features").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "fe_logits",
        &values(out.logits.as_ref().unwrap()),
        &arr(&f, "fe_logits").to_f32(),
        TOL_CLASSIFIER,
    );
    let d = tch::no_grad(|| dis.forward(&o, &out.features, &t, None, true))
        .unwrap()
        .logits
        .unwrap();
    w.cmp(
        "dis_logits",
        &values(&d),
        &arr(&f, "dis_logits").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "dis_sigmoid",
        &values(&d.sigmoid()),
        &arr(&f, "dis_sigmoid").to_f32(),
        TOL_CLASSIFIER,
    );
    for (key, out_key) in [
        ("cond_labels_int", "cdis_sigmoid_int"),
        ("cond_labels_onehot", "cdis_sigmoid_onehot"),
    ] {
        let a = arr(&f, key);
        let labels: Vec<i64> = if matches!(a.data, tiw::npz::Data::I64(_)) {
            ints(a)
        } else {
            // one-hot → argmax, as the official conditional discriminator does
            a.to_f32()
                .chunks(a.shape[1])
                .map(|r| {
                    r.iter()
                        .enumerate()
                        .fold(0, |b, (i, v)| if *v > r[b] { i } else { b }) as i64
                })
                .collect()
        };
        let c = TchTensor(onehot(&labels, 1000));
        let d = tch::no_grad(|| cdis.forward(&o, &out.features, &t, Some(&c), true))
            .unwrap()
            .logits
            .unwrap();
        w.cmp(
            out_key,
            &values(&d.sigmoid()),
            &arr(&f, out_key).to_f32(),
            TOL_CLASSIFIER,
        );
    }
    let g = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &dis,
    };
    let p = tch::no_grad(|| g.predict(&x, &t, None)).unwrap();
    w.cmp(
        "closure_prediction",
        &values(&p),
        &arr(&f, "closure_prediction").to_f32(),
        TOL_CLASSIFIER,
    );
    let (lr, pc) = tiw_models::guidance::log_ratio(&p).unwrap();
    w.cmp(
        "log_ratio",
        &values(&lr),
        &arr(&f, "log_ratio").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "log_ratio_prediction",
        &values(&pc),
        &arr(&f, "log_ratio_prediction").to_f32(),
        TOL_CLASSIFIER,
    );
    println!("worst: {:.2e} at {}", w.0, w.1);
}

#[test]
fn guidance_terms_with_autograd() {
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    let fe = tiw_models::load::encoder(&o, &fixture("classifier/feature_extractor.pt"), None).unwrap();
    let dis = tiw_models::load::encoder(&o, &fixture("classifier/discriminator.pt"), None).unwrap();
    let cdis =
        tiw_models::load::encoder(&o, &fixture("classifier/discriminator_cond_legacy.pt"), None).unwrap();
    let g = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &dis,
    };
    let f = read_npz(&fixture("classifier/guidance.npz"));
    let x = tensor(arr(&f, "unnormalized_input"));
    let s = tensor(arr(&f, "std_wve_t"));
    let mut w = Worst::default();
    let sde = VpSde::default();
    let sv = arr(&f, "std_wve_t").to_f32();
    w.cmp(
        "mean_vp_tau",
        &sv.iter().map(|&x| sde.wve_to_vp(x).0).collect::<Vec<_>>(),
        &arr(&f, "mean_vp_tau").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "tau",
        &sv.iter().map(|&x| sde.wve_to_vp(x).1).collect::<Vec<_>>(),
        &arr(&f, "tau").to_f32(),
        TOL_CLASSIFIER,
    );
    for res in [32usize, 64] {
        let opts = GuidanceOpts {
            img_resolution: res,
            time_min: 1e-5,
            time_max: 1.0,
        };
        let r = g.grad_log_ratio(&x, &s, &opts, None).unwrap();
        w.cmp(
            &format!("grad_log_ratio_res{res}"),
            &values(&r.grad),
            &arr(&f, &format!("grad_log_ratio_res{res}")).to_f32(),
            TOL_CLASSIFIER,
        );
        w.cmp(
            &format!("grad_log_ratio_res{res}_log_ratio"),
            &values(&r.log_ratio),
            &arr(&f, &format!("grad_log_ratio_res{res}_log_ratio")).to_f32(),
            TOL_CLASSIFIER,
        );
        w.cmp(
            &format!("grad_log_ratio_res{res}_prediction"),
            &values(&r.prediction),
            &arr(&f, &format!("grad_log_ratio_res{res}_prediction")).to_f32(),
            TOL_CLASSIFIER,
        );
        let opts = GuidanceOpts {
            time_min: 0.0,
            ..opts
        };
        let (c, p) = g.weight_correction(&x, &s, &opts, None).unwrap();
        w.cmp(
            &format!("weight_correction_res{res}"),
            &values(&c),
            &arr(&f, &format!("weight_correction_res{res}")).to_f32(),
            TOL_CLASSIFIER,
        );
        w.cmp(
            &format!("weight_correction_res{res}_prediction"),
            &values(&p),
            &arr(&f, &format!("weight_correction_res{res}_prediction")).to_f32(),
            TOL_CLASSIFIER,
        );
        let p = g.prediction(&x, &s, &opts, None).unwrap();
        w.cmp(
            &format!("prediction_res{res}"),
            &values(&p),
            &arr(&f, &format!("prediction_res{res}")).to_f32(),
            TOL_CLASSIFIER,
        );
    }
    let opts = GuidanceOpts {
        img_resolution: 3,
        time_min: 0.0,
        time_max: 1.0,
    };
    let (c, p) = g.weight_correction(&x, &s, &opts, None).unwrap();
    w.cmp(
        "weight_correction_res3",
        &values(&c),
        &arr(&f, "weight_correction_res3").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "weight_correction_res3_prediction",
        &values(&p),
        &arr(&f, "weight_correction_res3_prediction").to_f32(),
        TOL_CLASSIFIER,
    );
    let oor = GuidanceOpts {
        img_resolution: 32,
        time_min: 1e-5,
        time_max: arr(&f, "oor_time_max").to_f64()[0],
    };
    let r = g.grad_log_ratio(&x, &s, &oor, None).unwrap();
    w.cmp(
        "oor_grad_log_ratio",
        &values(&r.grad),
        &arr(&f, "oor_grad_log_ratio").to_f32(),
        0.0,
    );
    w.cmp(
        "oor_log_ratio",
        &values(&r.log_ratio),
        &arr(&f, "oor_log_ratio").to_f32(),
        0.0,
    );
    w.cmp(
        "oor_prediction",
        &values(&r.prediction),
        &arr(&f, "oor_prediction").to_f32(),
        0.0,
    );
    assert_eq!(
        r.prediction.size(),
        x.size(),
        "out-of-range prediction is image-shaped like the official one"
    );
    let z = g.grad_log_ratio_nolog(&x, &s, &oor, None).unwrap();
    w.cmp(
        "oor_nolog_grad_log_ratio",
        &values(&z),
        &arr(&f, "oor_nolog_grad_log_ratio").to_f32(),
        0.0,
    );

    // conditional discriminator, int labels
    let f = read_npz(&fixture("classifier/guidance_cond.npz"));
    let gc = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &cdis,
    };
    let labels = ints(arr(&f, "class_labels"));
    let c = onehot(&labels, 1000);
    let opts = GuidanceOpts {
        img_resolution: 32,
        time_min: 1e-5,
        time_max: 1.0,
    };
    let r = gc
        .grad_log_ratio(
            &tensor(arr(&f, "unnormalized_input")),
            &tensor(arr(&f, "std_wve_t")),
            &opts,
            Some(&c),
        )
        .unwrap();
    w.cmp(
        "cond grad_log_ratio",
        &values(&r.grad),
        &arr(&f, "grad_log_ratio").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "cond log_ratio",
        &values(&r.log_ratio),
        &arr(&f, "log_ratio").to_f32(),
        TOL_CLASSIFIER,
    );
    w.cmp(
        "cond prediction",
        &values(&r.prediction),
        &arr(&f, "prediction").to_f32(),
        TOL_CLASSIFIER,
    );
    println!("worst: {:.2e} at {}", w.0, w.1);
    let _ = EncoderConfig::discriminator(512, false);
}

/// tch's fused attention (inference, frozen guidance networks) against the official
/// composition (what a trained network and the ONNX graph use): values and the gradient with
/// respect to q, k, v, for one and several heads and the EDM / ADM scale conventions.
#[test]
fn fused_attention_matches_the_composition() {
    use tiw_models::backend::{attention_composed, Ops};
    let fused = TchOps::new(Device::Cpu);
    assert!(fused.fused_attention && !TchOps::trainable(Device::Cpu).fused_attention);
    assert!(!fused.with_fused_attention(false).fused_attention);
    let mut worst = Worst::default();
    for (n, c, t, qs, ks) in [
        (2i64, 64i64, 256i64, 1.0, 0.125),
        (6, 32, 64, 0.42, 0.42),
        (3, 8, 17, 1.0, 1.0),
    ] {
        tch::manual_seed(n * 100 + t);
        let leaf = |s: &[i64]| Tensor::randn(s, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (q, k, v) = (leaf(&[n, c, t]), leaf(&[n, c, t]), leaf(&[n, c, t]));
        let w = Tensor::randn([n, c, t], (Kind::Float, Device::Cpu));
        let run = |f: &dyn Fn(&TchTensor, &TchTensor, &TchTensor) -> TchTensor| {
            let a = f(
                &TchTensor(q.shallow_clone()),
                &TchTensor(k.shallow_clone()),
                &TchTensor(v.shallow_clone()),
            );
            let g = Tensor::run_backward(&[(&a.0 * &w).sum(Kind::Float)], &[&q, &k, &v], false, false);
            (a.0.detach(), g)
        };
        let (a0, g0) = run(&|q, k, v| attention_composed(&fused, q, k, v, qs, ks).unwrap());
        let (a1, g1) = run(&|q, k, v| fused.attention(q, k, v, qs, ks).unwrap());
        assert_eq!(a1.size(), vec![n, c, t]);
        let tag = format!("n{n} c{c} t{t}");
        worst.cmp(
            &format!("attention {tag}"),
            &values(&a1),
            &values(&a0),
            TOL_FUSED_ATTENTION,
        );
        for (name, x, y) in [
            ("dq", &g1[0], &g0[0]),
            ("dk", &g1[1], &g0[1]),
            ("dv", &g1[2], &g0[2]),
        ] {
            worst.cmp(
                &format!("attention {name} {tag}"),
                &values(x),
                &values(y),
                TOL_FUSED_ATTENTION,
            );
        }
    }
    println!("worst: {:.2e} ({})", worst.0, worst.1);
}

/// Channels-last convolutions (trainable ops on the CPU) against the plain NCHW path: values
/// and gradients with respect to input, weight and bias.
#[test]
fn channels_last_convolutions_match_nchw() {
    use tiw_models::backend::Ops;
    let cl = TchOps::trainable(Device::Cpu);
    assert!(cl.channels_last_convs && !TchOps::new(Device::Cpu).channels_last_convs);
    let plain = TchOps {
        channels_last_convs: false,
        ..cl
    };
    let mut worst = Worst::default();
    for (cin, cout, k, stride) in [(16i64, 32i64, 3i64, 1i64), (8, 8, 1, 1), (12, 24, 3, 2)] {
        tch::manual_seed(cin * 10 + k);
        let leaf = |s: &[i64]| Tensor::randn(s, (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (x, w, b) = (leaf(&[3, cin, 10, 10]), leaf(&[cout, cin, k, k]), leaf(&[cout]));
        let run = |o: &TchOps| {
            let y = o
                .conv2d(
                    &TchTensor(x.shallow_clone()),
                    &TchTensor(w.shallow_clone()),
                    Some(&TchTensor(b.shallow_clone())),
                    stride,
                    k / 2,
                    1,
                )
                .unwrap();
            let g = Tensor::run_backward(&[y.0.square().sum(Kind::Float)], &[&x, &w, &b], false, false);
            (y.0.detach(), g)
        };
        let (y0, g0) = run(&plain);
        let (y1, g1) = run(&cl);
        let tag = format!("{cin}→{cout} k{k} s{stride}");
        worst.cmp(
            &format!("conv {tag}"),
            &values(&y1),
            &values(&y0),
            TOL_CHANNELS_LAST,
        );
        for (name, i) in [("dx", 0), ("dw", 1), ("db", 2)] {
            worst.cmp(
                &format!("conv {name} {tag}"),
                &values(&g1[i]),
                &values(&g0[i]),
                TOL_CHANNELS_LAST,
            );
        }
    }
    println!("worst: {:.2e} ({})", worst.0, worst.1);
}

/// A tiny class-conditional EDMPrecond network (`model`: SongUNet or DhariwalUNet) with
/// pseudo-random weights that depend only on the architecture.
fn label_net(model: &str, label_dropout: f64) -> tiw_models::edm::EdmDenoiser<TchOps> {
    let text = format!(
        r#"{{"network_kwargs": {{"class_name": "training.networks.EDMPrecond", "model_type": "{model}",
            "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4],
            "dropout": 0.2, "label_dropout": {label_dropout}}},
          "interface_kwargs": {{"img_resolution": 8, "img_channels": 3, "label_dim": 4}}}}"#
    );
    let cfg = tiw_models::config::NetConfig::from_json(&tiw_converters::Json::parse(&text).unwrap()).unwrap();
    let o = TchOps::trainable(Device::Cpu);
    let w = tiw_models::vb::Weights::create(&o, 7);
    tiw_models::edm::EdmDenoiser::new(&w.root(), &cfg).unwrap()
}

/// `label_dropout` as EDM's SongUNet / DhariwalUNet apply it in training (SPEC §2.2): the
/// network's first draw is `rand([N, 1])`, a sample keeps its labels when its draw is
/// ≥ label_dropout, and the blocks' dropout masks come after it. Checked bit for bit against
/// the same network without label dropout fed `labels · keep` after the same draw; in
/// evaluation nothing is drawn or dropped.
#[test]
fn label_dropout_is_the_networks_first_draw() {
    tch::set_num_threads(1);
    let o = TchOps::trainable(Device::Cpu);
    let n = 16;
    tch::manual_seed(3);
    let x = TchTensor(Tensor::randn([n, 3, 8, 8], (Kind::Float, Device::Cpu)));
    let sigma = TchTensor(Tensor::rand([n], (Kind::Float, Device::Cpu)) * 5.0 + 0.1);
    let labels = TchTensor(onehot(&(0..n).map(|i| i % 4).collect::<Vec<_>>(), 4));
    let p = 0.4;
    for model in ["SongUNet", "DhariwalUNet"] {
        let (with, without) = (label_net(model, p), label_net(model, 0.0));
        let d = |net: &tiw_models::edm::EdmDenoiser<TchOps>, labels: &Tensor, train: bool| {
            let l = TchTensor(labels.shallow_clone());
            values(
                &net.forward(&o, &x, &sigma, Some(&l), None, train)
                    .unwrap()
                    .d
                    .0
                    .detach(),
            )
        };
        tch::manual_seed(11);
        let ours = d(&with, &labels, true);
        tch::manual_seed(11);
        let keep = Tensor::rand([n, 1], (Kind::Float, Device::Cpu))
            .ge(p)
            .to_kind(Kind::Float);
        let reference = d(&without, &(&labels.0 * &keep), true);
        tch::manual_seed(11);
        let _ = Tensor::rand([n, 1], (Kind::Float, Device::Cpu));
        let undropped = d(&without, &labels, true);
        let kept = values(&keep);
        let dropped = kept.iter().filter(|&&k| k == 0.0).count();
        assert!(dropped > 0 && dropped < n as usize, "{dropped} of {n} dropped");
        let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        println!(
            "{model}: {dropped} of {n} label rows dropped; max |ours − reference| {:.1e}",
            max_diff(&ours, &reference)
        );
        assert_eq!(
            ours, reference,
            "{model}: label dropout differs from labels·(rand([N,1]) ≥ p)"
        );
        let per = ours.len() / n as usize;
        for (i, &k) in kept.iter().enumerate() {
            let rows = i * per..(i + 1) * per;
            let same = ours[rows.clone()] == undropped[rows];
            assert_eq!(
                same,
                k == 1.0,
                "{model}: sample {i} (keep {k}) vs the undropped labels"
            );
        }
        assert_eq!(
            d(&with, &labels.0, false),
            d(&without, &labels.0, false),
            "{model}: evaluation"
        );
    }
}
