//! `tiw forward`, `tiw guidance` and `tiw compare` as a user runs them against PyTorch outputs.

mod common;

use common::run_tiw as tiw;
use common::{arr, fixture, read_npz};
use tiw::parity::norm_err;

fn p(x: &std::path::Path) -> &str {
    x.to_str().unwrap()
}

#[test]
fn forward_then_compare_edm_nets() {
    let dir = tempfile::tempdir().unwrap();
    // conditional net, per-sample sigma, batched; and the same net through safetensors
    let net = fixture("nets/edm_ddpmpp_r8_cond10/network-snapshot-000000.pkl");
    let inputs = fixture("nets/edm_ddpmpp_r8_cond10/forward.npz");
    let out = dir.path().join("out.npz");
    let (ok, _, err) = tiw(&[
        "forward",
        "--network",
        p(&net),
        "--inputs",
        p(&inputs),
        "--out",
        p(&out),
        "--batch",
        "2",
    ]);
    assert!(ok, "{err}");
    let (ok, table, _) = tiw(&[
        "compare",
        p(&out),
        p(&inputs),
        "--keys",
        "D,F_x",
        "--rtol",
        "1e-5",
    ]);
    println!("{table}");
    assert!(ok && table.contains("2 passed, 0 failed"), "{table}");

    let st = dir.path().join("net.safetensors");
    assert!(tiw(&["convert", p(&net), p(&st)]).0);
    let out2 = dir.path().join("out2.npz");
    let (ok, _, err) = tiw(&[
        "forward",
        "--network",
        p(&st),
        "--inputs",
        p(&inputs),
        "--out",
        p(&out2),
    ]);
    assert!(ok, "{err}");
    let (ok, table, _) = tiw(&["compare", p(&out2), p(&inputs), "--keys", "D,F_x"]);
    assert!(ok, "{table}");

    // a wrong reference fails with exit status 1
    let other = fixture("nets/vp_ddpmpp_r8_uncond/forward.npz");
    let (ok, table, _) = tiw(&["compare", p(&out), p(&other), "--keys", "D"]);
    assert!(!ok && table.contains("FAIL"), "{table}");
}

#[test]
fn forward_extractor_and_discriminator() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = fixture("classifier/forward.npz");
    let out = dir.path().join("fe.npz");
    let (ok, _, err) = tiw(&[
        "forward",
        "--extractor",
        p(&fixture("classifier/feature_extractor.pt")),
        "--discriminator",
        p(&fixture("classifier/discriminator.pt")),
        "--inputs",
        p(&inputs),
        "--out",
        p(&out),
    ]);
    assert!(ok, "{err}");
    let (ok, table, _) = tiw(&[
        "compare",
        p(&out),
        p(&inputs),
        "--keys",
        "features,fe_logits,dis_logits,dis_sigmoid",
        "--rtol",
        "2e-5",
    ]);
    println!("{table}");
    assert!(ok, "{table}");
}

#[test]
fn guidance_command_matches_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = fixture("classifier/guidance.npz");
    let out = dir.path().join("g.npz");
    let (ok, _, err) = tiw(&[
        "guidance",
        "--extractor",
        p(&fixture("classifier/feature_extractor.pt")),
        "--discriminator",
        p(&fixture("classifier/discriminator.pt")),
        "--inputs",
        p(&inputs),
        "--out",
        p(&out),
        "--img-resolution",
        "64",
    ]);
    assert!(ok, "{err}");
    let ours = read_npz(&out);
    let reference = read_npz(&inputs);
    for (mine, theirs) in [
        ("grad_log_ratio", "grad_log_ratio_res64"),
        ("log_ratio", "grad_log_ratio_res64_log_ratio"),
        ("prediction", "grad_log_ratio_res64_prediction"),
        (
            "weight_correction_prediction",
            "weight_correction_res64_prediction",
        ),
    ] {
        let e = norm_err(&arr(&ours, mine).to_f32(), &arr(&reference, theirs).to_f32());
        println!("{mine} vs {theirs}: {e:.2e}");
        assert!(e <= 2e-5, "{mine}: {e}");
    }
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.npz");
    let net = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    for (inputs, want) in [
        (
            fixture("nets/vp_ddpmpp_r8_uncond/forward.npz"),
            "x has shape [3, 3, 8, 8]; this network takes (N, 3, 16, 16)",
        ),
        (fixture("classifier/guidance.npz"), "no array \"x\""),
        (fixture("classifier/discriminator.pt"), "not an .npz"),
    ] {
        let (ok, _, err) = tiw(&[
            "forward",
            "--network",
            p(&net),
            "--inputs",
            p(&inputs),
            "--out",
            p(&out),
        ]);
        assert!(!ok, "should fail");
        assert!(err.contains(want), "{err}");
        println!("{}", err.trim());
    }
    let (ok, _, err) = tiw(&[
        "forward",
        "--network",
        p(&net),
        "--inputs",
        p(&fixture("nets/edm_ddpmpp_r16_uncond/forward.npz")),
        "--out",
        p(&out),
        "--device",
        "cuda",
    ]);
    assert!(!ok && err.contains("cuda"), "{err}");
    println!("{}", err.trim());
    let (ok, _, err) = tiw(&[
        "forward",
        "--network",
        p(&fixture("classifier/discriminator.pt")),
        "--inputs",
        p(&fixture("nets/edm_ddpmpp_r16_uncond/forward.npz")),
        "--out",
        p(&out),
    ]);
    assert!(!ok && err.contains("no network configuration"), "{err}");
    println!("{}", err.trim());
}
