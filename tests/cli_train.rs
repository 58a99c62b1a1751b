//! `tiw train` from the command line: a run on the fixture dataset.zip, killed (SIGKILL)
//! after its second training state and resumed, ends bit-identical to an uninterrupted run;
//! the snapshot is sampled by `tiw generate`; bad output folders give clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use common::runs::TinyRun;

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw-full"))
}

/// The shared tiny EDM run (13 steps: 6 ticks of 2 steps + tick 0) in exactly `run_dir`.
fn train_args(run_dir: &Path) -> Vec<String> {
    TinyRun::train_in_run_dir(run_dir).args()
}

fn states(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| {
        let n = p.file_name().unwrap().to_str().unwrap();
        n.starts_with("training-state-") && n.ends_with(".safetensors")
    });
    v.sort();
    v
}

fn newest_snapshot(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("network-snapshot-")
        })
        .collect();
    v.sort();
    v.pop().expect("no snapshot")
}

fn tensors(p: &Path) -> Vec<(String, Vec<u8>)> {
    let (store, _) = tiw_models::load::read(p).unwrap();
    store
        .entries()
        .iter()
        .map(|e| (e.name.clone(), store.bytes(e).into_owned()))
        .collect()
}

#[test]
fn killed_run_resumes_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let straight = dir.path().join("straight");
    let out = tiw().args(train_args(&straight)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(straight.join("log.txt")).unwrap();
    assert!(log.contains("Done at 0.1 kimg"), "{log}");
    // states are named by kimg (official naming), so this short run rewrites one file
    assert_eq!(states(&straight).len(), 1);

    // the same run, killed with SIGKILL once tick 2's training state is written (states are
    // written after a tick's log line, so the line of tick 3 means tick 2's state exists)
    let killed = dir.path().join("killed");
    let mut child = tiw()
        .args(train_args(&killed))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut killed_early = false;
    loop {
        let log = std::fs::read_to_string(killed.join("log.txt")).unwrap_or_default();
        if log.contains("\ntick 3 ") {
            killed_early = child.try_wait().unwrap().is_none();
            let _ = child.kill();
            break;
        }
        if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(300) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    println!(
        "killed before the end: {killed_early}; states then: {:?}",
        states(&killed)
    );
    // no temporary files are mistaken for states, and every state present is complete
    for s in states(&killed) {
        tiw::train::checkpoint::read_state(&s, tch::Device::Cpu).unwrap();
    }
    // resume the directory
    let mut args = train_args(&killed);
    let i = args.iter().position(|a| a == "--run-dir").unwrap();
    args.drain(i..i + 2);
    args.extend(["--resume".to_string(), killed.to_str().unwrap().to_string()]);
    // a different --seed on resume is overridden by the state's seed
    let i = args.iter().position(|a| a == "--seed").unwrap();
    args[i + 1] = "99".into();
    let out = tiw().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(killed.join("log.txt")).unwrap();
    assert!(log.contains("resuming from"), "{log}");
    assert!(log.contains("state's seed 3"), "{log}");
    let a = tensors(&newest_snapshot(&straight));
    let b = tensors(&newest_snapshot(&killed));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na}: resumed run differs from the uninterrupted one");
    }
    println!("{} tensors bit-identical after kill + resume", a.len());

    // the snapshot samples with tiw generate (tch runtime; ort is covered elsewhere)
    let imgs = dir.path().join("imgs");
    let out = tiw()
        .args(["generate", "--network"])
        .arg(newest_snapshot(&straight))
        .args(["--outdir"])
        .arg(&imgs)
        .args(["--seeds", "0-3", "--steps", "4", "--runtime", "tch"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(imgs.join("000003.png").is_file());
}

#[test]
fn unwritable_outdir_and_missing_data_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let mut args = train_args(&file.join("run"));
    let out = tiw().args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run directory"), "{err}");
    let i = args.iter().position(|a| a == "--data").unwrap();
    args[i + 1] = dir.path().join("nope.zip").to_str().unwrap().to_string();
    let out = tiw().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nope.zip"), "{err}");
    // TIW without its networks
    let mut args = train_args(&dir.path().join("r"));
    let i = args.iter().position(|a| a == "edm").unwrap();
    args[i] = "tiw_edm".into();
    let out = tiw().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--extractor"), "{err}");
}

/// The whole TIW pipeline from the command line on the fixture data: `train-classifier` on
/// `dataset/real_data.npz` vs `dataset/fake_data.npz` with the fixture extractor, then
/// `train --precond tiw_edm` (corrected mode) on those 16 images as an EDM dataset.zip with
/// the trained discriminator, then `generate` from the snapshot on ONNX Runtime.
#[test]
fn discriminator_then_tiw_dsm_then_samples() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = tiw().args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "tiw {args:?}:\n{text}");
        text
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let disc = d.join("disc");
    let classifier = TinyRun::classifier(&disc, 6).set("--save-every", "5").args();
    run(&classifier.iter().map(String::as_str).collect::<Vec<_>>());
    let dis = disc.join("discriminator_6.pt");
    assert!(dis.is_file());
    // observed data = reference ∪ biased, written as an EDM dataset.zip
    let mut images = Vec::new();
    let mut n = 0;
    for f in ["dataset/real_data.npz", "dataset/fake_data.npz"] {
        let set = tiw::data::samples_npz::SamplesDataset::open(&fixture(f)).unwrap();
        for i in 0..set.len() {
            images.extend(set.image_hwc(i).unwrap());
        }
        n += set.len();
    }
    let zip = d.join("observed.zip");
    tiw::data::writer::write_dataset_zip(&zip, &images, n, 16, 16, 3, None).unwrap();
    let run_dir = d.join("run");
    let log = run(&[
        "train",
        "--data",
        &s(&zip),
        "--outdir",
        &s(d),
        "--run-dir",
        &s(&run_dir),
        "--precond",
        "tiw_edm",
        "--tiw-mode",
        "corrected",
        "--extractor",
        &s(&fixture("classifier/feature_extractor.pt")),
        "--discriminator",
        &s(&dis),
        "--cbase",
        "16",
        "--cres",
        "1,2",
        "--num-blocks",
        "1",
        "--attn",
        "none",
        "--batch",
        "8",
        "--duration",
        "0.00016",
        "--tick",
        "0.04",
        "--lr-rampup",
        "0.01",
        "--threads",
        "2",
    ]);
    assert!(log.contains("Done at 0.2 kimg"), "{log}");
    let losses: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split(" loss ").nth(1))
        .map(|x| x.trim().parse().unwrap())
        .collect();
    println!("TIW-DSM tick losses: {losses:?}");
    assert!(losses.len() >= 4 && losses.iter().all(|l| l.is_finite()));
    assert!(
        losses.last().unwrap() < losses.first().unwrap(),
        "loss did not decrease: {losses:?}"
    );
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("training_options.json")).unwrap())
            .unwrap();
    assert_eq!(opts["tiw_weighting"], "per-sample");
    assert_eq!(opts["tiw_correction"], "derived");
    let snap = newest_snapshot(&run_dir);
    let imgs = d.join("imgs");
    run(&[
        "generate",
        "--network",
        &s(&snap),
        "--outdir",
        &s(&imgs),
        "--seeds",
        "0-7",
        "--steps",
        "6",
        "--runtime",
        "ort",
        "--quiet",
    ]);
    assert!(imgs.join("000007.png").is_file());
}
