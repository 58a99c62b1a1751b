//! The `tiw` binary: `inspect` (text and JSON), `convert` (formats, options, errors), `doctor`.

mod common;

use std::process::Command;

use common::fixture;
use common::run_tiw as tiw;

#[test]
fn inspect_snapshot_text_and_json() {
    let f = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let (ok, out, err) = tiw(&["inspect", f.to_str().unwrap()]);
    assert!(ok, "{err}");
    for want in [
        "pickle protocol 4",
        "edm-snapshot",
        "EDMPrecond",
        "torch.storage._load_from_bytes",
        "model.enc.16x16_conv.weight",
        "147 tensors",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let (ok, out, err) = tiw(&["inspect", "--json", f.to_str().unwrap()]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("strict JSON");
    assert_eq!(v["kind"], "edm-snapshot");
    assert_eq!(v["protocol"], 4);
    assert_eq!(v["totals"]["tensors"], 147);
    assert_eq!(v["totals"]["elements"], 189507);
    assert_eq!(v["config"]["attributes"]["sigma_max"], "inf");
    assert_eq!(v["tensors"][0]["name"], "model.map_augment.weight");
    assert!(v["globals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["opaque"] == false));
}

#[test]
fn inspect_every_format() {
    for (f, want) in [
        ("classifier/discriminator.pt", "torch.save zip"),
        ("classifier/discriminator_cond_legacy.pt", "torch.save legacy"),
        ("loss/training-state-002560.pt", "training-state"),
    ] {
        let (ok, out, err) = tiw(&["inspect", fixture(f).to_str().unwrap(), "--max-rows", "3"]);
        assert!(ok, "{f}: {err}");
        assert!(out.contains(want), "{f}: {out}");
        assert!(out.contains("totals:"), "{f}: {out}");
    }
}

#[test]
fn convert_options_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let state = fixture("loss/training-state-002560.pt");
    let (ok, _, err) = tiw(&[
        "convert",
        state.to_str().unwrap(),
        &d("opt.safetensors"),
        "--what",
        "optimizer",
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("training-state:optimizer"), "{err}");
    let (ok, out, _) = tiw(&["inspect", &d("opt.safetensors"), "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("optimizer.")), "{names:?}");
    assert!(names.contains(&"optimizer.exp_avg_sq.model.map_layer0.weight"));
    assert_eq!(v["metadata"]["tiw.kind"], "training-state:optimizer");

    let snap = fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl");
    let (ok, _, err) = tiw(&[
        "convert",
        snap.to_str().unwrap(),
        &d("aug.pt"),
        "--key",
        "augment_pipe",
    ]);
    assert!(ok, "{err}");
    let (ok, out, _) = tiw(&["inspect", &d("aug.pt")]);
    assert!(ok && out.contains("state-dict"), "{out}");
}

#[test]
fn convert_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "convert".into(),
                "/nonexistent/file.pt".into(),
                out.to_str().unwrap().into(),
            ],
            "/nonexistent/file.pt",
        ),
        (
            vec![
                "convert".into(),
                fixture("classifier/discriminator.pt").to_str().unwrap().into(),
                dir.path().join("x.txt").to_str().unwrap().into(),
            ],
            "use .safetensors or .pt",
        ),
        (
            vec![
                "convert".into(),
                fixture("dataset/real_data.npz").to_str().unwrap().into(),
                out.to_str().unwrap().into(),
            ],
            "real_data.npz",
        ),
        (
            vec![
                "convert".into(),
                fixture("classifier/discriminator.pt").to_str().unwrap().into(),
                out.to_str().unwrap().into(),
                "--key".into(),
                "ema".into(),
            ],
            "--key applies to EDM snapshots",
        ),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = tiw(&a);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        println!("{}", err.trim());
    }
    assert!(!out.exists(), "no partial output on failure");
}

#[test]
fn doctor_runs_without_ld_library_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_tiw"))
        .arg("doctor")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("libtorch threads"), "{text}");
}
