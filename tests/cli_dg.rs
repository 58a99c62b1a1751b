//! Discriminator guidance from the command line, end to end on fixture networks: unguided
//! `generate` → `train-classifier` (fixture real images vs those samples, as `.npz` and as an
//! image folder) → guided `generate` with the trained discriminator (sharded, resumed,
//! parity npz), plus the flag errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture;

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw-full"))
}

fn run(args: &[&str]) -> String {
    let out = tiw().args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tiw {args:?}:\n{text}");
    text
}

fn fails(args: &[&str]) -> String {
    let out = tiw().args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "tiw {args:?} should fail:\n{text}");
    assert!(!text.contains("panicked"), "tiw {args:?} panicked:\n{text}");
    text
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn npz_f64(path: &Path, key: &str) -> Vec<f64> {
    let a = tiw::npz::read(path).unwrap();
    tiw::npz::get(&a, key, path).unwrap().to_f64()
}

#[test]
fn train_classifier_on_samples_then_guided_generate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let net = s(&fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl"));
    let fe = s(&fixture("classifier/feature_extractor.pt"));
    // 1. Unguided samples (the "bias" set), as PNGs and as an npz.
    let plain = d.join("plain");
    let plain_npz = d.join("plain.npz");
    run(&[
        "generate",
        "--network",
        &net,
        "--outdir",
        &s(&plain),
        "--seeds",
        "0-7",
        "--steps",
        "4",
        "--runtime",
        "tch",
        "--quiet",
        "--out-npz",
        &s(&plain_npz),
    ]);
    // 2. Discriminators: reference = fixture real images, bias = the samples (npz, folder).
    for (bias, dir) in [(s(&plain_npz), "disc_npz"), (s(&plain), "disc_png")] {
        run(&[
            "train-classifier",
            "--ref",
            &s(&fixture("dataset/real_data.npz")),
            "--bias",
            &bias,
            "--extractor",
            &fe,
            "--savedir",
            &s(&d.join(dir)),
            "--img-resolution",
            "16",
            "--batch-size",
            "4",
            "--real-mul",
            "2",
            "--iter",
            "3",
            "--save-every",
            "2",
        ]);
    }
    let dis = d.join("disc_npz/discriminator_3.pt");
    assert!(dis.is_file() && d.join("disc_png/discriminator_3.pt").is_file());
    // 3. Guided sampling (boosting, 2nd order), in two shards, then resumed.
    let guided = d.join("guided");
    let dg = |extra: &[&str]| -> String {
        let mut a: Vec<String> = [
            "generate",
            "--network",
            &net,
            "--outdir",
            &s(&guided),
            "--seeds",
            "0-7",
            "--steps",
            "4",
            "--runtime",
            "tch",
            "--quiet",
            "--batch",
            "4",
            "--extractor",
            &fe,
            "--discriminator",
            &s(&dis),
            "--dg-weight-1st-order",
            "2",
            "--dg-weight-2nd-order",
            "1",
            "--dg-boosting",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        let v: Vec<&str> = a.iter().map(String::as_str).collect();
        run(&v)
    };
    dg(&["--shard", "0/2"]);
    let n0 = std::fs::read_dir(&guided).unwrap().count();
    assert!(n0 > 0 && n0 < 8, "shard 0 wrote {n0} images");
    dg(&["--shard", "1/2"]);
    for seed in 0..8 {
        assert!(
            guided.join(format!("{seed:06}.png")).is_file(),
            "seed {seed} missing"
        );
    }
    let before = std::fs::metadata(guided.join("000000.png"))
        .unwrap()
        .modified()
        .unwrap();
    dg(&["--resume"]);
    let after = std::fs::metadata(guided.join("000000.png"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "--resume regenerated existing images");
    // Parity npz: guidance changes the samples; weight 0 does not.
    let g_npz = d.join("guided.npz");
    dg(&["--out-npz", &s(&g_npz)]);
    let (xp, xg) = (npz_f64(&plain_npz, "x"), npz_f64(&g_npz, "x"));
    let diff = xp.iter().zip(&xg).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff > 1e-3, "guidance left the samples unchanged ({diff:.2e})");
    let w0_npz = d.join("w0.npz");
    run(&[
        "generate",
        "--network",
        &net,
        "--outdir",
        &s(&d.join("w0")),
        "--seeds",
        "0-7",
        "--steps",
        "4",
        "--runtime",
        "tch",
        "--quiet",
        "--extractor",
        &fe,
        "--discriminator",
        &s(&dis),
        "--dg-weight-1st-order",
        "0",
        "--out-npz",
        &s(&w0_npz),
    ]);
    let x0 = npz_f64(&w0_npz, "x");
    let scale = xp.iter().fold(0f64, |m, a| m.max(a.abs()));
    let e = xp.iter().zip(&x0).fold(0f64, |m, (a, b)| m.max((a - b).abs())) / scale;
    eprintln!("guided vs plain max abs {diff:.3}; weight 0 vs plain {e:.2e}");
    assert!(e <= 1e-5, "weight 0 differs from the plain sampler by {e:.2e}");
}

#[test]
fn dg_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = s(&dir.path().join("o"));
    let net = s(&fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl"));
    let fe = s(&fixture("classifier/feature_extractor.pt"));
    let dis = s(&fixture("classifier/discriminator.pt"));
    let base = [
        "generate",
        "--network",
        &net,
        "--outdir",
        &out,
        "--seeds",
        "0",
        "--steps",
        "2",
        "--runtime",
        "tch",
    ];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|x| x.to_string()).collect() };
    let f = |v: Vec<String>| fails(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let e = f(with(&["--dg-weight-1st-order", "2"]));
    assert!(e.contains("--discriminator"), "{e}");
    let e = f(with(&["--discriminator", &dis]));
    assert!(e.contains("--extractor"), "{e}");
    let e = f(with(&["--discriminator", &dis, "--extractor", &fe, "--cond"]));
    assert!(e.contains("unconditional"), "{e}");
    let e = f(with(&[
        "--discriminator",
        &dis,
        "--extractor",
        &fe,
        "--dg-time-min",
        "0.9",
        "--dg-time-max",
        "0.1",
    ]));
    assert!(e.contains("time window"), "{e}");
    // An extractor for another resolution (the 8x8 net).
    let net8 = s(&fixture("nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl"));
    let e = fails(&[
        "generate",
        "--network",
        &net8,
        "--outdir",
        &out,
        "--seeds",
        "0",
        "--steps",
        "2",
        "--runtime",
        "tch",
        "--discriminator",
        &dis,
        "--extractor",
        &fe,
    ]);
    assert!(e.contains("feature extractor takes"), "{e}");
    // The extractor given as the discriminator.
    let e = f(with(&["--discriminator", &fe, "--extractor", &fe]));
    assert!(e.contains("1 output"), "{e}");
}
