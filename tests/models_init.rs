//! Fresh-network initialisation (`Weights::init`, SPEC §2.1–§2.5).
//!
//! * Every tensor of small SongUNet (DDPM++, NCSN++), DhariwalUNet, ADM discriminator and
//!   feature-extractor configurations has the empirical mean/std of the distribution the
//!   SPEC prescribes for its name (expectations derived here from the names and shapes, not
//!   from the declared `Init`), zero-inits are exactly zero, constants exact.
//! * The draws are PyTorch's: the fixture networks are "official constructor after
//!   `torch.manual_seed(seed)`, then + N(0, perturb_std²) noise"; the NCSN++ Fourier
//!   buffer (not perturbed) must equal ours bit for bit, and for every parameter the
//!   residual (fixture − ours)/perturb_std must look like N(0, 1) — impossible unless our
//!   init reproduces the official stream tensor by tensor (a wrong seed is flagged as a
//!   negative control). Same for the fixture ADM feature extractor.
//! * A freshly initialised denoiser gives finite outputs of sensible scale.
//! * With `TIW_TORCH_PY`, plain layers initialised by real PyTorch are compared bit for bit.

mod common;

use std::process::Command;

use common::{arr, fixture, read_npz, NpzArray};
use tch::{Device, Kind, Tensor};
use tiw_models::adm::{EncoderConfig, EncoderUNet};
use tiw_models::backend::Ops;
use tiw_models::config::NetConfig;
use tiw_models::edm::EdmDenoiser;
use tiw_models::tch_ops::{TchOps, TchTensor};
use tiw_models::vb::{Init, InitMode, Listed, TensorKind, Weights};

/// libtorch's default generator is process-global: tests that draw from it run one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn v(x: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&x.detach().to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

/// A distribution a tensor must follow.
#[derive(Debug, Clone, Copy)]
enum Dist {
    /// A buffer with a computed value (checked by the key/forward tests).
    Given,
    Const(f32),
    Uniform(f64),
    Normal(f64),
}

/// Fans of the weight of layer `prefix` (conv: `in·k²`, `out·k²`).
fn fans(listing: &[Listed], prefix: &str) -> (usize, usize) {
    let w = listing
        .iter()
        .find(|l| l.name == format!("{prefix}.weight"))
        .unwrap_or_else(|| panic!("no weight for {prefix}"));
    let rf: usize = w.shape[2..].iter().product();
    (w.shape[1] * rf, w.shape[0] * rf)
}

fn split(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap()
}

/// SPEC §2.2 (SongUNet) / §2.3 (DhariwalUNet) expectation for `name`.
fn edm_expected(name: &str, listing: &[Listed], dhariwal: bool) -> Dist {
    let (prefix, leaf) = split(name);
    let layer = prefix.rsplit('.').next().unwrap();
    if layer.starts_with("norm") || layer.ends_with("aux_norm") || layer == "out_norm" {
        return Dist::Const(if leaf == "weight" { 1.0 } else { 0.0 });
    }
    if leaf == "freqs" {
        return Dist::Normal(16.0);
    }
    if leaf == "resample_filter" {
        return Dist::Given;
    }
    let (fi, fo) = fans(listing, prefix);
    if dhariwal {
        // kaiming_uniform ×sqrt(1/3) for weights and biases: U(±sqrt(3/fi)·sqrt(1/3));
        // init_zero (conv1, proj, out_conv, map_augment) all zero; map_label kaiming_normal ×sqrt(L)
        if ["conv1", "proj", "out_conv", "map_augment"].contains(&layer) {
            return Dist::Const(0.0);
        }
        if layer == "map_label" {
            return Dist::Normal((1.0 / fi as f64).sqrt() * (fi as f64).sqrt());
        }
        return Dist::Uniform((3.0 / fi as f64).sqrt() * (1.0f64 / 3.0).sqrt());
    }
    if leaf == "bias" {
        return Dist::Const(0.0); // init_bias 0
    }
    let gain = if ["conv1", "proj"].contains(&layer) || layer.ends_with("aux_conv") {
        1e-5
    } else if layer == "qkv" {
        0.2f64.sqrt()
    } else {
        1.0
    };
    Dist::Uniform(gain * (6.0 / (fi + fo) as f64).sqrt())
}

/// SPEC §2.5 (PyTorch defaults, zero_module, positional embedding) expectation for `name`.
fn adm_expected(name: &str, shape: &[usize], listing: &[Listed]) -> Dist {
    let (prefix, leaf) = split(name);
    if prefix.ends_with("in_layers.0")
        || prefix.ends_with("out_layers.0")
        || prefix.ends_with(".norm")
        || prefix == "out.0"
    {
        return Dist::Const(if leaf == "weight" { 1.0 } else { 0.0 });
    }
    if prefix.ends_with("out_layers.3") || prefix.ends_with("proj_out") {
        return Dist::Const(0.0);
    }
    if leaf == "positional_embedding" {
        return Dist::Normal(1.0 / (shape[0] as f64).sqrt());
    }
    if prefix == "label_emb" {
        return Dist::Normal(1.0);
    }
    let (fi, _) = fans(listing, prefix);
    Dist::Uniform(1.0 / (fi as f64).sqrt())
}

/// Checks `x` against `d`; returns a short description. Tolerances: 6 standard errors.
fn check(name: &str, x: &[f32], d: Dist) -> String {
    let n = x.len() as f64;
    let mean = x.iter().map(|&a| a as f64).sum::<f64>() / n;
    let std = (x.iter().map(|&a| (a as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let (sd, kurt) = match d {
        Dist::Given => return "given".into(),
        Dist::Const(c) => {
            assert!(x.iter().all(|&a| a == c), "{name}: not all {c}");
            return format!("const {c}");
        }
        Dist::Uniform(b) => {
            let m = x.iter().fold(0f64, |m, &a| m.max((a as f64).abs()));
            assert!(m <= b * (1.0 + 1e-6), "{name}: |x| max {m} > bound {b}");
            (b / 3f64.sqrt(), 1.8)
        }
        Dist::Normal(s) => (s, 3.0),
    };
    let tol_mean = 6.0 * sd / n.sqrt();
    assert!(
        mean.abs() <= tol_mean,
        "{name}: mean {mean:.3e} (n {n}, tol {tol_mean:.2e})"
    );
    if n >= 16.0 {
        // relative standard error of a sample std ≈ sqrt((κ − 1)/(4n))
        let tol_std = 6.0 * ((kurt - 1.0) / (4.0 * n)).sqrt() + 1e-6;
        let rel = std / sd - 1.0;
        assert!(
            rel.abs() <= tol_std,
            "{name}: std {std:.4e} vs {sd:.4e} (rel {rel:.3e}, tol {tol_std:.2e})"
        );
    }
    format!("{d:?}")
}

fn edm_cfg(net: &str) -> NetConfig {
    let (_, config) =
        tiw_models::load::read(&fixture(&format!("nets/{net}/network-snapshot-000000.pkl"))).unwrap();
    NetConfig::from_json(&config.unwrap()).unwrap()
}

/// `"seed"` and `"perturb_std"` of a fixture's JSON (which may hold Python's `Infinity`).
fn fixture_seed(path: &str) -> (u64, f64) {
    let text = std::fs::read_to_string(fixture(path)).unwrap();
    let num = |key: &str| -> f64 {
        let at = text
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{path}: no {key}"));
        let rest = text[at + key.len() + 3..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap();
        rest[..end].trim().parse().unwrap()
    };
    (num("seed") as u64, num("perturb_std"))
}

const NETS: [&str; 3] = [
    "edm_ddpmpp_r16_uncond",
    "edm_ncsnpp_r16_uncond",
    "edm_adm_r16_uncond",
];

#[test]
fn edm_init_distributions_and_forward() {
    let _g = rng_lock();
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    for net in NETS {
        let cfg = edm_cfg(net);
        let w = Weights::init(&o, 7);
        let den = EdmDenoiser::new(&w.root(), &cfg).unwrap();
        let listing = w.listing();
        let named = w.named().unwrap();
        let dhariwal = net.contains("adm");
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for (name, _, t) in &named {
            let inner = name.strip_prefix("model.").unwrap();
            let sub: Vec<Listed> = listing
                .iter()
                .map(|l| Listed {
                    name: l.name.trim_start_matches("model.").to_string(),
                    ..l.clone()
                })
                .collect();
            let d = edm_expected(inner, &sub, dhariwal);
            let kind = check(name, &v(t), d);
            *counts
                .entry(kind.split('(').next().unwrap().to_string())
                .or_default() += 1;
        }
        println!("{net}: {} tensors checked {counts:?}", named.len());

        // forward of the fresh denoiser at several σ: finite, D ≈ scale of the clean image
        tch::manual_seed(1);
        let res = cfg.img_resolution as i64;
        let y = Tensor::rand([4, 3, res, res], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let aug = (cfg.augment_dim() > 0).then(|| {
            TchTensor(Tensor::zeros(
                [4, cfg.augment_dim() as i64],
                (Kind::Float, Device::Cpu),
            ))
        });
        for sigma in [0.002f64, 0.1, 1.0, 10.0, 80.0] {
            let x = &y + Tensor::randn_like(&y) * sigma;
            let s = o.constant(&[sigma as f32; 4], &[4]).unwrap();
            let out = den
                .forward(&o, &TchTensor(x), &s, None, aug.as_ref(), false)
                .unwrap();
            let d = v(&out.d.0);
            assert!(d.iter().all(|a| a.is_finite()), "{net} σ={sigma}: non-finite D");
            let rms = (d.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / d.len() as f64).sqrt();
            println!("  σ={sigma:<6} rms(D) {rms:.3}");
            assert!(rms > 1e-3 && rms < 5.0, "{net} σ={sigma}: rms(D) {rms}");
        }
    }
}

fn adm_check(cfg: &EncoderConfig, what: &str) {
    let o = TchOps::new(Device::Cpu);
    let w = Weights::init(&o, 11);
    let net = EncoderUNet::new(&w.root(), cfg).unwrap();
    let listing = w.listing();
    let named = w.named().unwrap();
    let mut zeros = 0;
    for (name, _, t) in &named {
        let d = adm_expected(
            name,
            &t.size().iter().map(|&s| s as usize).collect::<Vec<_>>(),
            &listing,
        );
        if matches!(d, Dist::Const(c) if c == 0.0)
            && (name.contains("out_layers.3") || name.contains("proj_out"))
        {
            zeros += 1;
        }
        check(name, &v(t), d);
    }
    assert!(zeros > 0);
    // a forward pass of the fresh network is finite
    let s = cfg.image_size as i64;
    tch::manual_seed(3);
    let x = TchTensor(Tensor::randn(
        [2, cfg.in_channels as i64, s, s],
        (Kind::Float, Device::Cpu),
    ));
    let t = TchTensor(Tensor::from_slice(&[0.1f32, 0.7]));
    let out = net.forward(&o, &x, &t, None, true).unwrap();
    assert!(v(&out.logits.unwrap().0).iter().all(|a| a.is_finite()));
    println!(
        "{what}: {} tensors checked ({zeros} zero_module tensors)",
        named.len()
    );
}

#[test]
fn adm_init_distributions() {
    let _g = rng_lock();
    tch::set_num_threads(2);
    // the discriminator train_classifier.py builds: load_discriminator(None, channel=512, condition 0)
    adm_check(
        &EncoderConfig::discriminator(512, false),
        "discriminator (512 ch)",
    );
    let mut cond = EncoderConfig::discriminator(128, true);
    cond.model_channels = 64;
    adm_check(&cond, "conditional discriminator (label_emb)");
    // the small extractor of the fixtures
    let (store, _) = tiw_models::load::read(&fixture("classifier/feature_extractor.pt")).unwrap();
    let cfg = EncoderConfig::infer(&|n| store.get(n).map(|e| e.shape.clone()), None).unwrap();
    adm_check(&cfg, "fixture feature extractor");
}

/// Residual (fixture − ours)/std over a tensor: (mean, std).
fn residual(ours: &[f32], want: &[f32], std: f64) -> (f64, f64) {
    let r: Vec<f64> = ours
        .iter()
        .zip(want)
        .map(|(a, b)| (*b as f64 - *a as f64) / std)
        .collect();
    let n = r.len() as f64;
    let m = r.iter().sum::<f64>() / n;
    (m, (r.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt())
}

/// Parameters whose residual (fixture − ours)/std is not N(0, 1) within 6 standard errors,
/// and the worst ratio to the tolerance among the others. Buffers must match exactly.
fn residual_failures(
    named: &[(String, TensorKind, TchTensor)],
    want: &dyn Fn(&str) -> Vec<f32>,
    std: f64,
) -> (Vec<String>, usize, (f64, String)) {
    let mut worst = (0f64, String::new());
    let (mut bad, mut n_checked) = (Vec::new(), 0);
    for (name, kind, t) in named {
        let w = want(name);
        let ours = v(&t.0);
        if *kind == TensorKind::Buffer {
            if ours != w {
                bad.push(format!("buffer {name}"));
            }
            continue;
        }
        if ours.len() < 64 {
            continue;
        }
        let (m, s) = residual(&ours, &w, std);
        let n = ours.len() as f64;
        let z = (m.abs() / (6.0 / n.sqrt())).max((s - 1.0).abs() / (6.0 * (0.5 / n).sqrt()));
        n_checked += 1;
        if z > 1.0 {
            bad.push(format!("{name}: residual mean {m:.3e} std {s:.4} (n {n})"));
        } else if z > worst.0 {
            worst = (z, name.clone());
        }
    }
    (bad, n_checked, worst)
}

#[test]
fn init_reproduces_official_construction_draws() {
    let _g = rng_lock();
    tch::set_num_threads(2);
    let o = TchOps::new(Device::Cpu);
    for net in NETS {
        let (seed, std) = fixture_seed(&format!("nets/{net}/config.json"));
        let w = Weights::init(&o, seed);
        let _ = EdmDenoiser::new(&w.root(), &edm_cfg(net)).unwrap();
        let sd = read_npz(&fixture(&format!("nets/{net}/state_dict.npz")));
        let named = w.named().unwrap();
        if net.contains("ncsnpp") {
            // FourierEmbedding.freqs = 16·randn, the first draw after the seed, not perturbed
            let f = named.iter().find(|n| n.0 == "model.map_noise.freqs").unwrap();
            assert_eq!(v(&f.2 .0), arr(&sd, "model.map_noise.freqs").to_f32(), "freqs");
        }
        let (bad, n, worst) = residual_failures(&named, &|n| arr(&sd, n).to_f32(), std);
        assert!(bad.is_empty(), "{net}: {bad:#?}");
        println!(
            "{net}: {n} parameters with N(0,1) residuals; worst at {:.2} of the tolerance ({})",
            worst.0, worst.1
        );
        // negative control: another seed must be detected
        let w2 = Weights::init(&o, seed + 1);
        let _ = EdmDenoiser::new(&w2.root(), &edm_cfg(net)).unwrap();
        let (bad2, _, _) = residual_failures(&w2.named().unwrap(), &|n| arr(&sd, n).to_f32(), std);
        println!(
            "  seed {} instead: {} of {n} parameters flagged",
            seed + 1,
            bad2.len()
        );
        assert!(
            bad2.len() * 4 > n,
            "{net}: the residual test does not detect a wrong stream"
        );
    }
    // the fixture feature extractor (seed 6000, perturbation 0.03)
    let (seed, std) = fixture_seed("classifier/feature_extractor.pt.digest.json");
    let (store, _) = tiw_models::load::read(&fixture("classifier/feature_extractor.pt")).unwrap();
    let cfg = EncoderConfig::infer(&|n| store.get(n).map(|e| e.shape.clone()), None).unwrap();
    let w = Weights::init(&o, seed);
    let _ = EncoderUNet::new(&w.root(), &cfg).unwrap();
    let want = |n: &str| {
        let e = store.get(n).unwrap();
        tiw_models::vb::to_f32(e.dtype, &store.bytes(e)).unwrap()
    };
    let (bad, n, worst) = residual_failures(&w.named().unwrap(), &want, std);
    assert!(bad.is_empty(), "feature extractor: {bad:#?}");
    println!(
        "feature extractor: {n} parameters with N(0,1) residuals; worst at {:.2} of the tolerance ({})",
        worst.0, worst.1
    );
    let w2 = Weights::init(&o, seed + 1);
    let _ = EncoderUNet::new(&w2.root(), &cfg).unwrap();
    let (bad2, _, _) = residual_failures(&w2.named().unwrap(), &want, std);
    println!(
        "  seed {} instead: {} of {n} parameters flagged",
        seed + 1,
        bad2.len()
    );
    assert!(
        !bad2.is_empty(),
        "extractor: the residual test does not detect a wrong stream"
    );
}

#[test]
fn init_matches_pytorch_plain_layers() {
    let Ok(py) = std::env::var("TIW_TORCH_PY") else {
        println!(
            "SKIPPED: TIW_TORCH_PY is not set (run through `make test`, which provides a full-torch venv)"
        );
        return;
    };
    let _g = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("init.npz");
    let res = Command::new(&py)
        .arg(fixture("../py/init_reference.py"))
        .arg(&out)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(res.status.success(), "python failed:\n{text}");
    let want = read_npz(&out);
    // The same declarations, in the same order, after the same seed (see init_reference.py).
    let o = TchOps::new(Device::Cpu);
    let w = Weights::init(&o, 1234);
    let r = w.root();
    let edm = |mode, fi: usize, fo: usize, gain| Init::Edm {
        mode,
        fan_in: fi,
        fan_out: fo,
        gain,
    };
    let decl: Vec<(&str, Vec<usize>, Init)> = vec![
        ("torch_linear.weight", vec![7, 5], Init::torch_default(5, true)),
        ("torch_linear.bias", vec![7], Init::torch_default(5, false)),
        (
            "torch_conv.weight",
            vec![4, 3, 3, 3],
            Init::torch_default(27, true),
        ),
        ("torch_conv.bias", vec![4], Init::torch_default(27, false)),
        (
            "torch_conv1d.weight",
            vec![18, 6, 1],
            Init::torch_default(6, true),
        ),
        ("torch_conv1d.bias", vec![18], Init::torch_default(6, false)),
        ("pos_emb", vec![64, 17], Init::RandnDiv(64f64.powf(0.5))),
        ("embedding", vec![10, 32], Init::RandnMul(1.0)),
        (
            "edm_xu.weight",
            vec![32, 16, 3, 3],
            edm(InitMode::XavierUniform, 144, 288, 0.2f64.sqrt()),
        ),
        (
            "edm_xu.bias",
            vec![32],
            edm(InitMode::XavierUniform, 144, 288, 0.0),
        ),
        (
            "edm_xn.weight",
            vec![24, 40],
            edm(InitMode::XavierNormal, 40, 24, 1.0),
        ),
        (
            "edm_ku.weight",
            vec![24, 40],
            edm(InitMode::KaimingUniform, 40, 24, (1.0f64 / 3.0).sqrt()),
        ),
        (
            "edm_ku.bias",
            vec![24],
            edm(InitMode::KaimingUniform, 40, 24, (1.0f64 / 3.0).sqrt()),
        ),
        (
            "edm_kn.weight",
            vec![24, 40],
            edm(InitMode::KaimingNormal, 40, 24, 1.0),
        ),
        ("fourier", vec![8], Init::RandnMul(16.0)),
        (
            "zeroed.weight",
            vec![5, 5, 3, 3],
            Init::Zeroed(Box::new(Init::torch_default(45, true))),
        ),
        (
            "zeroed.bias",
            vec![5],
            Init::Zeroed(Box::new(Init::torch_default(45, false))),
        ),
        ("after_zeroed", vec![6], Init::RandnMul(1.0)),
    ];
    for (name, shape, init) in &decl {
        let t = r.param_init(name, shape, init.clone()).unwrap();
        let got = v(&t.0);
        let exp: &NpzArray = arr(&want, name);
        assert_eq!(exp.shape, *shape, "{name} shape");
        let e = exp.to_f32();
        let same = got.iter().zip(&e).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{name}: differs from PyTorch (first {:?} vs {:?})",
            &got[..3.min(got.len())],
            &e[..3.min(e.len())]
        );
    }
    println!("{} tensors bit-identical to PyTorch 2.13 (torch.nn defaults, EDM weight_init modes, randn scalings, zero_module)", decl.len());
}
