//! `use_fp16=True` networks and the libtorch precision policy (`tiw::precision`).
//!
//! * On the CPU a `use_fp16=True` configuration runs the same f32 path as the official code
//!   (EDMPrecond uses f16 only on CUDA): outputs bit-identical to the f32 network and within
//!   the fixture bound of the official outputs.
//! * The f16 path itself (what runs on CUDA: model input and weights cast to f16, embedding,
//!   attention logits/softmax and the preconditioning in f32) is exercised on the CPU by
//!   forcing it, and checked against the f32 outputs of every fixture net.
//! * The policy: f16 only for `use_fp16` on CUDA without `force_fp32`.

mod common;

use common::tolerances::{TOL_FP16_TCH_VS_F32, TOL_VS_FIXTURE};
use common::{arr, fixture, read_npz, NpzArray};
use tch::{Device, Tensor};
use tiw::parity::norm_err;
use tiw::precision::TchPrecision;
use tiw_models::edm::precond::official_fp16;
use tiw_models::tch_ops::{TchOps, TchTensor};

const NETS: [&str; 6] = [
    "edm_adm_r16_uncond",
    "edm_ddpmpp_r16_uncond",
    "edm_ddpmpp_r8_cond10",
    "edm_ncsnpp_r16_uncond",
    "ve_ncsnpp_r8_uncond",
    "vp_ddpmpp_r8_uncond",
];

fn t(a: &NpzArray) -> TchTensor {
    TchTensor(Tensor::from_slice(&a.to_f32()).reshape(a.shape.iter().map(|&d| d as i64).collect::<Vec<_>>()))
}

/// D of `net` on the fixture inputs `f`.
fn run(o: &TchOps, net: &tiw_models::edm::EdmDenoiser<TchOps>, f: &[NpzArray]) -> Result<Vec<f32>, String> {
    let has = |k: &str| f.iter().any(|a| a.name == k);
    let labels = has("class_labels").then(|| t(arr(f, "class_labels")));
    let aug = has("augment_labels").then(|| t(arr(f, "augment_labels")));
    let d = tch::no_grad(|| {
        net.forward(
            o,
            &t(arr(f, "x")),
            &t(arr(f, "sigma")),
            labels.as_ref(),
            aug.as_ref(),
            false,
        )
    })
    .map_err(|e| e.to_string())?
    .d;
    assert_eq!(d.kind(), tch::Kind::Float, "D is f32");
    Vec::<f32>::try_from(&d.0.contiguous().view(-1)).map_err(|e| e.to_string())
}

#[test]
fn policy_uses_fp16_only_for_use_fp16_on_cuda() {
    let src = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let (_, cfg) = tiw_models::load::read(&src).unwrap();
    let mut cfg = tiw_models::config::NetConfig::from_json(&cfg.unwrap()).unwrap();
    assert!(!official_fp16(&cfg, true, false));
    cfg.use_fp16 = true;
    assert!(official_fp16(&cfg, true, false));
    assert!(
        !official_fp16(&cfg, false, false),
        "the CPU runs f32 like the official code"
    );
    assert!(!official_fp16(&cfg, true, true), "force_fp32");
    assert_eq!(TchPrecision::default(), TchPrecision::OFFICIAL);
    assert_eq!(
        TchPrecision::STRICT,
        TchPrecision {
            force_fp32: true,
            strict_f32: true
        }
    );
}

#[test]
fn use_fp16_configs_run_f32_on_the_cpu_and_the_f16_path_stays_close() {
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    let mut worst16 = (0f64, "");
    for net_name in NETS {
        let src = fixture(&format!("nets/{net_name}/network-snapshot-000000.pkl"));
        let f = read_npz(&fixture(&format!("nets/{net_name}/forward.npz")));
        // with the recorded augment labels the official output is D_augment
        let aug = f.iter().any(|a| a.name == "augment_labels");
        let want = arr(&f, if aug { "D_augment" } else { "D" }).to_f32();
        let (store, cfg) = tiw_models::load::read(&src).unwrap();
        let mut cfg = tiw_models::config::NetConfig::from_json(&cfg.unwrap()).unwrap();
        let plain = tiw_models::load::edm_denoiser_from(&o, &store, &cfg).unwrap();
        let d32 = run(&o, &plain, &f).unwrap();

        // the same weights with use_fp16=True, configured by the official policy on the CPU
        cfg.use_fp16 = true;
        let mut net = tiw_models::load::edm_denoiser_from(&o, &store, &cfg).unwrap();
        let fp16 = TchPrecision::OFFICIAL.configure(&mut net, Device::Cpu);
        assert!(!fp16, "{net_name}: f16 on the CPU");
        let d = run(&o, &net, &f).unwrap();
        assert!(
            d == d32,
            "{net_name}: use_fp16 on the CPU changed the f32 outputs"
        );
        let e = norm_err(&d, &want);
        assert!(e <= TOL_VS_FIXTURE, "{net_name}: {e:.3e}");

        // the CUDA path, forced on the CPU
        net.set_fp16(true);
        match run(&o, &net, &f) {
            Ok(d16) => {
                let e16 = norm_err(&d16, &want);
                println!("{net_name}: use_fp16 on CPU (f32 path) vs fixture {e:.2e}; forced f16 path vs fixture {e16:.2e}");
                assert!(
                    e16 <= TOL_FP16_TCH_VS_F32,
                    "{net_name}: f16 {e16:.3e} > {TOL_FP16_TCH_VS_F32:.0e}"
                );
                assert!(e16 > 0.0, "{net_name}: the f16 path did not run in f16");
                if e16 > worst16.0 {
                    worst16 = (e16, net_name);
                }
            }
            // libtorch builds without CPU half kernels for an op: report, the policy part holds
            Err(err) if err.contains("Half") => {
                println!("{net_name}: forced f16 path not runnable on this CPU libtorch: {err}")
            }
            Err(err) => panic!("{net_name}: f16 path: {err}"),
        }
    }
    println!(
        "worst forced-f16 vs f32 fixture: {:.2e} ({}), tolerance {TOL_FP16_TCH_VS_F32:.0e}",
        worst16.0, worst16.1
    );
}
