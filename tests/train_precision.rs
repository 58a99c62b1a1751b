//! train.py's precision flags: `--fp16`, `--ls`, `--bench` (and the `--tf32` extension) are
//! recorded in `training_options.json` and the run-directory name as train.py records them;
//! on the CPU `--fp16 1` runs the f32 path exactly as the official code does (f16 only on
//! CUDA), so its weights equal an `--fp16 0` run bit for bit.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture;

fn train(outdir: &Path, extra: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_tiw"))
        .args([
            "train",
            "--data",
            fixture("dataset/dataset.zip").to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
            "--precond",
            "edm",
            "--cbase",
            "16",
            "--cres",
            "1",
            "--num-blocks",
            "1",
            "--attn",
            "none",
            "--batch",
            "4",
            "--duration",
            "0.001",
            "--stop-kimg",
            "0.008",
            "--augment",
            "0",
            "--dropout",
            "0",
            "--threads",
            "1",
            "--quiet",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn run_dir(outdir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(outdir).unwrap().next().unwrap().unwrap().path()
}

#[test]
fn precision_flags_are_recorded_and_fp16_is_f32_on_the_cpu() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    train(&a, &["--fp16", "1", "--ls", "1", "--bench", "0", "--tf32"]);
    train(&b, &["--fp16", "0"]);
    let (ra, rb) = (run_dir(&a), run_dir(&b));
    let name = ra.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("-gpus1-batch4-fp16"), "{name}");
    assert!(rb.file_name().unwrap().to_string_lossy().ends_with("-fp32"));
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ra.join("training_options.json")).unwrap()).unwrap();
    assert_eq!(opts["network_kwargs"]["use_fp16"], true);
    assert_eq!(opts["loss_scaling"], 1.0);
    assert_eq!(opts["cudnn_benchmark"], false);
    assert_eq!(opts["allow_tf32"], true);
    let state = |r: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(r)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains("training-state-"))
            .collect();
        v.sort();
        let (store, _) = tiw_models::load::read(v.last().unwrap()).unwrap();
        store
            .entries()
            .iter()
            .map(|e| (e.name.clone(), store.bytes(e).into_owned()))
            .collect::<Vec<_>>()
    };
    assert!(state(&ra) == state(&rb), "--fp16 1 on the CPU differs from f32");
    println!("--fp16 1 on the CPU: every tensor bit-identical to --fp16 0");
}
