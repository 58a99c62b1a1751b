//! Instantiating the full-size configurations of `keys/*.json` yields exactly their
//! state_dict names, order, shapes, kinds (param/buffer) and parameter counts.

mod common;

use common::fixture;
use tch::Device;
use tiw_converters::Json;
use tiw_models::adm::{EncoderConfig, EncoderUNet};
use tiw_models::config::NetConfig;
use tiw_models::edm::EdmDenoiser;
use tiw_models::tch_ops::TchOps;
use tiw_models::vb::{Listed, TensorKind, Weights};

fn expected(name: &str) -> (Json, Vec<Listed>, i64) {
    let j = Json::parse(&std::fs::read_to_string(fixture(&format!("keys/{name}.json"))).unwrap()).unwrap();
    let Json::Array(entries) = j.get("entries").unwrap() else {
        panic!()
    };
    let list = entries
        .iter()
        .map(|e| Listed {
            name: e.get("name").unwrap().as_str().unwrap().to_string(),
            shape: match e.get("shape").unwrap() {
                Json::Array(a) => a.iter().map(|d| d.as_i64().unwrap() as usize).collect(),
                _ => panic!(),
            },
            kind: if e.get("kind").unwrap().as_str() == Some("param") {
                TensorKind::Param
            } else {
                TensorKind::Buffer
            },
        })
        .collect();
    let n = j.get("num_params").unwrap().as_i64().unwrap();
    (j, list, n)
}

fn compare(name: &str, got: Vec<Listed>, want: Vec<Listed>, num_params: i64) {
    assert_eq!(got.len(), want.len(), "{name}: entry count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "{name}: first difference");
    }
    let params: usize = got
        .iter()
        .filter(|e| e.kind == TensorKind::Param)
        .map(|e| e.shape.iter().product::<usize>())
        .sum();
    assert_eq!(params as i64, num_params, "{name}: parameter count");
    println!("{name}: {} entries, {params} parameters — equal", got.len());
}

#[test]
fn full_size_edm_configurations() {
    let o = TchOps::new(Device::Cpu);
    for name in [
        "cifar10_ddpmpp_edm_uncond",
        "celeba64_ddpmpp_edm_uncond",
        "cifar10_ncsnpp_edm_uncond",
        "cifar10_adm_edm_uncond",
    ] {
        let (j, want, n) = expected(name);
        let cfg = NetConfig::from_json(j.get("config").unwrap()).unwrap();
        let w = Weights::zeros(&o);
        EdmDenoiser::new(&w.root(), &cfg).unwrap();
        compare(name, w.listing(), want, n);
    }
}

#[test]
fn full_size_adm_encoders() {
    let o = TchOps::new(Device::Cpu);
    for (name, cfg) in [
        ("adm_classifier_32", EncoderConfig::feature_extractor(32).unwrap()),
        ("adm_classifier_64", EncoderConfig::feature_extractor(64).unwrap()),
        ("discriminator_in512", EncoderConfig::discriminator(512, false)),
    ] {
        let (_, want, n) = expected(name);
        let w = Weights::zeros(&o);
        EncoderUNet::new(&w.root(), &cfg).unwrap();
        let got = w.listing();
        // and the layout inference recovers the same configuration from the names alone
        let shapes: std::collections::HashMap<String, Vec<usize>> =
            got.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
        let inferred = EncoderConfig::infer(&|k| shapes.get(k).cloned(), None).unwrap();
        assert_eq!(
            inferred.channel_mult, cfg.channel_mult,
            "{name}: inferred channel_mult"
        );
        assert_eq!(
            inferred.num_res_blocks, cfg.num_res_blocks,
            "{name}: inferred depth"
        );
        assert_eq!(inferred.image_size, cfg.image_size, "{name}: inferred image size");
        compare(name, got, want, n);
    }
}

#[test]
fn iddpm_preconditioning_is_consistent() {
    use tiw_models::backend::Ops;
    use tiw_models::config::Precond;
    use tiw_models::edm::precond::{coefficients, iddpm_u};
    // u_M = 0, strictly decreasing towards u_0 (the largest σ).
    let u = iddpm_u(1000, 0.001, 0.008);
    assert_eq!(u.len(), 1001);
    assert_eq!(u[1000], 0.0);
    assert!(u.windows(2).all(|w| w[0] > w[1]), "u must decrease");
    let p = Precond::IDdpm {
        c1: 0.001,
        c2: 0.008,
        m: 1000,
    };
    assert_eq!(p.sigma_max(), u[0] as f64);
    assert_eq!(p.sigma_min(), u[999] as f64);
    // c_noise = M − 1 − argmin_j |σ − u_j|: exact table entries map to their index.
    let o = TchOps::new(Device::Cpu);
    let ut = o.constant(&u, &[u.len()]).unwrap();
    let picks = [0usize, 1, 17, 500, 998];
    let s: Vec<f32> = picks.iter().map(|&j| u[j]).collect();
    let st = o.constant(&s, &[s.len(), 1, 1, 1]).unwrap();
    let c = coefficients(&p, &o, &st, Some(&ut)).unwrap();
    let cn = Vec::<f32>::try_from(&c.c_noise.0.view(-1)).unwrap();
    for (k, &j) in picks.iter().enumerate() {
        assert_eq!(cn[k], (999 - j) as f32, "σ = u[{j}]");
    }
    println!(
        "iDDPM: σ range [{:.4}, {:.2}], round-to-table indices exact",
        u[999], u[0]
    );
}
