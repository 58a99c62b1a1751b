//! Every preconditioning (EDM, VP, VE, iDDPM) × noise embedding (positional, Fourier) ×
//! channels (1, 3), built with official init plus a perturbation (so the output layer is not
//! ~0), exported to ONNX and run on ONNX Runtime and tract against libtorch, σ by σ
//! (0.002 … 100).
//!
//! The VP × Fourier case is the sharp one: the embedding's f32 argument `c_noise·2π·freqs`
//! reaches 1e4–1e5 there, where one ulp of it (~4e-3) moves cos/sin by as much. tract's
//! decluttering folds VP's `c_noise = (M−1)·t` factor into the frequency constant (one
//! rounding instead of PyTorch's two), which missed by up to 6.3e-4 until the export computed
//! that product with `Ops::mul_exact` (issue 16). Every case must meet the bound.

mod common;

use common::tolerances::TOL_VS_TCH;
use tch::{Device, Kind, Tensor};
use tiw::device::DeviceSpec;
use tiw::onnx_export::{self, OnnxRuntime};
use tiw::parity::norm_err;
use tiw::runtime::NamedArray;
use tiw_converters::{DType, Json, TensorStore};
use tiw_models::config::NetConfig;
use tiw_models::tch_ops::{TchOps, TchTensor};
use tiw_models::vb::{TensorKind, Weights};

/// σ values evaluated (one batch row each): EDM's σ_min-ish, mid-range, EDM's σ_max, VE's σ_max.
const SIGMAS: [f32; 5] = [0.002, 0.5, 2.0, 80.0, 100.0];

const PRECONDS: [&str; 4] = ["EDMPrecond", "VPPrecond", "VEPrecond", "iDDPMPrecond"];

fn config(precond: &str, fourier: bool, channels: usize) -> NetConfig {
    // Fourier nets as NCSN++ (residual encoder, FIR [1,3,3,1], noise channels ×2), positional
    // ones as DDPM++.
    let arch = if fourier {
        r#""embedding_type": "fourier", "encoder_type": "residual", "channel_mult_noise": 2, "resample_filter": [1, 3, 3, 1]"#
    } else {
        r#""embedding_type": "positional", "encoder_type": "standard", "channel_mult_noise": 1, "resample_filter": [1, 1]"#
    };
    let text = format!(
        r#"{{"network_kwargs": {{"class_name": "training.networks.{precond}", "model_type": "SongUNet", {arch},
            "decoder_type": "standard", "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1,
            "attn_resolutions": [4], "dropout": 0.0, "use_fp16": false}},
          "interface_kwargs": {{"img_resolution": 8, "img_channels": {channels}, "label_dim": 0}}}}"#
    );
    NetConfig::from_json(&Json::parse(&text).unwrap()).unwrap()
}

/// Deterministic uniform draws in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The network's tensors after official init (seed) + uniform ±0.05 on every parameter
/// (buffers such as the Fourier `freqs` and FIR filters keep their values).
fn store_for(cfg: &NetConfig, seed: u64) -> TensorStore {
    let o = TchOps::new(Device::Cpu);
    let w = Weights::init(&o, seed);
    tiw_models::edm::EdmDenoiser::new(&w.root(), cfg).unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let tensors = w
        .named()
        .unwrap()
        .into_iter()
        .map(|(name, kind, t)| {
            let shape: Vec<usize> = t.0.size().iter().map(|&d| d as usize).collect();
            let mut v =
                Vec::<f32>::try_from(&t.0.detach().to_kind(Kind::Float).contiguous().view(-1)).unwrap();
            if kind == TensorKind::Param {
                v.iter_mut().for_each(|x| *x += 0.05 * rng.next());
            }
            (name, DType::F32, shape, bytemuck_bytes(&v))
        })
        .collect();
    TensorStore::from_owned(tensors).unwrap()
}

fn bytemuck_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn every_precond_and_embedding_matches_tch_on_ort_and_tract_at_every_sigma() {
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    let mut worst = (0f64, String::new());
    let mut seed = 100;
    for precond in PRECONDS {
        for fourier in [false, true] {
            for channels in [1usize, 3] {
                seed += 1;
                let cfg = config(precond, fourier, channels);
                let store = store_for(&cfg, seed);
                let net = tiw_models::load::edm_denoiser_from(&o, &store, &cfg).unwrap();
                let bytes = tiw_models::export::denoiser(&store, &cfg, None, 17, &[])
                    .unwrap()
                    .to_bytes()
                    .unwrap();
                let n = SIGMAS.len();
                let per = channels * 64;
                let mut rng = Rng(seed * 7919 + 1);
                let x: Vec<f32> = (0..n * per)
                    .map(|i| rng.next() + SIGMAS[i / per] * 1.7 * rng.next())
                    .collect();
                let xt = TchTensor(Tensor::from_slice(&x).reshape([n as i64, channels as i64, 8, 8]));
                let st = TchTensor(Tensor::from_slice(&SIGMAS));
                let d = tch::no_grad(|| net.forward(&o, &xt, &st, None, None, false))
                    .unwrap()
                    .d;
                let want = Vec::<f32>::try_from(&d.0.contiguous().view(-1)).unwrap();
                let ins = [
                    NamedArray {
                        name: "x".into(),
                        shape: vec![n, channels, 8, 8],
                        data: x.clone(),
                    },
                    NamedArray {
                        name: "sigma".into(),
                        shape: vec![n],
                        data: SIGMAS.to_vec(),
                    },
                ];
                let what = format!(
                    "{precond} {} C={channels}",
                    if fourier { "fourier" } else { "positional" }
                );
                for rt in [OnnxRuntime::Ort, OnnxRuntime::Tract] {
                    let mut g = onnx_export::load(&bytes, rt, DeviceSpec::Cpu).unwrap();
                    let out = g.run(&ins).unwrap();
                    let mut line = format!("{what:32} {rt:?}:");
                    for (i, s) in SIGMAS.iter().enumerate() {
                        let r = i * per..(i + 1) * per;
                        let e = norm_err(&out[0].data[r.clone()], &want[r]);
                        line += &format!(" σ={s}: {e:.1e}");
                        if e > worst.0 {
                            worst = (e, format!("{what} {rt:?} σ={s}"));
                        }
                        assert!(e <= TOL_VS_TCH, "{what} {rt:?} σ={s}: {e:.3e} > {TOL_VS_TCH:.0e}");
                    }
                    println!("{line}");
                }
            }
        }
    }
    println!(
        "worst vs tch: {:.2e} ({}), tolerance {TOL_VS_TCH:.0e}",
        worst.0, worst.1
    );
}
