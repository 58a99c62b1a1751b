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
    let Json::Array(entries) = j.get("entries").unwrap() else { panic!() };
    let list = entries
        .iter()
        .map(|e| Listed {
            name: e.get("name").unwrap().as_str().unwrap().to_string(),
            shape: match e.get("shape").unwrap() {
                Json::Array(a) => a.iter().map(|d| d.as_i64().unwrap() as usize).collect(),
                _ => panic!(),
            },
            kind: if e.get("kind").unwrap().as_str() == Some("param") { TensorKind::Param } else { TensorKind::Buffer },
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
    let params: usize = got.iter().filter(|e| e.kind == TensorKind::Param).map(|e| e.shape.iter().product::<usize>()).sum();
    assert_eq!(params as i64, num_params, "{name}: parameter count");
    println!("{name}: {} entries, {params} parameters — equal", got.len());
}

#[test]
fn full_size_edm_configurations() {
    let o = TchOps::new(Device::Cpu);
    for name in ["cifar10_ddpmpp_edm_uncond", "celeba64_ddpmpp_edm_uncond", "cifar10_ncsnpp_edm_uncond", "cifar10_adm_edm_uncond"] {
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
        let shapes: std::collections::HashMap<String, Vec<usize>> = got.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
        let inferred = EncoderConfig::infer(&|k| shapes.get(k).cloned(), None).unwrap();
        assert_eq!(inferred.channel_mult, cfg.channel_mult, "{name}: inferred channel_mult");
        assert_eq!(inferred.num_res_blocks, cfg.num_res_blocks, "{name}: inferred depth");
        assert_eq!(inferred.image_size, cfg.image_size, "{name}: inferred image size");
        compare(name, got, want, n);
    }
}
