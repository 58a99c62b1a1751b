//! Conditional discriminator training (DG's `train.py --cond 1`): labelled reference and
//! generated images (npz `label`/`labels`, dataset.json, class folders), the conditional
//! discriminator built and trained, checkpoints whose state_dict keys and shapes are the
//! layout DG's and TIW-DSM's code load (the fixture `classifier/discriminator_cond_legacy.pt`;
//! a fresh one: DG's `load_discriminator(condition=True)`), loaded back by `tiw` for guidance.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tolerances::TOL_CLASSIFIER;
use common::{arr, fixture, ok, read_npz, s};
use tch::{Device, Kind, Tensor};
use tiw::npz::{Array, Data};
use tiw::train::classifier::data::load_labelled;
use tiw_models::guidance::{Discriminator, GuidanceOpts};
use tiw_models::tch_ops::TchOps;

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw-full"))
}

/// `(name, shape)` of every tensor of a checkpoint, in file order.
fn layout(p: &Path) -> Vec<(String, Vec<usize>)> {
    let (store, _) = tiw_models::load::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    store
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect()
}

/// `n` random 16×16 RGB images as uint8 NHWC.
fn pixels(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n * 16 * 16 * 3)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 24) as u8
        })
        .collect()
}

/// An npz with `samples` (n, 16, 16, 3) and int64 `label`.
fn labelled_npz(path: &Path, labels: &[i64]) {
    let n = labels.len();
    tiw::npz::write(
        path,
        &[
            Array {
                name: "samples".into(),
                shape: vec![n, 16, 16, 3],
                data: Data::U8(pixels(n, 7)),
            },
            Array {
                name: "label".into(),
                shape: vec![n],
                data: Data::I64(labels.to_vec()),
            },
        ],
    )
    .unwrap();
}

/// Class folders `dir/<class>/imgN.png`.
fn class_folders(dir: &Path, classes: &[&str], per: usize) {
    for (k, c) in classes.iter().enumerate() {
        std::fs::create_dir_all(dir.join(c)).unwrap();
        let px = pixels(per, k as u32 + 1);
        for i in 0..per {
            let img = image::RgbImage::from_raw(16, 16, px[i * 768..(i + 1) * 768].to_vec()).unwrap();
            img.save(dir.join(c).join(format!("img{i}.png"))).unwrap();
        }
    }
}

#[test]
fn labels_come_from_npz_dataset_json_and_class_folders() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ints.npz");
    labelled_npz(&p, &[3, 0, 9, 9]);
    assert_eq!(load_labelled(&p).unwrap().labels.unwrap(), vec![3, 0, 9, 9]);
    // DG's generated files: one-hot float `label`
    let fake = load_labelled(&fixture("dataset/fake_data.npz")).unwrap();
    let want: Vec<usize> = arr(&read_npz(&fixture("dataset/fake_data.npz")), "label")
        .to_f32()
        .chunks(10)
        .map(|r| r.iter().position(|&v| v == 1.0).unwrap())
        .collect();
    assert_eq!(fake.labels.unwrap(), want);
    // EDM dataset zip with dataset.json
    let z = load_labelled(&fixture("dataset/dataset.zip")).unwrap();
    let src = arr(&read_npz(&fixture("dataset/dataset_items.npz")), "source_labels").to_i64();
    assert_eq!(
        z.labels.unwrap(),
        src.iter().map(|&l| l as usize).collect::<Vec<_>>()
    );
    // class folders: numeric names are the classes, other names numbered in sorted order
    let num = d.path().join("num");
    class_folders(&num, &["7", "2"], 2);
    assert_eq!(load_labelled(&num).unwrap().labels.unwrap(), vec![2, 2, 7, 7]);
    let named = d.path().join("named");
    class_folders(&named, &["dog", "cat"], 1);
    assert_eq!(load_labelled(&named).unwrap().labels.unwrap(), vec![0, 1]);
    // no labels anywhere: an error naming the file
    let err = load_labelled(&fixture("dataset/real_data.npz"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("real_data.npz") && err.contains("label"), "{err}");
    let bad = d.path().join("bad.npz");
    tiw::npz::write(
        &bad,
        &[
            Array {
                name: "samples".into(),
                shape: vec![2, 16, 16, 3],
                data: Data::U8(pixels(2, 1)),
            },
            Array {
                name: "labels".into(),
                shape: vec![2],
                data: Data::F64(vec![1.5, -1.0]),
            },
        ],
    )
    .unwrap();
    let err = load_labelled(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.npz") && err.contains("not a class index"),
        "{err}"
    );
}

fn train_args(r: &Path, b: &Path, savedir: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train-classifier",
        "--ref",
        &s(r),
        "--bias",
        &s(b),
        "--extractor",
        &s(&fixture("classifier/feature_extractor.pt")),
        "--savedir",
        &s(savedir),
        "--img-resolution",
        "16",
        "--batch-size",
        "2",
        "--real-mul",
        "1",
        "--iter",
        "2",
        "--save-every",
        "1",
        "--cond",
        "1",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

/// The values of a tensor as f32.
fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

fn tensor(a: &common::NpzArray) -> Tensor {
    let shape: Vec<i64> = a.shape.iter().map(|&d| d as i64).collect();
    Tensor::from_slice(&a.to_f32()).reshape(shape)
}

/// DG's conditional guidance (`guidance_cond.npz`) through the discriminator in `path`.
fn guidance_err(path: &Path) -> f64 {
    let o = TchOps::new(Device::Cpu);
    let fe = tiw_models::load::encoder(&o, &fixture("classifier/feature_extractor.pt"), None).unwrap();
    let dis = tiw_models::load::encoder(&o, path, None).unwrap();
    let f = read_npz(&fixture("classifier/guidance_cond.npz"));
    let labels = arr(&f, "class_labels").to_i64();
    let mut c = vec![0f32; labels.len() * 1000];
    for (i, &l) in labels.iter().enumerate() {
        c[i * 1000 + l as usize] = 1.0;
    }
    let c = Tensor::from_slice(&c).reshape([labels.len() as i64, 1000]);
    let g = Discriminator {
        ops: o,
        extractor: &fe,
        discriminator: &dis,
    };
    let opts = GuidanceOpts {
        img_resolution: 32,
        time_min: 1e-5,
        time_max: 1.0,
    };
    let r = g
        .grad_log_ratio(
            &tensor(arr(&f, "unnormalized_input")),
            &tensor(arr(&f, "std_wve_t")),
            &opts,
            Some(&c),
        )
        .unwrap();
    let e1 = tiw::parity::norm_err(&values(&r.grad), &arr(&f, "grad_log_ratio").to_f32());
    let e2 = tiw::parity::norm_err(&values(&r.log_ratio), &arr(&f, "log_ratio").to_f32());
    e1.max(e2)
}

/// A tiny conditional run from the fixture's conditional discriminator: every checkpoint
/// has exactly its keys and shapes; with learning rate 0 the written checkpoint reproduces
/// DG's conditional guidance fixture through `tiw`'s loader; with the default rate the
/// weights move and stay finite; torch.load(weights_only=True) reads it (full-torch venv).
#[test]
fn conditional_run_writes_the_fixture_layout_and_loads_for_guidance() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    class_folders(&real, &["1", "4"], 2); // reference: class folders
    let fake = fixture("dataset/fake_data.npz"); // generated: one-hot `label`
    let init = fixture("classifier/discriminator_cond_legacy.pt");
    let want = layout(&init);
    // lr 0: the weights stay the fixture's, so the guidance must equal DG's
    let still = d.path().join("still");
    ok(
        tiw()
            .args(train_args(
                &real,
                &fake,
                &still,
                &["--init", &s(&init), "--lr", "0"],
            ))
            .output()
            .unwrap(),
        "conditional run, lr 0",
    );
    let cp: PathBuf = still.join("discriminator_2.pt");
    assert_eq!(layout(&cp), want, "keys/shapes differ from the fixture's");
    let err = guidance_err(&cp);
    println!("conditional guidance through the written checkpoint: norm_err {err:.2e}");
    assert!(err <= TOL_CLASSIFIER, "{err}");
    // the default rate: trained, same layout, different values
    let moved = d.path().join("moved");
    let log = ok(
        tiw()
            .args(train_args(&real, &fake, &moved, &["--init", &s(&init)]))
            .output()
            .unwrap(),
        "conditional run",
    );
    println!("{log}");
    let cp2 = moved.join("discriminator_2.pt");
    assert_eq!(layout(&cp2), want);
    let (a, _) = tiw_models::load::read(&cp2).unwrap();
    let (b, _) = tiw_models::load::read(&init).unwrap();
    let emb = |st: &tiw_converters::TensorStore| {
        let e = st.get("label_emb.weight").unwrap();
        tiw_models::vb::to_f32(e.dtype, &st.bytes(e)).unwrap()
    };
    let (ea, eb) = (emb(&a), emb(&b));
    // Adam with weight decay moves every row (the decay term reaches unused rows too, as in
    // torch.optim.Adam on an nn.Embedding); the values stay finite
    assert!(ea.iter().all(|v| v.is_finite()) && ea != eb);
    if let Some(py) = torch_py() {
        let script = "import sys, torch\n\
            a = torch.load(sys.argv[1], weights_only=True)\n\
            b = torch.load(sys.argv[2], weights_only=True)\n\
            assert list(a) == list(b), (list(a), list(b))\n\
            assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)\n\
            print('torch.load ok:', len(a), 'tensors')\n";
        let out = Command::new(py)
            .args(["-c", script, &s(&cp2), &s(&init)])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        assert!(out.status.success(), "{text}");
    }
}

/// A fresh conditional discriminator has DG's `load_discriminator(condition=True)` layout:
/// the unconditional layout plus `label_emb.weight` (1000 × time-embedding width); the
/// switch and the checkpoint must agree.
#[test]
fn fresh_conditional_discriminator_has_dgs_layout() {
    let d = tempfile::tempdir().unwrap();
    let r = d.path().join("r.npz");
    labelled_npz(&r, &[0, 1, 2, 3]);
    let fake = fixture("dataset/fake_data.npz");
    let cond = d.path().join("cond");
    ok(
        tiw().args(train_args(&r, &fake, &cond, &[])).output().unwrap(),
        "fresh conditional run",
    );
    let uncond = d.path().join("uncond");
    let mut a = train_args(&r, &fake, &uncond, &[]);
    let k = a.iter().position(|x| x == "--cond").unwrap();
    a[k + 1] = "0".into();
    ok(tiw().args(&a).output().unwrap(), "unconditional run");
    let (lc, lu) = (
        layout(&cond.join("discriminator_1.pt")),
        layout(&uncond.join("discriminator_1.pt")),
    );
    let emb = lc
        .iter()
        .find(|(n, _)| n == "label_emb.weight")
        .expect("no label_emb");
    let te = lc.iter().find(|(n, _)| n == "time_embed.2.weight").unwrap();
    assert_eq!(emb.1, vec![1000, te.1[0]]);
    let rest: Vec<_> = lc
        .iter()
        .filter(|(n, _)| n != "label_emb.weight")
        .cloned()
        .collect();
    assert_eq!(rest, lu);
    // DG's full-size discriminator listing (channel 512): the same names in the same order,
    // the same shapes but for the input convolution's channels
    let listing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("keys/discriminator_in512.json")).unwrap())
            .unwrap();
    let dg: Vec<(String, Vec<usize>)> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shape = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            (e["name"].as_str().unwrap().to_string(), shape)
        })
        .collect();
    assert_eq!(rest.len(), dg.len());
    for ((n, sh), (dn, dsh)) in rest.iter().zip(&dg) {
        assert_eq!(n, dn);
        if n != "input_blocks.0.0.weight" {
            assert_eq!(sh, dsh, "{n}");
        }
    }
    // the switch must match the checkpoint
    let a = train_args(
        &r,
        &fake,
        &d.path().join("x"),
        &["--init", &s(&fixture("classifier/discriminator.pt"))],
    );
    let out = tiw().args(&a).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unconditional discriminator"),
        "{err}"
    );
    // classes beyond label_emb are refused, naming the file
    let big = d.path().join("big.npz");
    labelled_npz(&big, &[0, 1, 2, 1000]);
    let out = tiw()
        .args(train_args(&big, &fake, &d.path().join("y"), &[]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("big.npz") && err.contains("1000"),
        "{err}"
    );
}

/// The full-torch Python of `make test` (TIW_TORCH_CHECK=1), or `None` with a SKIPPED line.
fn torch_py() -> Option<String> {
    let py = std::env::var("TIW_TORCH_PY").ok();
    if py.is_none() {
        println!("SKIPPED: TIW_TORCH_PY is not set (torch.load check; run with TIW_TORCH_CHECK=1)");
    }
    py
}
