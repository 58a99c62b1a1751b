//! The EDM sampler against `nets/*/sampler.npz` (deterministic and churn variants, recorded
//! latents and noise) on every runtime, the σ schedule, the σ of every network call, and the
//! per-seed generator against PyTorch's.

mod common;

use std::process::Command;

use common::tolerances::{TOL_SAMPLER_OUT, TOL_SAMPLER_SIGMA};
use common::{arr, fixture, read_npz};
use tiw::device::DeviceSpec;
use tiw::onnx_export::OnnxRuntime;
use tiw::parity::norm_err;
use tiw::sample::denoiser::{Denoiser, OnnxDenoiser, TchDenoiser};
use tiw::sample::sampler::{edm_sample, edm_t_steps, effective_range, SamplerSettings};

const NETS: [&str; 6] = [
    "edm_adm_r16_uncond",
    "edm_ddpmpp_r16_uncond",
    "edm_ddpmpp_r8_cond10",
    "edm_ncsnpp_r16_uncond",
    "ve_ncsnpp_r8_uncond",
    "vp_ddpmpp_r8_uncond",
];

fn runtimes(net: &str) -> Vec<Box<dyn Denoiser>> {
    let p = fixture(&format!("nets/{net}/network-snapshot-000000.pkl"));
    vec![
        Box::new(TchDenoiser::load(&p, DeviceSpec::Cpu).unwrap()),
        Box::new(OnnxDenoiser::load(&p, OnnxRuntime::Ort, DeviceSpec::Cpu).unwrap()),
        Box::new(OnnxDenoiser::load(&p, OnnxRuntime::Tract, DeviceSpec::Cpu).unwrap()),
    ]
}

#[test]
fn edm_sampler_matches_fixtures_on_every_runtime() {
    tch::set_num_threads(2);
    let mut worst = (0f64, String::new());
    for net in NETS {
        let f = read_npz(&fixture(&format!("nets/{net}/sampler.npz")));
        let scalar = |k: &str| arr(&f, k).to_f32()[0] as f64;
        let f64s = |k: &str| arr(&f, k).to_f64();
        let latents = arr(&f, "latents").to_f32();
        let n = arr(&f, "latents").shape[0];
        let per = latents.len() / n;
        let labels = f.iter().find(|a| a.name == "class_labels").map(|a| a.to_f32());
        let steps = arr(&f, "num_steps").to_f32()[0] as usize;
        for mut den in runtimes(net) {
            let info = den.info().clone();
            // σ schedule
            let (smin, smax) = effective_range(&info, f64s("sigma_min")[0], f64s("sigma_max")[0]);
            assert_eq!(smin, f64s("eff_sigma_min")[0], "{net}: effective sigma_min");
            assert_eq!(smax, scalar("eff_sigma_max"), "{net}: effective sigma_max");
            let t = edm_t_steps(&info, steps, smin, smax, f64s("rho")[0]);
            let e = norm_err(&t, &f64s("t_steps"));
            assert!(e <= TOL_SAMPLER_SIGMA, "{net}: t_steps {e:.2e}");
            for variant in ["det", "churn"] {
                let mut s = SamplerSettings {
                    num_steps: steps,
                    sigma_min: Some(f64s("sigma_min")[0]),
                    sigma_max: Some(f64s("sigma_max")[0]),
                    rho: f64s("rho")[0],
                    ..Default::default()
                };
                if variant == "churn" {
                    s.s_churn = scalar("churn_S_churn");
                    s.s_min = f64s("churn_S_min")[0];
                    s.s_max = f64s("churn_S_max")[0];
                    s.s_noise = f64s("churn_S_noise")[0];
                }
                let randn = f64s(&format!("{variant}_randn"));
                let mut noise = |i: usize| Ok(randn[i * n * per..(i + 1) * n * per].to_vec());
                let (x, calls) =
                    edm_sample(den.as_mut(), &latents, n, labels.as_deref(), &s, &mut noise).unwrap();
                let e = norm_err(&x, &f64s(&format!("{variant}_out")));
                let es = norm_err(&calls, &f64s(&format!("{variant}_call_sigma")));
                println!(
                    "{net:<24} {variant:<5} {:<12} out err {e:.2e}, call σ err {es:.1e} ({} calls)",
                    den.describe(),
                    calls.len()
                );
                assert!(
                    e <= TOL_SAMPLER_OUT,
                    "{net} {variant} {}: {e:.3e}",
                    den.describe()
                );
                assert!(
                    es <= TOL_SAMPLER_SIGMA && calls.len() == f64s(&format!("{variant}_call_sigma")).len(),
                    "{net} {variant}: call sigmas"
                );
                if e > worst.0 {
                    worst = (e, format!("{net} {variant} {}", den.describe()));
                }
            }
        }
    }
    println!("worst: {:.2e} at {}", worst.0, worst.1);
}

#[test]
fn per_seed_draws_equal_pytorch_generators() {
    let Ok(py) = std::env::var("TIW_TORCH_PY") else {
        println!("SKIPPED: TIW_TORCH_PY is not set (run through `make test`)");
        return;
    };
    let seeds = [0u64, 1, 12345, (1u64 << 32) + 7];
    let b = tiw::sample::noise::draw(&seeds, 3, 8, 10, 2, None, tch::Device::Cpu).unwrap();
    let script = r#"
import sys, torch, numpy as np
seeds = [int(s) for s in sys.argv[1].split(',')]
lat, lab, st = [], [], []
for s in seeds:
    g = torch.Generator('cpu').manual_seed(s % (1 << 32))
    lat.append(torch.randn([3, 8, 8], generator=g))
    lab.append(int(torch.randint(10, size=[], generator=g)))
    st.append([torch.randn([3, 8, 8], generator=g, dtype=torch.float64) for _ in range(2)])
np.save(sys.argv[2], torch.stack(lat).numpy())
np.save(sys.argv[3], np.array(lab))
np.save(sys.argv[4], np.stack([np.stack([x[i].numpy() for x in st]) for i in range(2)]))
"#;
    let dir = tempfile::tempdir().unwrap();
    let (pl, pb, ps) = (
        dir.path().join("l.npy"),
        dir.path().join("b.npy"),
        dir.path().join("s.npy"),
    );
    let seeds_s = seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(py)
        .args(["-c", script, &seeds_s])
        .arg(&pl)
        .arg(&pb)
        .arg(&ps)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |p: &std::path::Path| -> Vec<u8> {
        let bytes = std::fs::read(p).unwrap();
        let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
        let h = npy.header().clone();
        let _ = h;
        bytes
    };
    let lat: Vec<f32> = npyz::NpyFile::new(&read(&pl)[..]).unwrap().into_vec().unwrap();
    let lab: Vec<i64> = npyz::NpyFile::new(&read(&pb)[..]).unwrap().into_vec().unwrap();
    let st: Vec<f64> = npyz::NpyFile::new(&read(&ps)[..]).unwrap().into_vec().unwrap();
    assert_eq!(b.latents, lat, "latents bit-identical to torch.Generator('cpu')");
    let ours_lab: Vec<i64> = b
        .labels
        .unwrap()
        .chunks(10)
        .map(|r| r.iter().position(|&v| v == 1.0).unwrap() as i64)
        .collect();
    assert_eq!(ours_lab, lab, "class labels");
    assert_eq!(b.steps.concat(), st, "per-step f64 noise bit-identical");
    println!("latents, labels and step noise of seeds {seeds:?} are bit-identical to PyTorch's");
}
