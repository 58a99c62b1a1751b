//! The DG (EDM-G++) sampler against `nets/*/dg_sampler.npz`, recorded from DG's official
//! `generate.edm_sampler` with the fixture feature extractor and discriminator (fixture README
//! §10): teacher-forced per-step guidance, log ratio and sampler steps; all five variants end
//! to end on tch, and with the denoiser on ONNX Runtime and tract; σ grid, per-sample t̂ and
//! the boolean masks exactly; weight 0 against the plain EDM sampler.

mod common;

use std::path::Path;

use common::tolerances::{
    TOL_DG_GUIDANCE, TOL_DG_LOG_RATIO_ABS, TOL_DG_OUT, TOL_DG_OUT_SECOND, TOL_DG_OUT_W0, TOL_DG_STEP,
    TOL_DG_T_HAT_REL, TOL_DG_W0_VS_EDM,
};
use common::{arr, fixture, read_npz, NpzArray};
use tiw::device::DeviceSpec;
use tiw::onnx_export::OnnxRuntime;
use tiw::parity::norm_err;
use tiw::sample::denoiser::{Denoiser, OnnxDenoiser, TchDenoiser};
use tiw::sample::dg::{dg_sample, dg_step, DgContext, DgGuide, DgSettings, DgTrace};
use tiw::sample::sampler::{edm_sample, SamplerSettings};

const NETS: [&str; 3] = [
    "edm_ddpmpp_r16_uncond",
    "edm_ncsnpp_r16_uncond",
    "edm_adm_r16_uncond",
];
const VARIANTS: [&str; 5] = ["default", "second", "boost", "window", "w0"];

/// Boolean arrays (`|b1`), which the shared reader skips.
fn bools(path: &Path, name: &str) -> Vec<bool> {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap();
    npz.by_name(name).unwrap().unwrap().into_vec::<bool>().unwrap()
}

struct Fix {
    path: std::path::PathBuf,
    a: Vec<NpzArray>,
    n: usize,
    per: usize,
    steps: usize,
}

impl Fix {
    fn load(net: &str) -> Fix {
        let path = fixture(&format!("nets/{net}/dg_sampler.npz"));
        let a = read_npz(&path);
        let shape = arr(&a, "latents").shape.clone();
        let steps = arr(&a, "num_steps").to_f32()[0] as usize;
        Fix {
            path,
            n: shape[0],
            per: shape[1..].iter().product(),
            steps,
            a,
        }
    }
    fn f64s(&self, k: &str) -> Vec<f64> {
        arr(&self.a, k).to_f64()
    }
    fn scalar(&self, k: &str) -> f64 {
        self.f64s(k)[0]
    }
    fn settings(&self) -> SamplerSettings {
        SamplerSettings {
            num_steps: self.steps,
            sigma_min: Some(self.scalar("sigma_min")),
            sigma_max: Some(self.scalar("sigma_max")),
            rho: self.scalar("rho"),
            s_churn: self.scalar("S_churn"),
            s_min: self.scalar("S_min"),
            s_max: self.scalar("S_max"),
            s_noise: self.scalar("S_noise"),
            ablation: None,
        }
    }
    fn dg(&self, v: &str) -> DgSettings {
        DgSettings {
            w1: self.scalar(&format!("{v}_dg_weight_1st_order")),
            w2: self.scalar(&format!("{v}_dg_weight_2nd_order")),
            time_min: self.scalar(&format!("{v}_time_min")),
            time_max: self.scalar(&format!("{v}_time_max")),
            boosting: self.scalar(&format!("{v}_boosting")) != 0.0,
        }
    }
    fn step(&self, k: &str, i: usize) -> Vec<f64> {
        let all = self.f64s(k);
        let m = self.n * self.per;
        all[i * m..(i + 1) * m].to_vec()
    }
    fn guide(&self) -> DgGuide {
        DgGuide::load(
            &fixture("classifier/feature_extractor.pt"),
            &fixture("classifier/discriminator.pt"),
            DeviceSpec::Cpu,
            self.scalar("img_resolution") as usize,
        )
        .unwrap()
    }
}

fn snapshot(net: &str) -> std::path::PathBuf {
    fixture(&format!("nets/{net}/network-snapshot-000000.pkl"))
}

#[test]
fn dg_teacher_forced_guidance_log_ratio_and_steps() {
    tch::set_num_threads(2);
    let (mut wg, mut wl, mut ws) = (
        (0f64, String::new()),
        (0f64, String::new()),
        (0f64, String::new()),
    );
    for net in NETS {
        let f = Fix::load(net);
        let guide = f.guide();
        for v in ["default", "boost"] {
            let dg = f.dg(v);
            let t_hat = f.f64s(&format!("{v}_t_hat"));
            let lr = f.f64s(&format!("{v}_log_ratio"));
            let guided = bools(&f.path, &format!("{v}_guided"));
            for i in 0..f.steps {
                let x_hat = f.step(&format!("{v}_x_hat"), i);
                let th = &t_hat[i * f.n..(i + 1) * f.n];
                let g = guide
                    .grad_log_ratio(&x_hat, f.n, th, dg.time_min, dg.time_max, None)
                    .unwrap();
                assert_eq!(g.guided, guided[i], "{net} {v} step {i}: guided");
                let want = f.step(&format!("{v}_guidance"), i);
                let got: Vec<f64> = g.grad.iter().map(|&x| x as f64).collect();
                let e = norm_err(&got, &want);
                if e > wg.0 {
                    wg = (e, format!("{net} {v} step {i}"));
                }
                assert!(e <= TOL_DG_GUIDANCE, "{net} {v} step {i}: guidance {e:.2e}");
                if guided[i] {
                    for b in 0..f.n {
                        let e = (g.log_ratio[b] as f64 - lr[i * f.n + b]).abs();
                        if e > wl.0 {
                            wl = (e, format!("{net} {v} step {i} sample {b}"));
                        }
                        assert!(e <= TOL_DG_LOG_RATIO_ABS, "{net} {v} step {i}: log ratio {e:.2e}");
                    }
                } else {
                    assert!(
                        g.log_ratio.iter().all(|&l| l == 1e7),
                        "{net} {v} step {i}: out-of-range log ratio"
                    );
                }
            }
        }
        // One sampler step from the recorded x̂_i (no churn in `default`, so x̂_{i+1} is the
        // state after step i).
        let mut den = TchDenoiser::load(&snapshot(net), DeviceSpec::Cpu).unwrap();
        let s = f.settings();
        let dg = f.dg("default");
        let ctx = DgContext::new(&den, Some(&guide), f.n, None, false, &s, &dg).unwrap();
        let randn = f.f64s("randn");
        let m = f.n * f.per;
        for i in 0..f.steps - 1 {
            let x = f.step("default_x_hat", i);
            let mut lr = vec![f32::INFINITY; f.n];
            let next = dg_step(&mut den, &ctx, i, &x, &randn[i * m..(i + 1) * m], &mut lr, None).unwrap();
            let e = norm_err(&next, &f.step("default_x_hat", i + 1));
            if e > ws.0 {
                ws = (e, format!("{net} step {i}"));
            }
            assert!(e <= TOL_DG_STEP, "{net}: teacher-forced step {i}: {e:.2e}");
        }
    }
    eprintln!(
        "worst teacher-forced guidance {:.2e} ({}), tolerance {TOL_DG_GUIDANCE:.0e}",
        wg.0, wg.1
    );
    eprintln!(
        "worst teacher-forced log ratio (abs) {:.2e} ({}), tolerance {TOL_DG_LOG_RATIO_ABS:.0e}",
        wl.0, wl.1
    );
    eprintln!(
        "worst teacher-forced step {:.2e} ({}), tolerance {TOL_DG_STEP:.0e}",
        ws.0, ws.1
    );
}

fn end_to_end(rt: &str) {
    tch::set_num_threads(2);
    let mut worst: Vec<(f64, String)> = Vec::new();
    for net in NETS {
        let f = Fix::load(net);
        let guide = f.guide();
        let p = snapshot(net);
        let mut den: Box<dyn Denoiser> = match rt {
            "tch" => Box::new(TchDenoiser::load(&p, DeviceSpec::Cpu).unwrap()),
            "ort" => Box::new(OnnxDenoiser::load(&p, OnnxRuntime::Ort, DeviceSpec::Cpu).unwrap()),
            _ => Box::new(OnnxDenoiser::load(&p, OnnxRuntime::Tract, DeviceSpec::Cpu).unwrap()),
        };
        let s = f.settings();
        let no_dg = DgSettings {
            w1: 0.0,
            ..Default::default()
        };
        let ctx = DgContext::new(den.as_ref(), None, f.n, None, false, &s, &no_dg).unwrap();
        let e = norm_err(&ctx.t_steps, &f.f64s("t_steps"));
        assert!(e <= TOL_DG_T_HAT_REL, "{net}: t_steps {e:.2e}");
        let latents = arr(&f.a, "latents").to_f32();
        let randn = f.f64s("randn");
        let m = f.n * f.per;
        for v in VARIANTS {
            let dg = f.dg(v);
            let mut trace = DgTrace::default();
            let g = (v != "w0").then_some(&guide);
            let out = dg_sample(
                den.as_mut(),
                g,
                &latents,
                f.n,
                None,
                false,
                &s,
                &dg,
                &mut |i| Ok(randn[i * m..(i + 1) * m].to_vec()),
                Some(&mut trace),
            )
            .unwrap();
            let tol = match v {
                "second" => TOL_DG_OUT_SECOND,
                "w0" => TOL_DG_OUT_W0,
                _ => TOL_DG_OUT,
            };
            let e = norm_err(&out, &f.f64s(&format!("{v}_out")));
            eprintln!("{rt} {net} {v}: out {e:.2e} (tolerance {tol:.0e})");
            worst.push((e / tol, format!("{net} {v}: {e:.2e} of {tol:.0e}")));
            assert!(e <= tol, "{rt} {net} {v}: out {e:.2e} > {tol:.0e}");
            let th: Vec<f64> = trace.t_hat.concat();
            let e = norm_err(&th, &f.f64s(&format!("{v}_t_hat")));
            assert!(e <= TOL_DG_T_HAT_REL, "{rt} {net} {v}: t_hat {e:.2e}");
            if dg.w1 != 0.0 {
                assert_eq!(
                    trace.guided,
                    bools(&f.path, &format!("{v}_guided")),
                    "{rt} {net} {v}: guided steps"
                );
                // Free-running log ratio: reported only (it follows the trajectory).
                let lr = f.f64s(&format!("{v}_log_ratio"));
                let got: Vec<f64> = trace.log_ratio.concat().iter().map(|&x| x as f64).collect();
                let d = got
                    .iter()
                    .zip(&lr)
                    .filter(|(_, &b)| b != 1e7)
                    .fold(0f64, |mx, (a, b)| mx.max((a - b).abs()));
                eprintln!("{rt} {net} {v}: free-running log ratio max abs diff {d:.2e}");
            }
            if v == "second" {
                assert_eq!(
                    trace.guided_2nd,
                    bools(&f.path, "second_guided_2nd"),
                    "{rt} {net}: 2nd-order guided steps"
                );
            }
            if v == "boost" {
                assert_eq!(
                    trace.boosted.concat(),
                    bools(&f.path, "boost_boosted"),
                    "{rt} {net}: boosted samples"
                );
                assert_eq!(
                    trace.doubled.concat(),
                    bools(&f.path, "boost_doubled"),
                    "{rt} {net}: doubled guidance"
                );
            }
        }
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!(
        "{rt}: worst end-to-end error relative to its tolerance: {}",
        worst[0].1
    );
}

#[test]
fn dg_end_to_end_tch() {
    end_to_end("tch");
}

#[test]
fn dg_end_to_end_ort() {
    end_to_end("ort");
}

#[test]
fn dg_end_to_end_tract() {
    end_to_end("tract");
}

#[test]
fn dg_weight_zero_is_the_edm_sampler() {
    tch::set_num_threads(2);
    let mut worst = 0f64;
    for net in NETS {
        let f = Fix::load(net);
        let mut den = TchDenoiser::load(&snapshot(net), DeviceSpec::Cpu).unwrap();
        let s = f.settings();
        let latents = arr(&f.a, "latents").to_f32();
        let randn = f.f64s("randn");
        let m = f.n * f.per;
        let mut noise = |i: usize| Ok(randn[i * m..(i + 1) * m].to_vec());
        let dg = DgSettings {
            w1: 0.0,
            ..Default::default()
        };
        let a = dg_sample(
            &mut den, None, &latents, f.n, None, false, &s, &dg, &mut noise, None,
        )
        .unwrap();
        let (b, _) = edm_sample(&mut den, &latents, f.n, None, &s, &mut noise).unwrap();
        let e = norm_err(&a, &b);
        worst = worst.max(e);
        assert!(e <= TOL_DG_W0_VS_EDM, "{net}: w0 vs EDM sampler {e:.2e}");
    }
    eprintln!("worst DG(w=0) vs EDM sampler {worst:.2e} (tolerance {TOL_DG_W0_VS_EDM:.0e})");
}

#[test]
fn dg_rejects_bad_inputs() {
    let f = Fix::load("edm_ddpmpp_r16_uncond");
    let mut den = TchDenoiser::load(&snapshot("edm_ddpmpp_r16_uncond"), DeviceSpec::Cpu).unwrap();
    let s = f.settings();
    let latents = arr(&f.a, "latents").to_f32();
    let mut noise = |_: usize| Ok(vec![0f64; latents.len()]);
    // Guidance weight without a discriminator.
    let e = dg_sample(
        &mut den,
        None,
        &latents,
        f.n,
        None,
        false,
        &s,
        &DgSettings::default(),
        &mut noise,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a discriminator"), "{e}");
    // Inverted window.
    let bad = DgSettings {
        time_min: 0.5,
        time_max: 0.1,
        ..Default::default()
    };
    let guide = f.guide();
    let e = dg_sample(
        &mut den,
        Some(&guide),
        &latents,
        f.n,
        None,
        false,
        &s,
        &bad,
        &mut noise,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("time window"), "{e}");
    // --cond with an unconditional discriminator.
    let e = dg_sample(
        &mut den,
        Some(&guide),
        &latents,
        f.n,
        None,
        true,
        &s,
        &DgSettings::default(),
        &mut noise,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("unconditional"), "{e}");
    // Wrong latent count.
    let e = dg_sample(
        &mut den,
        Some(&guide),
        &latents[1..],
        f.n,
        None,
        false,
        &s,
        &DgSettings::default(),
        &mut noise,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("latent"), "{e}");
}
