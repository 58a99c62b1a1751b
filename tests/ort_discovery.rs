//! The binaries find ONNX Runtime without the setup shell: the library path of the build's
//! setup is compiled in (build.rs), `ORT_DYLIB_PATH` at run time overrides it, and a missing
//! file is one clear error naming both. Help and usage name the command `tiw`.

mod common;

use std::process::Command;

use common::tolerances::TOL_VS_FIXTURE;
use common::{arr, fixture, read_npz};
use tiw::parity::norm_err;

/// Runs `bin` with `args`, ORT_DYLIB_PATH removed (`None`) or set; (success, stdout, stderr).
fn run(bin: &str, args: &[&str], ort: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(bin);
    c.args(args).env_remove("ORT_DYLIB_PATH");
    if let Some(p) = ort {
        c.env("ORT_DYLIB_PATH", p);
    }
    let out = c.output().expect("run tiw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn forward_on_ort_works_without_ort_dylib_path() {
    let dir = tempfile::tempdir().unwrap();
    let net = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let inputs = fixture("nets/vp_ddpmpp_r8_uncond/forward.npz");
    let out = dir.path().join("out.npz");
    let args = [
        "forward",
        "--network",
        net.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--runtime",
        "ort",
    ];
    let (ok, _, err) = run(env!("CARGO_BIN_EXE_tiw"), &args, None);
    assert!(ok, "tiw forward --runtime ort without ORT_DYLIB_PATH: {err}");
    let ours = read_npz(&out);
    let want = read_npz(&inputs);
    let e = norm_err(&arr(&ours, "D").to_f32(), &arr(&want, "D").to_f32());
    println!("ort (build-time library) D vs fixture: {e:.2e} (tolerance {TOL_VS_FIXTURE:.0e})");
    assert!(e <= TOL_VS_FIXTURE);

    // a run-time ORT_DYLIB_PATH overrides the default: a missing file is an error naming both
    let (ok, _, err) = run(
        env!("CARGO_BIN_EXE_tiw"),
        &args,
        Some("/nonexistent/libonnxruntime.so"),
    );
    println!("{err}");
    assert!(!ok);
    assert!(
        err.contains("ORT_DYLIB_PATH=/nonexistent/libonnxruntime.so") && err.contains("build-time default"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn doctor_lists_loadable_providers_without_ort_dylib_path() {
    let (ok, out, err) = run(env!("CARGO_BIN_EXE_tiw"), &["doctor"], None);
    println!("{out}{err}");
    assert!(ok, "{err}");
    assert!(out.contains("from build-time default"), "{out}");
    assert!(out.contains("ort execution provider CPU: loadable"), "{out}");
    // this machine has no GPU: CUDA must be reported, not loadable, with the versions "not found"
    // or found (a GPU machine); either way the line is there
    assert!(out.contains("ort execution provider CUDA:"), "{out}");
    assert!(out.contains("cuDNN (libtorch): "), "{out}");
}

#[test]
fn help_names_the_command_tiw() {
    for bin in [env!("CARGO_BIN_EXE_tiw"), env!("CARGO_BIN_EXE_tiw-full")] {
        for args in [&["--help"][..], &["forward", "--help"][..]] {
            let (ok, out, err) = run(bin, args, None);
            assert!(ok, "{bin} {args:?}: {err}");
            assert!(out.contains("Usage: tiw "), "{bin} {args:?}: {out}");
            assert!(!out.contains("tiw-full"), "{bin} {args:?}: {out}");
        }
    }
}
