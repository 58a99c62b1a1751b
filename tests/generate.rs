//! `tiw generate` end to end: parity mode against the sampler fixtures on every runtime,
//! sharding, resume, output layout, and bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::{arr, fixture, read_npz};
use tiw::parity::norm_err;

fn tiw(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tiw"))
        .args(args)
        .output()
        .expect("run tiw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

fn write_randn(path: &Path, a: &common::NpzArray) {
    let script = "import sys, numpy as np\nnp.savez(sys.argv[2], randn=np.load(sys.argv[1])[sys.argv[3]])\n";
    let py = std::env::var("TIW_PY").expect("TIW_PY (run through make test)");
    let st = Command::new(py)
        .args(["-c", script])
        .arg(fixture("nets/edm_ddpmpp_r8_cond10/sampler.npz"))
        .arg(path)
        .arg(&a.name)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn parity_mode_reproduces_sampler_fixture_on_every_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let net = fixture("nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl");
    let fx = fixture("nets/edm_ddpmpp_r8_cond10/sampler.npz");
    let f = read_npz(&fx);
    let randn = dir.path().join("randn.npz");
    write_randn(&randn, arr(&f, "churn_randn"));
    let steps = arr(&f, "num_steps").to_f32()[0].to_string();
    let churn = arr(&f, "churn_S_churn").to_f32()[0].to_string();
    let smin = arr(&f, "churn_S_min").to_f64()[0].to_string();
    let smax = arr(&f, "churn_S_max").to_f64()[0].to_string();
    let snoise = arr(&f, "churn_S_noise").to_f64()[0].to_string();
    // the fixture's `class_labels` (one per latent) travel in the --latents file
    for rt in ["ort", "tract", "tch"] {
        for variant in ["det", "churn"] {
            let out = dir.path().join(format!("{rt}-{variant}"));
            let npz = dir.path().join(format!("{rt}-{variant}.npz"));
            let mut args = vec![
                "generate",
                "--network",
                p(&net),
                "--outdir",
                p(&out),
                "--seeds",
                "0-1",
                "--steps",
                &steps,
                "--latents",
                p(&fx),
                "--runtime",
                rt,
                "--out-npz",
                p(&npz),
                "--quiet",
            ];
            if variant == "churn" {
                args.extend([
                    "--noise",
                    p(&randn),
                    "--S_churn",
                    &churn,
                    "--S_min",
                    &smin,
                    "--S_max",
                    &smax,
                    "--S_noise",
                    &snoise,
                ]);
            }
            let (ok, err) = tiw(&args);
            assert!(ok, "{rt} {variant}: {err}");
            let got = read_npz(&npz);
            let e = norm_err(
                &arr(&got, "x").to_f64(),
                &arr(&f, &format!("{variant}_out")).to_f64(),
            );
            println!("{rt:<6} {variant:<6} x vs {variant}_out: {e:.2e}");
            assert!(e <= 1e-5, "{rt} {variant}: {e}");
            assert_eq!(arr(&got, "images").shape, vec![2, 8, 8, 3]);
        }
    }
}

fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|f| {
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&f).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else if e.extension().is_some_and(|x| x == "png") {
            out.push(e);
        }
    }
    out
}

#[test]
fn shards_union_equals_full_run_and_resume_fills_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let net = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let onnx = dir.path().join("net.onnx");
    assert!(tiw(&["export", p(&net), p(&onnx), "--quiet"]).0);
    let common = [
        "--seeds",
        "995-1006",
        "--batch",
        "3",
        "--steps",
        "4",
        "--subdirs",
        "--quiet",
        "--S_churn",
        "10",
    ];
    let full = dir.path().join("full");
    let (ok, err) = tiw(&[
        &["generate", "--network", p(&onnx), "--outdir", p(&full)][..],
        &common[..],
    ]
    .concat());
    assert!(ok, "{err}");
    assert!(
        full.join("000000/000995.png").exists() && full.join("001000/001006.png").exists(),
        "subdirs layout"
    );
    let sharded = dir.path().join("sharded");
    for i in 0..3 {
        let shard = format!("{i}/3");
        let (ok, err) = tiw(&[
            &[
                "generate",
                "--network",
                p(&onnx),
                "--outdir",
                p(&sharded),
                "--shard",
                &shard,
            ][..],
            &common[..],
        ]
        .concat());
        assert!(ok, "{err}");
    }
    let (a, b) = (pngs(&full), pngs(&sharded));
    assert_eq!(a.len(), 12);
    assert!(a == b, "union of 3 shards differs from the full run");
    // resume: delete two images, regenerate only those, same bytes
    std::fs::remove_file(full.join("000000/000997.png")).unwrap();
    std::fs::remove_file(full.join("001000/001004.png")).unwrap();
    let (ok, err) = tiw(&[
        &[
            "generate",
            "--network",
            p(&onnx),
            "--outdir",
            p(&full),
            "--resume",
        ][..],
        &common[..],
    ]
    .concat());
    assert!(ok, "{err}");
    assert!(pngs(&full) == b, "resumed run differs");
    println!("12 images: 3 shards == full run (PNG bytes), resume regenerated the missing ones identically");
}

#[test]
fn bad_generate_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let net = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let out = dir.path().join("o");
    let wrong = fixture("nets/edm_ddpmpp_r16_uncond/sampler.npz");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--seeds", "5-1"], "empty"),
        (vec!["--shard", "3/3"], "0 <= I < N"),
        (
            vec!["--latents", p(&wrong), "--seeds", "0-1"],
            "latents has shape",
        ),
        (vec!["--class", "3"], "classes"),
        (vec!["--device", "cuda"], "cuda"),
    ];
    for (extra, want) in cases {
        let args = [
            &["generate", "--network", p(&net), "--outdir", p(&out), "--quiet"][..],
            &extra[..],
        ]
        .concat();
        let (ok, err) = tiw(&args);
        assert!(!ok, "{extra:?} should fail");
        assert!(err.contains(want), "{extra:?}: {err}");
        println!("{}", err.trim());
    }
}
