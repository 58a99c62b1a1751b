//! `tiw verify`: runtime parity (tch, ort, tract) and parity with PyTorch outputs.

mod common;

use std::process::Command;

use common::fixture;

fn tiw_env(args: &[&str], unset: &[&str]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiw"));
    c.args(args);
    for k in unset {
        c.env_remove(k);
    }
    let out = c.output().expect("run tiw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tiw(args: &[&str]) -> (bool, String, String) {
    tiw_env(args, &[])
}

fn p(x: &std::path::Path) -> &str {
    x.to_str().unwrap()
}

/// Largest "norm. err" of the table rows whose B column contains `b`.
fn worst(table: &str, b: &str) -> f64 {
    table
        .lines()
        .filter(|l| (l.ends_with(" ok") || l.ends_with(" FAIL")) && l.contains(b))
        .filter_map(|l| l.split_whitespace().rev().nth(1)?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

#[test]
fn network_against_pytorch_reference_passes() {
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let reference = fixture("nets/edm_ddpmpp_r16_uncond/forward.npz");
    let (ok, out, err) = tiw(&["verify", "--network", p(&net), "--reference", p(&reference)]);
    println!("{out}{err}");
    assert!(ok, "{err}");
    for rt in ["tch: tch", "ort: ort (CPU)", "tract: tract (CPU)"] {
        assert!(out.contains(rt), "{rt} did not run");
    }
    // both the plain and the augment-labelled outputs are checked, against every runtime
    assert_eq!(out.matches("reference D_augment").count(), 3);
    assert_eq!(out.matches("reference D ").count(), 3);
    assert!(out.contains("12 comparisons within"));
    let (w_ref, w_rt) = (worst(&out, "reference"), worst(&out, "tract"));
    println!("worst normalised error vs PyTorch {w_ref:e}, between runtimes {w_rt:e}");
    assert!(w_ref < 1e-5 && w_rt < 1e-5);
}

#[test]
fn perturbed_reference_fails() {
    let dir = tempfile::tempdir().unwrap();
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let src = fixture("nets/edm_ddpmpp_r16_uncond/forward.npz");
    let mut arrays = tiw::npz::read(&src).unwrap();
    // perturb one element of D by 1e-3 of its scale: ten times the default tolerance
    let d = arrays.iter_mut().find(|a| a.name == "D").unwrap();
    let tiw::npz::Data::F32(v) = &mut d.data else {
        panic!("D is not f32")
    };
    let scale = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    v[17] += 1e-3 * scale;
    let bad = dir.path().join("bad.npz");
    tiw::npz::write(&bad, &arrays).unwrap();
    let (ok, out, err) = tiw(&["verify", "--network", p(&net), "--reference", p(&bad)]);
    println!("{out}{err}");
    assert!(!ok, "a perturbed reference must fail");
    assert!(err.contains("exceed the tolerance"), "{err}");
    // exactly the three runtime-vs-reference rows of the plain D fail (D_augment is intact)
    assert_eq!(out.lines().filter(|l| l.ends_with("FAIL")).count(), 3);
    let w = worst(&out, "reference D ");
    println!("worst error vs the perturbed D: {w:e}");
    assert!((w - 1e-3).abs() < 1e-4, "{w}");
    // and a looser tolerance accepts it
    let (ok, _, err) = tiw(&[
        "verify",
        "--network",
        p(&net),
        "--reference",
        p(&bad),
        "--tol",
        "2e-3",
    ]);
    assert!(ok, "{err}");
}

#[test]
fn extractor_and_discriminator_against_pytorch_reference() {
    let (ok, out, err) = tiw(&[
        "verify",
        "--extractor",
        p(&fixture("classifier/feature_extractor.pt")),
        "--discriminator",
        p(&fixture("classifier/discriminator.pt")),
        "--reference",
        p(&fixture("classifier/forward.npz")),
    ]);
    println!("{out}{err}");
    assert!(ok, "{err}");
    assert!(out.contains("reference features") && out.contains("reference dis_logits"));
    let w = worst(&out, "reference");
    println!("worst normalised error vs PyTorch: {w:e}");
    assert!(w < 5e-5, "{w}");
}

#[test]
fn generated_inputs_conditional_nets() {
    // class-conditional EDM net: one-hot labels are generated
    let (ok, out, err) = tiw(&[
        "verify",
        "--network",
        p(&fixture("nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl")),
        "--batch",
        "5",
    ]);
    println!("{out}{err}");
    assert!(ok, "{err}");
    assert!(out.contains("5 seeded inputs") && out.contains("3 comparisons within"));
    // conditional discriminator: int labels are generated
    let (ok, out, err) = tiw(&[
        "verify",
        "--extractor",
        p(&fixture("classifier/feature_extractor.pt")),
        "--discriminator",
        p(&fixture("classifier/discriminator_cond_legacy.pt")),
        "--batch",
        "3",
    ]);
    println!("{out}{err}");
    assert!(ok, "{err}");
    assert!(out.contains("dis_logits") && out.contains("6 comparisons within"));
}

#[test]
fn unavailable_runtime_is_reported_as_skipped() {
    let net = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let reference = fixture("nets/vp_ddpmpp_r8_uncond/forward.npz");
    // (without ORT_DYLIB_PATH the library recorded at build time is used: a missing one)
    let out = Command::new(env!("CARGO_BIN_EXE_tiw"))
        .args(["verify", "--network", p(&net), "--reference", p(&reference)])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .expect("run tiw");
    let (ok, out, err) = (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    println!("{out}{err}");
    assert!(ok, "{err}");
    assert!(
        out.contains("ort: skipped (the ONNX Runtime library does not exist"),
        "{out}"
    );
    assert!(out.contains("3 comparisons within"));
}

#[test]
fn onnx_network_runs_on_onnx_runtimes_only() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("net.onnx");
    let (ok, _, err) = tiw(&[
        "export",
        p(&fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl")),
        p(&onnx),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = tiw(&[
        "verify",
        "--network",
        p(&onnx),
        "--reference",
        p(&fixture("nets/edm_ddpmpp_r16_uncond/forward.npz")),
    ]);
    println!("{out}{err}");
    assert!(ok, "{err}");
    assert!(out.contains("tch: skipped (libtorch runs checkpoints"));
    assert!(out.contains("ort") && out.contains("tract") && out.contains("6 comparisons within"));
    // without a reference, only two runtimes: one comparison
    let (ok, out, err) = tiw(&["verify", "--network", p(&onnx), "--batch", "2"]);
    println!("{out}{err}");
    assert!(ok && out.contains("1 comparisons within"), "{err}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.npz");
    std::fs::write(&junk, b"not a zip").unwrap();
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let (ok, _, err) = tiw(&["verify", "--network", p(&net), "--reference", p(&junk)]);
    assert!(!ok && err.contains("junk.npz"), "{err}");
    println!("{}", err.trim());
    // a reference without D
    let (ok, _, err) = tiw(&[
        "verify",
        "--network",
        p(&net),
        "--reference",
        p(&fixture("classifier/forward.npz")),
    ]);
    assert!(!ok && err.contains("no array \"D\""), "{err}");
    println!("{}", err.trim());
}
