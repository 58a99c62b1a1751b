//! The score-model training loop on a tiny network and an in-memory dataset: files of a run,
//! losses, snapshots loadable by the model loaders, and bit-exact resume on the CPU.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use tch::{Device, Kind, Tensor};
use tiw::train::options::{PrecondChoice, TrainOptions};
use tiw::train::score::{train, IndexStream, TrainData};

/// Random uint8 images (deterministic), optionally labelled.
struct MemData {
    images: Vec<u8>,
    n: usize,
    res: usize,
    labels: Vec<usize>,
    label_dim: usize,
}

impl MemData {
    fn new(n: usize, res: usize, label_dim: usize) -> Self {
        let mut s = 0x1234_5678u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let images = (0..n * 3 * res * res).map(|_| (next() >> 56) as u8).collect();
        let labels = (0..n).map(|i| i % label_dim.max(1)).collect();
        MemData {
            images,
            n,
            res,
            labels,
            label_dim,
        }
    }
}

impl TrainData for MemData {
    fn len(&self) -> usize {
        self.n
    }
    fn resolution(&self) -> usize {
        self.res
    }
    fn channels(&self) -> usize {
        3
    }
    fn label_dim(&self) -> usize {
        self.label_dim
    }
    fn name(&self) -> String {
        "mem".into()
    }
    fn batch(&self, idx: &[usize]) -> anyhow::Result<(Tensor, Tensor)> {
        let per = 3 * self.res * self.res;
        let mut v = Vec::with_capacity(idx.len() * per);
        let mut l = vec![0f32; idx.len() * self.label_dim];
        for (k, &i) in idx.iter().enumerate() {
            v.extend(
                self.images[i * per..(i + 1) * per]
                    .iter()
                    .map(|&p| p as f32 / 127.5 - 1.0),
            );
            if self.label_dim > 0 {
                l[k * self.label_dim + self.labels[i]] = 1.0;
            }
        }
        let r = self.res as i64;
        Ok((
            Tensor::from_slice(&v).reshape([idx.len() as i64, 3, r, r]),
            Tensor::from_slice(&l).reshape([idx.len() as i64, self.label_dim as i64]),
        ))
    }
}

/// A replayable stream: index k of the stream is a hash of k.
struct HashStream {
    n: usize,
    pos: u64,
}

impl IndexStream for HashStream {
    fn next_index(&mut self) -> usize {
        let mut z = self.pos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        self.pos += 1;
        ((z >> 33) % self.n as u64) as usize
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

fn tiny_options(dir: &Path, precond: PrecondChoice) -> TrainOptions {
    let mut o = TrainOptions::new(PathBuf::from("mem"), dir.to_path_buf());
    o.precond = precond;
    o.cbase = Some(16);
    o.cres = Some(vec![1, 2]);
    o.num_blocks = Some(1);
    o.attn = Some(vec![8]);
    o.batch = 8;
    o.batch_gpu = Some(4);
    o.duration_mimg = 0.000_064; // 64 images = 8 steps
    o.tick_kimg = 0.016; // 2 steps per tick
    o.snap = 1;
    o.dump = 1;
    o.lr = 1e-3;
    o.lr_rampup_kimg = 0.0;
    o.augment = 0.0;
    o.dropout = 0.0;
    o.seed = 7;
    o.progress = false;
    o
}

/// libtorch's generator is process-global and the loop re-seeds it every step: runs in
/// parallel test threads would interleave their draws.
static LOOP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(o: &TrainOptions, data: &MemData) -> tiw::train::score::RunSummary {
    let _g = LOOP.lock().unwrap_or_else(|e| e.into_inner());
    let n = data.n;
    let mut make = |_seed: u64, pos: u64| -> anyhow::Result<Box<dyn IndexStream>> {
        Ok(Box::new(HashStream { n, pos }))
    };
    train(o, data, &mut make, None, Device::Cpu, &mut |l| println!("{l}")).unwrap()
}

fn snapshot_tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let (store, cfg) = tiw_models::load::read(p).unwrap();
    assert!(cfg.is_some(), "{}: snapshot has no config", p.display());
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
fn edm_run_writes_files_and_loads() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = MemData::new(24, 16, 0);
    let o = tiny_options(dir.path(), PrecondChoice::Edm);
    let s = run(&o, &data);
    assert!(s.done);
    assert_eq!(s.cur_nimg, 64);
    let name = s.run_dir.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(name, "00000-mem-uncond-ddpmpp-edm-gpus1-batch8-fp32");
    // ticks: tick 0 after step 1 (8 img), then every 16 img: 24, 40, 56, 64
    assert_eq!(s.tick_losses.len(), 5, "{:?}", s.tick_losses);
    assert!(s.tick_losses.iter().all(|l| l.is_finite() && *l > 0.0));
    for f in ["log.txt", "stats.jsonl", "training_options.json"] {
        assert!(s.run_dir.join(f).is_file(), "{f} missing");
    }
    let lines = std::fs::read_to_string(s.run_dir.join("stats.jsonl")).unwrap();
    let parsed: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed.len(), 5);
    assert!(parsed[0]["Loss/loss"]["num"].as_f64().unwrap() > 0.0);
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.run_dir.join("training_options.json")).unwrap())
            .unwrap();
    assert_eq!(opts["batch_size"], 8);
    // snapshots every tick (kimg 0 each), the last one loads as a denoiser and runs
    let last = s.snapshots.last().unwrap();
    assert!(last.ends_with("network-snapshot-000000.safetensors"));
    let net = tiw_models::load::edm_denoiser(&tiw_models::tch_ops::TchOps::new(Device::Cpu), last).unwrap();
    let (x, _) = data.batch(&[0, 1]).unwrap();
    let sigma = Tensor::from_slice(&[0.5f32, 2.0]);
    let out = tch::no_grad(|| {
        net.forward(
            &tiw_models::tch_ops::TchOps::new(Device::Cpu),
            &tiw_models::tch_ops::TchTensor(x),
            &tiw_models::tch_ops::TchTensor(sigma),
            None,
            None,
            false,
        )
    })
    .unwrap();
    assert!(out.d.0.isfinite().all().int64_value(&[]) == 1);
    // a second run gets the next number
    let s2 = run(&o, &data);
    assert!(s2
        .run_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("00001-"));
    // same seed, same data → identical weights
    let a = snapshot_tensors(last);
    let b = snapshot_tensors(s2.snapshots.last().unwrap());
    assert!(a == b, "two identical runs differ");
}

#[test]
fn resume_is_bit_exact() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = MemData::new(24, 16, 0);
    let mut o = tiny_options(dir.path(), PrecondChoice::Edm);
    o.ema_mimg = 0.000_02; // short half-life: the EMA moves
    o.ema_rampup = Some(0.5);
    o.lr_rampup_kimg = 0.02;
    o.dropout = 0.1; // dropout draws must be replayed too
    o.run_dir = Some(dir.path().join("straight"));
    let straight = run(&o, &data);
    // interrupted: stop at 24 images (after tick 1's state), then resume the directory
    o.run_dir = Some(dir.path().join("interrupted"));
    o.stop_kimg = Some(0.024);
    let first = run(&o, &data);
    assert!(!first.done);
    assert_eq!(first.cur_nimg, 24);
    let mut r = o.clone();
    r.stop_kimg = None;
    r.run_dir = None;
    r.resume = Some(dir.path().join("interrupted"));
    let resumed = run(&r, &data);
    assert!(resumed.done);
    assert_eq!(resumed.run_dir, dir.path().join("interrupted"));
    let a = snapshot_tensors(straight.snapshots.last().unwrap());
    let b = snapshot_tensors(resumed.snapshots.last().unwrap());
    assert_eq!(a.len(), b.len());
    let mut differing = 0;
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        if va != vb {
            differing += 1;
            println!("{na} differs");
        }
    }
    assert_eq!(differing, 0, "resumed run differs from the uninterrupted one");
    let sa = tiw::train::checkpoint::read_state(straight.states.last().unwrap(), Device::Cpu).unwrap();
    let sb = tiw::train::checkpoint::read_state(resumed.states.last().unwrap(), Device::Cpu).unwrap();
    assert_eq!(sa.progress, sb.progress);
    for (n, t) in &sa.net {
        assert!(t.equal(&sb.net[n]), "net {n} differs");
    }
    for (n, (m, v, s)) in &sa.adam {
        let (m2, v2, s2) = &sb.adam[n];
        assert!(m.equal(m2) && v.equal(v2) && s == s2, "adam {n} differs");
    }
    println!("{} tensors bit-identical after resume", a.len());
}

#[test]
fn tiw_run_with_fixture_discriminator() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = MemData::new(16, 16, 0);
    for mode in [
        tiw::train::options::TiwMode::Official,
        tiw::train::options::TiwMode::Corrected,
    ] {
        let mut o = tiny_options(dir.path(), PrecondChoice::TiwEdm);
        o.extractor = Some(fixture("classifier/feature_extractor.pt"));
        o.discriminator = Some(fixture("classifier/discriminator.pt"));
        (o.tiw_weighting, o.tiw_correction) = mode.switches();
        o.duration_mimg = 0.000_032;
        let s = run(&o, &data);
        assert!(s.done);
        assert!(
            s.tick_losses.iter().all(|l| l.is_finite()),
            "{mode:?}: {:?}",
            s.tick_losses
        );
        println!("{mode:?}: tick losses {:?}", s.tick_losses);
    }
}

#[test]
fn bad_options_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = MemData::new(4, 16, 0);
    let mut o = tiny_options(dir.path(), PrecondChoice::TiwEdm);
    let mut s = |_seed: u64, pos: u64| -> anyhow::Result<Box<dyn IndexStream>> {
        Ok(Box::new(HashStream { n: 4, pos }))
    };
    let e = train(&o, &data, &mut s, None, Device::Cpu, &mut |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("--extractor"), "{e:#}");
    o.precond = PrecondChoice::Edm;
    o.batch = 6;
    o.batch_gpu = Some(4);
    let e = train(&o, &data, &mut s, None, Device::Cpu, &mut |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("multiple"), "{e:#}");
    o.batch = 8;
    o.cond = true;
    let e = train(&o, &data, &mut s, None, Device::Cpu, &mut |_| {}).unwrap_err();
    assert!(format!("{e:#}").contains("no labels"), "{e:#}");
    let _ = Kind::Float;
}

#[test]
fn resumes_the_official_training_state() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    // the official pair: training-state-<kimg>.pt next to network-snapshot-<kimg>.pkl
    let pt = dir.path().join("training-state-002560.pt");
    std::fs::copy(fixture("loss/training-state-002560.pt"), &pt).unwrap();
    std::fs::copy(
        fixture("nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl"),
        dir.path().join("network-snapshot-002560.pkl"),
    )
    .unwrap();
    let pkl = dir.path().join("network-snapshot-002560.pkl");
    let st = tiw::train::checkpoint::read_official_state(&pt, &pkl, Device::Cpu).unwrap();
    assert_eq!(st.progress.cur_nimg, 2_560_000);
    // the state's net is the weights after the fixture's step; Adam has one step per parameter
    let f = common::read_npz(&fixture("loss/tiw_train_step.npz"));
    let mut checked = 0;
    for a in f.iter().filter(|a| a.name.starts_with("after:")) {
        let name = &a.name["after:".len()..];
        let ours = Vec::<f32>::try_from(&st.net[name].contiguous().view(-1)).unwrap();
        assert_eq!(ours, a.to_f32(), "{name}");
        checked += 1;
    }
    assert!(checked > 10);
    assert!(!st.adam.is_empty());
    assert!(st.adam.values().all(|(_, _, s)| *s == 1), "Adam steps");
    // and training continues from it
    let data = MemData::new(8, 16, 0);
    let mut o = tiny_options(dir.path(), PrecondChoice::Edm);
    o.resume = Some(pt);
    o.run_dir = Some(dir.path().join("continued"));
    o.duration_mimg = 2.560_016; // two more steps
    let s = run(&o, &data);
    assert!(s.done);
    assert_eq!(s.cur_nimg, 2_560_016);
    println!(
        "resumed the official state: {checked} tensors bit-identical, ticks {:?}",
        s.tick_losses
    );
}

#[test]
fn conditional_run_with_augmentation() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = MemData::new(12, 16, 3);
    let mut o = tiny_options(dir.path(), PrecondChoice::Edm);
    o.cond = true;
    o.augment = 0.5;
    o.duration_mimg = 0.000_016;
    let n = data.n;
    let pipe = tiw::train::augment::AugmentPipe::edm(o.augment);
    let mut make = |_seed: u64, pos: u64| -> anyhow::Result<Box<dyn IndexStream>> {
        Ok(Box::new(HashStream { n, pos }))
    };
    let s = {
        let _g = LOOP.lock().unwrap_or_else(|e| e.into_inner());
        train(
            &o,
            &data,
            &mut make,
            Some(&pipe as &dyn tiw::train::loss::Augment),
            Device::Cpu,
            &mut |_| {},
        )
        .unwrap()
    };
    assert!(s.done && s.tick_losses.iter().all(|l| l.is_finite()));
    assert!(s
        .run_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .contains("-cond-"));
    // the snapshot is a class-conditional network with augment labels
    let snap = s.snapshots.last().unwrap();
    let (_, cfg) = tiw_models::load::read(snap).unwrap();
    let cfg = tiw_models::config::NetConfig::from_json(&cfg.unwrap()).unwrap();
    assert_eq!(cfg.label_dim, 3);
    assert_eq!(cfg.augment_dim(), 9);
    let names = snapshot_tensors(snap);
    assert!(names.iter().any(|(n, _)| n == "model.map_label.weight"));
    assert!(names.iter().any(|(n, _)| n == "model.map_augment.weight"));
}
