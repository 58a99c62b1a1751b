//! Data-parallel training on PyTorch's c10d (Gloo on 127.0.0.1), launched by `tiw launch`
//! and by the real `torchrun --no-python`: a run on 2 ranks equals a 1-process run with
//! the same global batch (`--batch-gpu` = the per-rank batch) up to float summation order —
//! every weight, EMA and Adam moment; the same for `train-classifier`; a 2-rank run killed
//! (SIGKILL to one rank) resumes on 1 and on 2 ranks; a batch that does not split over the
//! ranks is a clear error.
//!
//! Dropout is 0 (its masks are drawn per rank and round); augmentation is on.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::runs::TinyRun;
use common::tolerances::TOL_WORLD;
use common::{fixture, ok, s};

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw"))
}

fn launch(n: usize) -> Command {
    let mut c = tiw();
    c.args(["launch", "--nproc-per-node", &n.to_string(), "--"]);
    c
}

/// The shared tiny EDM run in exactly `run_dir`, global batch 4 with no `--batch-gpu`,
/// dropout 0, stopping after `steps` steps (`--stop-kimg`) of a 250-step schedule, then `extra`.
fn edm_args(run_dir: &Path, steps: usize, extra: &[&str]) -> Vec<String> {
    TinyRun::train_in_run_dir(run_dir)
        .without("--batch-gpu")
        .set("--duration", "0.001")
        .set("--stop-kimg", &format!("{}", steps as f64 * 4.0 / 1000.0))
        .set("--dropout", "0")
        .set("--dist-timeout", "60")
        .args_with(extra)
}

fn newest(dir: &Path, prefix: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap().to_str().unwrap();
            n.starts_with(prefix) && n.ends_with(".safetensors")
        })
        .collect();
    v.sort();
    v.pop()
        .unwrap_or_else(|| panic!("no {prefix}* in {}", dir.display()))
}

/// Every tensor of a safetensors file as f32 values, by name.
fn tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let (store, _) = tiw_models::load::read(p).unwrap();
    store
        .entries()
        .iter()
        .map(|e| {
            let b = store.bytes(e);
            let v = b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (e.name.clone(), v)
        })
        .collect()
}

/// Worst [`tiw::parity::norm_err`] over the tensors of two files (same names required).
fn worst(a: &Path, b: &Path) -> (f64, String) {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len(), "{} vs {}", a.display(), b.display());
    let mut w = (0.0f64, String::new());
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let e = tiw::parity::norm_err(va, vb);
        if e > w.0 {
            w = (e, na.clone());
        }
    }
    w
}

fn assert_close(a: &Path, b: &Path, what: &str) {
    let (e, name) = worst(a, b);
    println!("{what}: worst normalised difference {e:.3e} ({name}), tolerance {TOL_WORLD:e}");
    assert!(e <= TOL_WORLD, "{what}: {name} differs by {e:.3e}");
}

/// One process with 2 rounds of 2 vs 2 ranks with one round of 2, `steps` steps.
fn one_vs_two(d: &Path, steps: usize, extra: &[&str], what: &str) {
    let (one, two) = (d.join("one"), d.join("two"));
    let mut a = edm_args(&one, steps, extra);
    a.extend(["--batch-gpu".into(), "2".into()]);
    ok(tiw().args(&a).output().unwrap(), "1 process");
    let err = ok(
        launch(2).args(edm_args(&two, steps, extra)).output().unwrap(),
        "2 ranks",
    );
    let log = std::fs::read_to_string(two.join("log.txt")).unwrap();
    assert!(log.contains("on 2 rank(s)"), "{log}\n{err}");
    assert_close(
        &newest(&two, "training-state-"),
        &newest(&one, "training-state-"),
        &format!("{what}: state (net, EMA, Adam moments)"),
    );
    assert_close(
        &newest(&two, "network-snapshot-"),
        &newest(&one, "network-snapshot-"),
        &format!("{what}: snapshot"),
    );
}

#[test]
fn two_ranks_equal_one_process() {
    let d = tempfile::tempdir().unwrap();
    one_vs_two(d.path(), 4, &[], "EDM, 4 steps");
}

#[test]
fn two_ranks_equal_one_process_across_epochs() {
    // 12 steps × 4 images = 48: past two epochs of the 20-image dataset
    let d = tempfile::tempdir().unwrap();
    one_vs_two(d.path(), 12, &[], "EDM, 12 steps");
}

/// The official per-rank sampler copies (`--sampler-split rank`) run on 2 ranks; their
/// data order depends on the world size, so only completion and consistency are checked
/// (the snapshot's cross-rank check would stop a run whose ranks disagree).
#[test]
fn official_rank_split_runs() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("rank");
    ok(
        launch(2)
            .args(edm_args(&run, 4, &["--sampler-split", "rank"]))
            .output()
            .unwrap(),
        "2 ranks, rank split",
    );
    let opts = std::fs::read_to_string(run.join("training_options.json")).unwrap();
    assert!(opts.contains("\"sampler_split\": \"rank\""), "{opts}");
    assert!(opts.contains("\"world_size\": 2"), "{opts}");
}

#[test]
fn torchrun_launches_tiw() {
    let Some(py) = std::env::var_os("TIW_TORCH_PY") else {
        println!("SKIPPED: TIW_TORCH_PY is not set (the full-torch venv has torchrun)");
        return;
    };
    let torchrun = Path::new(&py).with_file_name("torchrun");
    if !torchrun.is_file() {
        println!("SKIPPED: no torchrun beside {}", Path::new(&py).display());
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    let mut a = edm_args(&one, 4, &[]);
    a.extend(["--batch-gpu".into(), "2".into()]);
    ok(tiw().args(&a).output().unwrap(), "1 process");
    let out = Command::new(&torchrun)
        .args(["--no-python", "--standalone", "--nproc-per-node", "2"])
        .arg(env!("CARGO_BIN_EXE_tiw"))
        .args(edm_args(&two, 4, &[]))
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    ok(out, "torchrun --no-python tiw train");
    assert_close(
        &newest(&two, "training-state-"),
        &newest(&one, "training-state-"),
        "torchrun 2 ranks vs 1 process",
    );
}

/// The TIW pipeline's score model on 2 ranks vs 1 process, corrected and official mode:
/// 16×16 images from the fixture npz files, the fixture extractor and discriminator. In
/// official mode every sample of a call is weighted by Σ 2d over that call (SPEC §9.2); a
/// rank's call is its own per-rank batch, which is a round of the 1-process run here, so the
/// runs agree only if each rank's weight factor is the sum over its own batch.
#[test]
fn tiw_two_ranks_equal_one_process() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
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
    for mode in ["corrected", "official"] {
        let args = |run: &Path| -> Vec<String> {
            let mut a = edm_args(run, 3, &[]);
            let i = a.iter().position(|x| x == "--data").unwrap();
            a[i + 1] = s(&zip);
            let i = a.iter().position(|x| x == "edm").unwrap();
            a[i] = "tiw_edm".into();
            a.extend(
                [
                    "--tiw-mode",
                    mode,
                    "--extractor",
                    &s(&fixture("classifier/feature_extractor.pt")),
                    "--discriminator",
                    &s(&fixture("classifier/discriminator.pt")),
                ]
                .iter()
                .map(|x| x.to_string()),
            );
            a
        };
        let (one, two) = (d.join(format!("one-{mode}")), d.join(format!("two-{mode}")));
        let mut a = args(&one);
        a.extend(["--batch-gpu".into(), "2".into()]);
        ok(tiw().args(&a).output().unwrap(), "TIW 1 process");
        ok(launch(2).args(args(&two)).output().unwrap(), "TIW 2 ranks");
        assert_close(
            &newest(&two, "training-state-"),
            &newest(&one, "training-state-"),
            &format!("TIW-DSM {mode}: state"),
        );
    }
}

/// A 2-rank run, one rank SIGKILLed after a training state exists, resumed on 2 ranks and
/// on 1 rank: both reach the uninterrupted run's weights.
#[test]
fn killed_rank_stops_all_and_resumes_on_any_world_size() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let extra: [&str; 0] = [];
    let steps = 24;
    let straight = d.join("straight");
    ok(
        launch(2)
            .args(edm_args(&straight, steps, &extra))
            .output()
            .unwrap(),
        "uninterrupted 2 ranks",
    );
    for (k, world) in [(0, 2usize), (1, 1)] {
        let run = d.join(format!("killed{k}"));
        let mut child = launch(2)
            .args(edm_args(&run, steps, &extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let mut killed = false;
        loop {
            let log = std::fs::read_to_string(run.join("log.txt")).unwrap_or_default();
            if log.contains("\ntick 3 ") {
                // rank 1 is the launcher's second child
                let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
                    .unwrap_or_default();
                if let Some(pid) = kids.split_whitespace().nth(1) {
                    let pid: i32 = pid.parse().unwrap();
                    killed = unsafe { libc::kill(pid, libc::SIGKILL) } == 0;
                }
                break;
            }
            if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(300) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = child.wait().unwrap();
        let t_stop = t0.elapsed();
        println!("run {k}: killed a rank: {killed}; launcher exit {status:?} after {t_stop:?}");
        if killed {
            assert!(!status.success(), "the launcher must fail when a rank is killed");
        }
        // every state present is complete
        let state = newest(&run, "training-state-");
        tiw::train::checkpoint::read_state(&state, tch::Device::Cpu).unwrap();
        let mut a = edm_args(&run, steps, &extra);
        let i = a.iter().position(|x| x == "--run-dir").unwrap();
        a.drain(i..i + 2);
        a.extend(["--resume".into(), s(&run)]);
        let out = if world == 2 {
            launch(2).args(&a).output().unwrap()
        } else {
            a.extend(["--batch-gpu".into(), "2".into()]);
            tiw().args(&a).output().unwrap()
        };
        ok(out, &format!("resume on {world} rank(s)"));
        assert_close(
            &newest(&run, "training-state-"),
            &newest(&straight, "training-state-"),
            &format!("killed, resumed on {world} rank(s)"),
        );
    }
}

/// Two "nodes" on loopback: two `tiw launch --nnodes 2` with one rank each train together
/// and equal the 1-process run.
#[test]
fn two_nodes_equal_one_process() {
    let d = tempfile::tempdir().unwrap();
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    let mut a = edm_args(&one, 4, &[]);
    a.extend(["--batch-gpu".into(), "2".into()]);
    ok(tiw().args(&a).output().unwrap(), "1 process");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let node = |r: &str| {
        let mut c = tiw();
        c.args([
            "launch",
            "--nnodes",
            "2",
            "--node-rank",
            r,
            "--nproc-per-node",
            "1",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            &port,
            "--",
        ])
        .args(edm_args(&two, 4, &[]))
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let (n0, n1) = (node("0"), node("1"));
    let (o0, o1) = (n0.wait_with_output().unwrap(), n1.wait_with_output().unwrap());
    ok(o0, "node 0");
    ok(o1, "node 1");
    assert_close(
        &newest(&two, "training-state-"),
        &newest(&one, "training-state-"),
        "2 nodes × 1 rank vs 1 process",
    );
}

#[test]
fn batch_that_does_not_split_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let mut a = edm_args(&d.path().join("r"), 2, &[]);
    let i = a.iter().position(|x| x == "--batch").unwrap();
    a[i + 1] = "3".into();
    let t0 = Instant::now();
    let out = launch(2).args(&a).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not divisible by the world size 2"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(60), "took {:?}", t0.elapsed());
}

/// `train-classifier` on 2 ranks equals 1 process with the same rows per round (its step of
/// 2×4 rows split into blocks).
#[test]
fn train_classifier_two_ranks_equal_one_process() {
    let d = tempfile::tempdir().unwrap();
    let args = |dir: &Path| -> Vec<String> {
        TinyRun::classifier(dir, 4)
            .set("--save-every", "3")
            .set("--dist-timeout", "60")
            .args()
    };
    let (one, two) = (d.path().join("one"), d.path().join("two"));
    let mut a = args(&one);
    a.extend(["--batch-gpu".into(), "4".into()]);
    ok(
        tiw().args(a).env("OMP_NUM_THREADS", "1").output().unwrap(),
        "1 process",
    );
    ok(launch(2).args(args(&two)).output().unwrap(), "2 ranks");
    let (a, b) = (two.join("discriminator_4.pt"), one.join("discriminator_4.pt"));
    let (e, name) = worst(&a, &b);
    println!("train-classifier 2 ranks vs 1: worst {e:.3e} ({name}), tolerance {TOL_WORLD:e}");
    assert!(e <= TOL_WORLD, "{name}: {e:.3e}");
}
