//! Discriminator training (SPEC §4): one official `train_classifier.main` iteration
//! (`disc_train/`) replayed through our step with the recorded batch and draws, and short
//! `tiw train-classifier` runs (files, loader round trip, stats, bit-exact resume).

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;

use common::tolerances::TOL_DISC_STEP;
use common::{arr, fixture, read_npz, NpzArray};
use tch::{Device, Kind, Tensor};
use tiw::parity::norm_err;
use tiw::train::classifier::step::{forward, train_step, DiscNets};
use tiw::train::loss::Recorded;
use tiw::train::step::Adam;
use tiw_models::tch_ops::TchOps;
use tiw_models::vb::{TensorKind, Weights};

fn t(a: &NpzArray) -> Tensor {
    let shape: Vec<i64> = a.shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&a.to_f32()).reshape(shape.as_slice())
}

fn v(x: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&x.detach().to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

struct Worst(f64, String);

impl Worst {
    fn check(&mut self, what: &str, ours: &[f32], want: &[f32]) {
        let e = norm_err(ours, want);
        if !what.contains(':') {
            println!("  {what:<24} err {e:.2e}");
        }
        assert!(
            e <= TOL_DISC_STEP,
            "{what}: normalised error {e:.3e} > {TOL_DISC_STEP:.0e}"
        );
        if e > self.0 {
            *self = Worst(e, what.to_string());
        }
    }
}

#[test]
fn discriminator_step_matches_official() {
    tch::set_num_threads(2);
    let f = read_npz(&fixture("disc_train/disc_train_step.npz"));
    let fo = TchOps::new(Device::Cpu);
    let fe = tiw_models::load::encoder(&fo, &fixture("classifier/feature_extractor.pt"), None).unwrap();
    let to = TchOps::trainable(Device::Cpu);
    let (store, _) = tiw_models::load::read(&fixture("classifier/discriminator.pt")).unwrap();
    let cfg =
        tiw_models::adm::EncoderConfig::infer(&|n| store.get(n).map(|e| e.shape.clone()), None).unwrap();
    let w = Weights::from_store(&to, &store).unwrap();
    let disc = tiw_models::adm::EncoderUNet::new(&w.root(), &cfg).unwrap();
    let named: Vec<(String, Tensor)> = w
        .named()
        .unwrap()
        .into_iter()
        .filter(|(_, k, _)| *k == TensorKind::Param)
        .map(|(n, _, t)| (n, t.0))
        .collect();
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let nets = DiscNets {
        ops: fo,
        extractor: &fe,
        disc: &disc,
    };
    let x = t(arr(&f, "inputs_scaled"));
    let labels = t(arr(&f, "labels"));
    let b = arr(&f, "batch_size").to_f32()[0] as i64;
    assert_eq!(
        x.size()[0],
        2 * b,
        "the batch holds batch_size ref + batch_size bias images"
    );
    let lr = arr(&f, "lr").to_f64()[0];
    let wd = arr(&f, "weight_decay").to_f64()[0];
    let draws = || Recorded(VecDeque::from([t(arr(&f, "u")), t(arr(&f, "z"))]));
    let mut adam = Adam::new(params.len(), wd);
    let mut worst = Worst(0.0, String::new());
    let out = train_step(&nets, &params, &mut adam, lr, &x, &labels, &mut draws()).unwrap();
    worst.check("t", &v(&out.t), &arr(&f, "t").to_f32());
    worst.check(
        "perturbed_inputs",
        &v(&out.perturbed),
        &arr(&f, "perturbed_inputs").to_f32(),
    );
    worst.check("features", &v(&out.features), &arr(&f, "features").to_f32());
    worst.check(
        "label_prediction",
        &v(&out.prediction),
        &arr(&f, "label_prediction").to_f32(),
    );
    worst.check(
        "bce_loss_before",
        &v(&out.loss),
        &arr(&f, "bce_loss_before").to_f32(),
    );
    let mut n_grads = 0;
    for (name, p) in &named {
        let g = arr(&f, &format!("grad:{name}"));
        worst.check(&format!("grad:{name}"), &v(&p.grad()), &g.to_f32());
        n_grads += 1;
    }
    // the updated weights = the discriminator_1.pt the script saved, read with our loader;
    // compared where the gradient is not structurally zero (fixture README)
    let (after, _) = tiw_models::load::read(&fixture("disc_train/discriminator_1.pt")).unwrap();
    let mut n_after = 0;
    for (name, p) in &named {
        let e = after.get(name).unwrap();
        let want = tiw_models::vb::to_f32(e.dtype, &after.bytes(e)).unwrap();
        let g = v(&p.grad());
        let gmax = g.iter().fold(0f32, |m, x| m.max(x.abs()));
        let ours = v(p);
        let (a, b): (Vec<f32>, Vec<f32>) = (0..ours.len())
            .filter(|&k| g[k].abs() > 1e-6 * gmax)
            .map(|k| (ours[k], want[k]))
            .unzip();
        worst.check(&format!("after:{name}"), &a, &b);
        n_after += a.len();
    }
    // same batch and draws through the updated network
    let again = forward(&nets, &x, &labels, &mut draws()).unwrap();
    worst.check(
        "label_prediction_after",
        &v(&again.prediction),
        &arr(&f, "label_prediction_after").to_f32(),
    );
    worst.check(
        "bce_loss_after",
        &v(&again.loss),
        &arr(&f, "bce_loss_after").to_f32(),
    );
    println!(
        "{n_grads} gradients, {n_after} updated weights, predictions/losses before and after within {TOL_DISC_STEP:.0e}; worst {:.2e} at {}",
        worst.0, worst.1
    );
}

fn train_cli(dir: &Path, iters: u64, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tiw"))
        .arg("train-classifier")
        .arg("--ref")
        .arg(fixture("dataset/real_data.npz"))
        .arg("--bias")
        .arg(fixture("dataset/fake_data.npz"))
        .arg("--extractor")
        .arg(fixture("classifier/feature_extractor.pt"))
        .arg("--savedir")
        .arg(dir)
        .args([
            "--img-resolution",
            "16",
            "--batch-size",
            "3",
            "--real-mul",
            "3",
            "--save-every",
            "2",
        ])
        .args(["--seed", "5", "--iter", &iters.to_string()])
        .args(extra)
        .output()
        .expect("run tiw");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "tiw train-classifier failed:\n{text}");
    text
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let (store, _) = tiw_models::load::read(path).unwrap();
    store
        .entries()
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                tiw_models::vb::to_f32(e.dtype, &store.bytes(e)).unwrap(),
            )
        })
        .collect()
}

#[test]
fn train_classifier_cli_runs_and_resumes_exactly() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    // (a) 4 iterations straight: checkpoints after i = 0 and 2 → discriminator_1.pt, _3.pt
    train_cli(a.path(), 4, &[]);
    for f in [
        "discriminator_1.pt",
        "discriminator_3.pt",
        "training-state.safetensors",
        "stats.jsonl",
    ] {
        assert!(a.path().join(f).exists(), "{f} missing");
    }
    assert!(!a.path().join("discriminator_2.pt").exists());
    // the checkpoint loads with our loader as the official discriminator layout
    let o = TchOps::new(Device::Cpu);
    let d = tiw_models::load::encoder(&o, &a.path().join("discriminator_3.pt"), None).unwrap();
    assert_eq!(
        (
            d.cfg.in_channels,
            d.cfg.image_size,
            d.cfg.out_channels,
            d.cfg.model_channels
        ),
        (128, 8, 1, 128)
    );
    let stats = std::fs::read_to_string(a.path().join("stats.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = stats.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (l, iter) in lines.iter().zip([1, 3]) {
        assert_eq!(l["iter"], iter);
        let bce = l["bce"].as_f64().unwrap();
        let acc = l["accuracy"].as_f64().unwrap();
        assert!(bce.is_finite() && bce > 0.0 && (0.0..=1.0).contains(&acc), "{l}");
    }
    // (b) 2 iterations, then --resume to 4: identical final weights (bit for bit, CPU)
    train_cli(b.path(), 2, &[]);
    train_cli(b.path(), 4, &["--resume"]);
    let final_a = weights(&a.path().join("training-state.safetensors"));
    let final_b = weights(&b.path().join("training-state.safetensors"));
    assert_eq!(final_a.len(), final_b.len());
    for ((na, va), (nb, vb)) in final_a.iter().zip(&final_b) {
        assert_eq!(na, nb);
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{na} differs after resume"
        );
    }
    assert_eq!(
        weights(&a.path().join("discriminator_3.pt")),
        weights(&b.path().join("discriminator_3.pt"))
    );
    assert_eq!(
        std::fs::read_to_string(b.path().join("stats.jsonl")).unwrap(),
        stats,
        "statistics differ after resume"
    );
    println!(
        "4 straight = 2 + resumed 2, bit for bit ({} state tensors); {:.1} s for 3 runs",
        final_a.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn train_classifier_reports_bad_inputs() {
    let d = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tiw"))
            .arg("train-classifier")
            .arg("--ref")
            .arg(fixture("dataset/real_data.npz"))
            .arg("--bias")
            .arg(fixture("dataset/fake_data.npz"))
            .arg("--savedir")
            .arg(d.path())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let fe = fixture("classifier/feature_extractor.pt");
    let fe = fe.to_str().unwrap();
    let e = run(&["--extractor", "/nonexistent/fe.pt", "--img-resolution", "16"]);
    assert!(
        e.contains("/nonexistent/fe.pt") && e.contains("no such file"),
        "{e}"
    );
    let e = run(&["--extractor", fe]);
    assert!(e.contains("16×16") && e.contains("--img-resolution is 32"), "{e}");
    let e = run(&["--extractor", fe, "--img-resolution", "16", "--batch-size", "11"]);
    assert!(e.contains("cannot fill one batch"), "{e}");
    let e = run(&[
        "--extractor",
        fe,
        "--img-resolution",
        "16",
        "--batch-size",
        "3",
        "--resume",
    ]);
    assert!(e.contains("training-state.safetensors"), "{e}");
    let dis = fixture("classifier/discriminator_cond_legacy.pt");
    let e = run(&[
        "--extractor",
        fe,
        "--img-resolution",
        "16",
        "--batch-size",
        "3",
        "--init",
        dis.to_str().unwrap(),
        "--iter",
        "1",
    ]);
    assert!(e.contains("discriminator_cond_legacy.pt"), "{e}");
    println!("bad inputs give one clear error each");
}

/// `--ref/--bias` also take EDM dataset zips: the images equal the dataset reader's (CHW →
/// the `samples` NHWC layout), bit for bit.
#[test]
fn classifier_reads_dataset_zips() {
    let set = tiw::train::classifier::data::load_images(&fixture("dataset/dataset.zip")).unwrap();
    let items = read_npz(&fixture("dataset/dataset_items.npz"));
    let chw = arr(&items, "labels0_xflip0_images");
    let (n, c, h, w) = (chw.shape[0], chw.shape[1], chw.shape[2], chw.shape[3]);
    assert_eq!((set.n, set.c, set.h, set.w), (n, c, h, w));
    let src = &chw.le_bytes();
    let mut nhwc = vec![0u8; src.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                nhwc[(i * h * w + p) * c + ch] = src[(i * c + ch) * h * w + p];
            }
        }
    }
    assert!(
        set.pixels == nhwc,
        "dataset.zip pixels differ from the dataset reader's"
    );
}
