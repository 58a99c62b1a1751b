//! Python-side checks with the full-torch venv that `make test` sets up (`TIW_TORCH_PY`
//! points at it): our writers checked by the real readers (`torch.load(weights_only=True)`
//! for `.pt`, the `safetensors` package for `.safetensors`), and the benchmarks' PyTorch
//! eager baseline (`benches/pytorch_baseline.py`) checked against the official outputs.

mod common;

use std::process::Command;

use common::fixture;
use tiw_converters::{convert, Selection};

/// The full-torch Python, or `None` (with a SKIPPED line) outside `make test`.
fn torch_python() -> Option<String> {
    let py = std::env::var("TIW_TORCH_PY").ok();
    if py.is_none() {
        println!(
            "SKIPPED: TIW_TORCH_PY is not set (run through `make test`, which provides a full-torch venv)"
        );
    }
    py
}

/// Runs `cmd`, prints its output under `what`, and fails the test if it failed.
fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.output().expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{what}: {text}");
    assert!(out.status.success(), "{what}: python check failed:\n{text}");
}

#[test]
fn torch_and_safetensors_load_our_output() {
    let Some(py) = torch_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for net in ["edm_ddpmpp_r16_uncond", "edm_adm_r16_uncond"] {
        let src = fixture(&format!("nets/{net}/network-snapshot-000000.pkl"));
        let st = dir.path().join(format!("{net}.safetensors"));
        let pt = dir.path().join(format!("{net}.pt"));
        convert::convert_file(&src, &st, &Selection::default(), &|_, _| {}).unwrap();
        convert::convert_file(&st, &pt, &Selection::default(), &|_, _| {}).unwrap();
        run_checked(
            Command::new(&py)
                .arg(fixture("../py/check_torch_load.py"))
                .arg(&pt)
                .arg(&st)
                .arg(fixture(&format!("nets/{net}/state_dict.npz"))),
            net,
        );
    }
}

/// The same-run PyTorch baseline the benchmarks compare against must compute what the
/// official code computes: its DDPM++, ADM extractor/discriminator, weight correction and
/// TIW-EDM loss against the fixtures (the script prints the worst error per tensor).
#[test]
fn pytorch_baseline_reproduces_the_official_outputs() {
    let Some(py) = torch_python() else {
        return;
    };
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pytorch_baseline.py");
    run_checked(
        Command::new(&py)
            .arg(script)
            .args(["--threads", "1", "selfcheck", "--fixtures"])
            .arg(fixture(""))
            // the fixtures were made with MKL's non-FMA SGEMM path (see the Makefile's test target)
            .env(
                "MKL_CBWR",
                std::env::var("MKL_CBWR").unwrap_or_else(|_| "COMPATIBLE".into()),
            ),
        "pytorch baseline selfcheck",
    );
}
