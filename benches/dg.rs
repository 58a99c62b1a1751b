//! Discriminator-guidance benchmark (plain `fn main()` harness): the cost of a guided network
//! evaluation against an unguided one, ours against DG's sampler logic in PyTorch eager in
//! the same run (`benches/pytorch_dg.py`, on the modules of `benches/pytorch_baseline.py`).
//!
//! ```text
//! cargo bench --bench dg -- [--out DIR] [--steps N] [--runs R] [--batch B]
//! ```
//!
//! Full-size networks with deterministic pseudo-random weights (`Weights::create`): the
//! CIFAR-10 DDPM++ EDM denoiser, the 32×32 ADM feature extractor and the 512-channel
//! discriminator, at batch 16 (default) on the CPU with 2 libtorch threads. Measured, best
//! of `--runs` after a warm-up:
//!
//! * **NFE**: one denoiser call (tch, `no_grad`) — an unguided network evaluation;
//! * **guidance**: one `DgGuide::grad_log_ratio` (extractor + discriminator forward, input
//!   gradient) — what a guided evaluation adds;
//! * **samplers**: `edm_sample` and `dg_sample` (w₁ = 2, DG's defaults) with `--steps`
//!   noise levels (default 2: 3 network calls, of which the first is guided; the last
//!   Euler point lies below DG's τ window).
//!
//! A guided NFE costs NFE + guidance; the ratio guided/unguided is reported for both sides,
//! and ours/PyTorch per row. Before timing, PyTorch's denoiser output and guidance on the
//! bench's input are checked against ours (≤ 1e-4 relative).
//!
//! Results: `DIR/dg.md`, `DIR/dg.json` and the table on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "common/pytorch.rs"]
mod pytorch;
#[path = "common/weights.rs"]
mod weights;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use tiw::device::DeviceSpec;
use tiw::npz::{Array, Data};
use tiw::sample::denoiser::{Denoiser, TchDenoiser};
use tiw::sample::dg::{dg_sample, DgGuide, DgSettings};
use tiw::sample::sampler::{edm_sample, SamplerSettings};
use tiw_converters::{safetensors_io, Json, TensorStore};
use tiw_models::adm::{EncoderConfig, EncoderUNet};
use tiw_models::config::NetConfig;
use tiw_models::edm::EdmDenoiser;

const THREADS: i32 = 2;

struct Args {
    out: PathBuf,
    steps: usize,
    runs: usize,
    batch: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("bench-out"),
        steps: 2,
        runs: 2,
        batch: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--out" => a.out = PathBuf::from(val()),
            "--steps" => a.steps = val().parse().expect("--steps N"),
            "--runs" => a.runs = val().parse().expect("--runs R"),
            "--batch" => a.batch = val().parse().expect("--batch B"),
            "--bench" => {}
            other => panic!("unknown argument {other} (--out DIR --steps N --runs R --batch B)"),
        }
    }
    assert!(a.steps >= 2 && a.runs >= 1 && a.batch >= 1);
    a
}

fn write_store(store: &TensorStore, kind: &str, config: Option<&Json>, path: &Path) {
    let names: Vec<&str> = store.entries().iter().map(|e| e.name.as_str()).collect();
    let meta = safetensors_io::metadata(kind, config, None, &names);
    safetensors_io::write(store, meta, path, &|_| {}, None)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Best and all wall times of `runs` calls after one warm-up.
fn time_it(what: &str, runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    f();
    let ts: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let best = ts.iter().cloned().fold(f64::INFINITY, f64::min);
    eprintln!("  {what}: best {best:.3} s ({runs} runs)");
    ts
}

fn best(ts: &[f64]) -> f64 {
    ts.iter().cloned().fold(f64::INFINITY, f64::min)
}

fn main() {
    tiw::malloc_tuning::keep_freed_memory();
    let a = parse_args();
    std::fs::create_dir_all(&a.out).expect("--out");
    tch::set_num_threads(THREADS);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "dg bench: batch {}, {} steps, load average {}",
        a.batch,
        a.steps,
        load.trim()
    );

    // networks with random weights, as files (our loaders and PyTorch read the same bytes)
    let keys = root.join("tests/fixtures/keys/cifar10_ddpmpp_edm_uncond.json");
    let j = Json::parse(&std::fs::read_to_string(&keys).expect("keys file")).expect("keys json");
    let config = j.get("config").expect("config").clone();
    let cfg = NetConfig::from_json(&config).expect("DDPM++ configuration");
    let net_path = a.out.join("dg_ddpmpp_random.safetensors");
    let store = weights::random_store(0x9E37_79B9_7F4A_7C15, &|vb| {
        EdmDenoiser::new(vb, &cfg).map(|_| ())
    });
    write_store(&store, "edm-snapshot", Some(&config), &net_path);
    let fe_cfg = EncoderConfig::feature_extractor(32).expect("extractor config");
    let dis_cfg = EncoderConfig::discriminator(512, false);
    let fe_path = a.out.join("dg_extractor_random.safetensors");
    let dis_path = a.out.join("dg_discriminator_random.safetensors");
    for (cfg, seed, path) in [
        (&fe_cfg, 0xD1B5_4A32_D192_ED03u64, &fe_path),
        (&dis_cfg, 0x94D0_49BB_1331_11EB, &dis_path),
    ] {
        let st = weights::random_store(seed, &|vb| EncoderUNet::new(vb, cfg).map(|_| ()));
        write_store(&st, "state-dict", None, path);
    }
    drop(store);
    let mut den = TchDenoiser::load(&net_path, DeviceSpec::Cpu).expect("denoiser");
    let guide = DgGuide::load(&fe_path, &dis_path, DeviceSpec::Cpu, 32).expect("DG networks");

    // inputs: x = latents·σ at σ = 2.5 (inside DG's τ window), latents N(0, 1)
    let n = a.batch;
    let per = 3 * 32 * 32;
    tch::manual_seed(1);
    let latents = Tensor::randn([n as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let latents: Vec<f32> = Vec::<f32>::try_from(&latents.view(-1)).expect("f32");
    let sigma = vec![2.5f64; n];
    let x: Vec<f64> = latents.iter().map(|&v| v as f64 * 2.5).collect();
    let d = den.denoise(&x, n, 2.5, None).expect("denoise");
    let g = guide
        .grad_log_ratio(&x, n, &sigma, 0.01, 1.0, None)
        .expect("guidance");
    assert!(g.guided && g.grad.iter().all(|v| v.is_finite()));

    eprintln!("ours (tch, CPU):");
    let nfe = time_it("NFE (denoiser call)", a.runs, || {
        std::hint::black_box(den.denoise(&x, n, 2.5, None).expect("denoise"));
    });
    let gd = time_it(
        "guidance (extractor + discriminator, input gradient)",
        a.runs,
        || {
            std::hint::black_box(
                guide
                    .grad_log_ratio(&x, n, &sigma, 0.01, 1.0, None)
                    .expect("guidance"),
            );
        },
    );
    let settings = SamplerSettings {
        num_steps: a.steps,
        ..Default::default()
    };
    let zeros = vec![0f64; n * per];
    let sruns = a.runs.saturating_sub(1).max(1);
    let edm = time_it("EDM sampler", sruns, || {
        std::hint::black_box(
            edm_sample(&mut den, &latents, n, None, &settings, &mut |_| Ok(zeros.clone()))
                .expect("edm_sample"),
        );
    });
    let dgs = DgSettings::default();
    let dgr = time_it("DG sampler", sruns, || {
        std::hint::black_box(
            dg_sample(
                &mut den,
                Some(&guide),
                &latents,
                n,
                None,
                false,
                &settings,
                &dgs,
                &mut |_| Ok(zeros.clone()),
                None,
            )
            .expect("dg_sample"),
        );
    });

    // PyTorch eager, same run
    let inputs = a.out.join("dg_inputs.npz");
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    tiw::npz::write(
        &inputs,
        &[
            Array {
                name: "x".into(),
                shape: vec![n, 3, 32, 32],
                data: Data::F32(f32s(&x)),
            },
            Array {
                name: "sigma".into(),
                shape: vec![n],
                data: Data::F32(vec![2.5; n]),
            },
            Array {
                name: "latents".into(),
                shape: vec![n, 3, 32, 32],
                data: Data::F32(latents.clone()),
            },
            Array {
                name: "D".into(),
                shape: vec![n, 3, 32, 32],
                data: Data::F32(f32s(&d)),
            },
            Array {
                name: "g".into(),
                shape: vec![n, 3, 32, 32],
                data: Data::F32(g.grad.clone()),
            },
        ],
    )
    .expect("write inputs");
    let py = py_baseline(&a, &net_path, &fe_path, &dis_path, &inputs);
    report(&a, [&nfe, &gd, &edm, &dgr], py.as_ref());
}

/// Runs `pytorch_dg.py` with `$TIW_TORCH_PY`; its JSON or `None` (reason printed).
fn py_baseline(a: &Args, net: &Path, fe: &Path, dis: &Path, inputs: &Path) -> Option<Value> {
    let py = std::env::var_os("TIW_TORCH_PY").or_else(|| {
        eprintln!("  PyTorch baseline skipped: TIW_TORCH_PY is not set (TIW_TORCH_CHECK=1 . scripts/env.sh)");
        None
    })?;
    let out = a.out.join("pytorch_dg.json");
    let script = pytorch::script().with_file_name("pytorch_dg.py");
    let status = std::process::Command::new(py)
        .arg(script)
        .args(["--threads", &THREADS.to_string(), "--steps", &a.steps.to_string()])
        .args(["--runs", &a.runs.to_string()])
        .arg("--weights")
        .arg(net)
        .arg("--extractor")
        .arg(fe)
        .arg("--discriminator")
        .arg(dis)
        .arg("--inputs")
        .arg(inputs)
        .arg("--out")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => serde_json::from_str(&std::fs::read_to_string(&out).ok()?).ok(),
        other => {
            eprintln!("  PyTorch baseline failed ({other:?}); reported without it");
            None
        }
    }
}

/// The table (stdout, `dg.md`) and `dg.json`.
fn report(a: &Args, [nfe, gd, edm, dgr]: [&Vec<f64>; 4], py: Option<&Value>) {
    let pb = |k: &str| py.and_then(|v| v.get(k)).and_then(pytorch::best);
    let (n, g, e, d) = (best(nfe), best(gd), best(edm), best(dgr));
    let (pn, pg, pe, pd) = (pb("nfe_s"), pb("guidance_s"), pb("sampler_s"), pb("dg_sampler_s"));
    let guided = |n: f64, g: f64| (n + g) / n;
    let ratio = |o: f64, p: Option<f64>| p.map_or("—".into(), |p| format!("{:.2}", o / p));
    let cell = |p: Option<f64>| p.map_or("—".into(), |p| format!("{p:.3}"));
    let mut md = format!(
        "DG benchmark: batch {}, DDPM++ 32×32 + 32×32 ADM extractor + 512-channel discriminator (random weights), tch CPU, {THREADS} threads\n\n\
         | what | ours s | PyTorch eager s | ours / PyTorch |\n|---|---:|---:|---:|\n",
        a.batch
    );
    for (what, o, p) in [
        ("unguided NFE (denoiser call)", n, pn),
        ("guidance (extractor + discriminator + input gradient)", g, pg),
        (
            "guided NFE (NFE + guidance)",
            n + g,
            pn.zip(pg).map(|(a, b)| a + b),
        ),
        (
            &*format!("EDM sampler, {} steps ({} NFE)", a.steps, 2 * a.steps - 1),
            e,
            pe,
        ),
        (&*format!("DG sampler, {} steps (w₁ = 2)", a.steps), d, pd),
    ] {
        md += &format!("| {what} | {o:.3} | {} | {} |\n", cell(p), ratio(o, p));
    }
    md += &format!(
        "\nguided / unguided NFE: ours {:.2}×, PyTorch {}; DG / EDM sampler: ours {:.2}×, PyTorch {}\n",
        guided(n, g),
        pn.zip(pg)
            .map_or("—".into(), |(n, g)| format!("{:.2}×", guided(n, g))),
        d / e,
        pe.zip(pd).map_or("—".into(), |(e, d)| format!("{:.2}×", d / e)),
    );
    println!("{md}");
    std::fs::write(a.out.join("dg.md"), &md).expect("dg.md");
    let j = json!({"batch": a.batch, "steps": a.steps, "ours": {"nfe_s": nfe, "guidance_s": gd, "sampler_s": edm, "dg_sampler_s": dgr}, "pytorch": py});
    std::fs::write(
        a.out.join("dg.json"),
        serde_json::to_string_pretty(&j).expect("json"),
    )
    .expect("dg.json");
}
