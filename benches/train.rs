//! Training-step benchmark (plain `fn main()` harness).
//!
//! ```text
//! cargo bench --bench train -- [--out DIR] [--steps N] [--batch B]
//! ```
//!
//! CPU, 2 libtorch threads, the full-size CIFAR-10 DDPM++ EDM network (55.7 M parameters,
//! train.py's `--arch ddpmpp` preset, dropout 0.13) at batch 8 with the AugmentPipe at
//! p = 0.12, on random 32×32 images, through [`tiw::train::score::train`] (the `tiw train`
//! loop): seconds per optimiser step for
//!
//! * the plain EDM loss (`--precond edm`), and
//! * the TIW-EDM loss (`--precond tiw_edm`, official mode) with the full-size 32×32 ADM feature
//!   extractor (47.8 M parameters) and the 512-channel discriminator (2.9 M), both with
//!   PyTorch's default random initialisation — the weight correction needs the gradient of
//!   the discriminator output with respect to its input through both frozen networks.
//!
//! Each loss runs in its own child process (so that its peak RSS, `VmHWM`, is its own); every
//! step is one tick, and the reported time is the median over the steps after two warm-up
//! steps. Each loss also runs without the AugmentPipe and with glibc's malloc defaults; the
//! PyTorch baseline of a loss runs right after ours.
//!
//! Baselines: PyTorch eager in the same run (`benches/pytorch_baseline.py train-edm` and
//! `train-tiw`: the same networks written from SPEC §2, the same weights for the frozen
//! extractor and discriminator, the official step including what SPEC §9.11 describes —
//! parameter gradients of the frozen networks and attention recomputed in the backward — but
//! no augmentation, so the like-for-like rows are ours without the AugmentPipe), and the
//! issue's anchors (the official code where the issue was written: TIW 8.93 s per step, EDM
//! 5.76 s). Results: `DIR/train.md`, `DIR/train.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/pytorch.rs"]
mod pytorch;

use tch::{Device, Tensor};
use tiw::train::augment::AugmentPipe;
use tiw::train::loss::Augment;
use tiw::train::options::{PrecondChoice, TrainOptions};
use tiw::train::score::{train, IndexStream, TrainData};

const THREADS: i32 = 2;
const ANCHOR_TIW_S: f64 = 8.93;
const ANCHOR_EDM_S: f64 = 5.76;
/// Targets relative to the official code: EDM step ≤ 1.0×, TIW step ≤ 0.85×.
const TARGET_EDM: f64 = 1.0;
const TARGET_TIW: f64 = 0.85;

/// Random uint8 images (deterministic).
struct Random32 {
    images: Vec<u8>,
    n: usize,
}

impl TrainData for Random32 {
    fn len(&self) -> usize {
        self.n
    }
    fn resolution(&self) -> usize {
        32
    }
    fn channels(&self) -> usize {
        3
    }
    fn label_dim(&self) -> usize {
        0
    }
    fn name(&self) -> String {
        "random32".into()
    }
    fn batch(&self, idx: &[usize]) -> anyhow::Result<(Tensor, Tensor)> {
        let per = 3 * 32 * 32;
        let v: Vec<f32> = idx
            .iter()
            .flat_map(|&i| {
                self.images[i * per..(i + 1) * per]
                    .iter()
                    .map(|&p| p as f32 / 127.5 - 1.0)
            })
            .collect();
        Ok((
            Tensor::from_slice(&v).reshape([idx.len() as i64, 3, 32, 32]),
            Tensor::zeros([idx.len() as i64, 0], (tch::Kind::Float, Device::Cpu)),
        ))
    }
}

struct Cycle {
    n: usize,
    pos: u64,
}

impl IndexStream for Cycle {
    fn next_index(&mut self) -> usize {
        self.pos += 1;
        (self.pos as usize - 1) % self.n
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn vm_hwm_mb() -> f64 {
    tiw::train::stats::proc_status_bytes("VmHWM")
        .map(|b| b / 1e6)
        .unwrap_or(0.0)
}

/// Child: runs `steps` steps of one loss (with the AugmentPipe at p = 0.12 unless `no_augment`)
/// and prints `RESULT <median s/step> <peak RSS MB> <all>`.
fn child(mode: &str, steps: usize, batch: usize, no_augment: bool, dir: &Path) {
    // as `tiw train` does (src/main.rs); `TIW_MALLOC=default` measures glibc's defaults
    let tuned = tiw::malloc_tuning::keep_freed_memory();
    eprintln!("train bench child: malloc tuned for reuse: {tuned}");
    tch::set_num_threads(THREADS);
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let n = 64;
    let images = (0..n * 3 * 32 * 32)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 56) as u8
        })
        .collect();
    let data = Random32 { images, n };
    let mut o = TrainOptions::new(PathBuf::from("random32"), dir.to_path_buf());
    o.run_dir = Some(dir.join(format!("run-{mode}")));
    o.batch = batch;
    o.duration_mimg = (steps * batch) as f64 / 1e6;
    o.tick_kimg = batch as f64 / 1000.0;
    o.snap = 0;
    o.dump = 0;
    o.lr_rampup_kimg = 1.0;
    o.progress = false;
    if mode == "tiw" {
        o.precond = PrecondChoice::TiwEdm;
        let fe = dir.join("fe32.pt");
        let dis = dir.join("dis512.pt");
        let fe_cfg = tiw_models::adm::EncoderConfig::feature_extractor(32).unwrap();
        tiw::train::init::save_fresh_encoder(&fe_cfg, 1, &fe).unwrap();
        let dis_cfg = tiw_models::adm::EncoderConfig::discriminator(512, false);
        tiw::train::init::save_fresh_encoder(&dis_cfg, 2, &dis).unwrap();
        o.extractor = Some(fe);
        o.discriminator = Some(dis);
    } else {
        o.precond = PrecondChoice::Edm;
    }
    let pipe = AugmentPipe::edm(0.12);
    let mut make =
        |_seed: u64, pos: u64| -> anyhow::Result<Box<dyn IndexStream>> { Ok(Box::new(Cycle { n, pos })) };
    // one tick per step: the wall time between consecutive tick lines is one step (the
    // log's own `sec/tick` has 0.1 s resolution)
    let mut secs = Vec::new();
    let mut last: Option<std::time::Instant> = None;
    let mut log = |l: &str| {
        if l.contains("sec/tick") {
            let now = std::time::Instant::now();
            if let Some(t) = last {
                secs.push((now - t).as_secs_f64());
            }
            last = Some(now);
        }
    };
    train(
        &o,
        &data,
        &mut make,
        (!no_augment).then_some(&pipe as &dyn Augment),
        Device::Cpu,
        &mut log,
    )
    .unwrap();
    let timed: Vec<f64> = secs.iter().skip(1).copied().collect();
    let mut sorted = timed.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "RESULT {median} {} {}",
        vm_hwm_mb(),
        timed
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(",")
    );
}

/// One child's result.
struct Row {
    mode: &'static str,
    label: String,
    s_step: f64,
    rss_mb: f64,
    steps: String,
}

/// One PyTorch baseline run: median s/step after two warm-up steps, peak RSS, every step.
struct PyRow {
    median: Option<f64>,
    rss: Option<f64>,
    all: Vec<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = arg(&args, "--steps").and_then(|s| s.parse().ok()).unwrap_or(8);
    let batch: usize = arg(&args, "--batch").and_then(|s| s.parse().ok()).unwrap_or(8);
    if let Some(mode) = arg(&args, "--child") {
        let no_augment = args.iter().any(|a| a == "--no-augment");
        child(
            &mode,
            steps,
            batch,
            no_augment,
            Path::new(&arg(&args, "--dir").unwrap()),
        );
        return;
    }
    let out = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "bench-out".into()));
    std::fs::create_dir_all(&out).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let (fe, dis) = (tmp.path().join("fe32.pt"), tmp.path().join("dis512.pt"));
    // One of our children: `tiw train`'s malloc settings (src/malloc_tuning.rs) or glibc's
    // defaults, with or without the AugmentPipe.
    let run_ours = |mode: &'static str, malloc: &str, augment: bool| -> Row {
        eprintln!(
            "train bench: {mode}, {steps} steps at batch {batch}, malloc {malloc}, augment {augment} ..."
        );
        let mut cmd = Command::new(&me);
        cmd.env("TIW_MALLOC", malloc).args([
            "--child",
            mode,
            "--steps",
            &steps.to_string(),
            "--batch",
            &batch.to_string(),
            "--dir",
        ]);
        cmd.arg(tmp.path());
        if !augment {
            cmd.arg("--no-augment");
        }
        let r = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&r.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_else(|| panic!("{mode}: no result\n{}", String::from_utf8_lossy(&r.stderr)));
        let f: Vec<&str> = line.split_whitespace().collect();
        let mut label = format!(
            "{} ({})",
            mode.to_uppercase(),
            if augment {
                "augment 0.12"
            } else {
                "no augmentation"
            }
        );
        if malloc == "default" {
            label.push_str(", glibc malloc defaults");
        }
        Row {
            mode,
            label,
            s_step: f[1].parse().unwrap(),
            rss_mb: f[2].parse().unwrap(),
            steps: f.get(3).unwrap_or(&"").to_string(),
        }
    };
    // PyTorch eager's steps, same protocol (median after two warm-up steps); its TIW step uses
    // the extractor and discriminator our TIW children wrote.
    let run_py = |mode: &str| -> PyRow {
        eprintln!("train bench: PyTorch eager {mode} step ({steps} steps at batch {batch}) ...");
        let (b, n) = (batch.to_string(), steps.to_string());
        let (fe, dis) = (
            fe.to_string_lossy().into_owned(),
            dis.to_string_lossy().into_owned(),
        );
        let mut a = vec![
            if mode == "edm" { "train-edm" } else { "train-tiw" },
            "--batch",
            &b,
            "--steps",
            &n,
        ];
        if mode == "tiw" {
            a.extend(["--extractor", &fe, "--discriminator", &dis]);
        }
        let r = pytorch::run(THREADS, &a, &out.join(format!("pytorch_train_{mode}.json")));
        let all: Vec<f64> = r
            .as_ref()
            .and_then(|v| v["step_s"].as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        let median = pytorch::median(&serde_json::json!(all.iter().skip(2).collect::<Vec<_>>()));
        let rss = r.as_ref().and_then(|v| v["peak_rss_mb"].as_f64());
        PyRow { median, rss, all }
    };
    // Each PyTorch run right after our runs of the same loss, so that the machine's speed
    // (which drifts by up to ~15 % between runs here) changes as little as possible between
    // the two sides of a ratio; the glibc-defaults rows last.
    let mut rows = Vec::new();
    let mut py = std::collections::HashMap::new();
    for mode in ["edm", "tiw"] {
        rows.push(run_ours(mode, "tuned", false));
        rows.push(run_ours(mode, "tuned", true));
        py.insert(mode, run_py(mode));
    }
    for mode in ["edm", "tiw"] {
        rows.push(run_ours(mode, "default", true));
    }
    let mut md = String::from(
        "| loss | s/step (median) | PyTorch eager, same run | ours / PyTorch | target | official PyTorch (anchor) | \
         ours / anchor | images/s | peak RSS MB | per-step s |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---|\n",
    );
    let mut js = Vec::new();
    for r in &rows {
        let (anchor, target) = match r.mode {
            "edm" => (ANCHOR_EDM_S, TARGET_EDM),
            _ => (ANCHOR_TIW_S, TARGET_TIW),
        };
        let (s, py_s) = (r.s_step, py[r.mode].median);
        md.push_str(&format!(
            "| {} | {s:.2} | {} | {} | ≤ {target:.2}× {} | {anchor:.2} | {:.2}× | {:.2} | {:.0} | {} |\n",
            r.label,
            py_s.map(|p| format!("{p:.2}")).unwrap_or_else(|| "—".into()),
            py_s.map(|p| format!("{:.2}×", s / p))
                .unwrap_or_else(|| "—".into()),
            py_s.map(|p| if s / p <= target { "ok" } else { "MISS" })
                .unwrap_or(""),
            s / anchor,
            batch as f64 / s,
            r.rss_mb,
            r.steps,
        ));
        js.push(
            serde_json::json!({"loss": r.mode, "label": r.label, "s_per_step": s, "anchor_s": anchor,
            "ratio": s / anchor, "pytorch_s": py_s, "ours_over_pytorch": py_s.map(|p| s / p),
            "target": target, "images_per_s": batch as f64 / s, "peak_rss_mb": r.rss_mb, "steps": r.steps}),
        );
    }
    let fmt_steps = |p: &PyRow| {
        if p.all.is_empty() {
            "did not run".to_string()
        } else {
            format!(
                "steps {} s, peak RSS {} MB",
                p.all
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                p.rss.map(|r| format!("{r:.0}")).unwrap_or_else(|| "—".into())
            )
        }
    };
    md.push_str(&format!(
        "\nPyTorch eager = `benches/pytorch_baseline.py train-edm` / `train-tiw` ({THREADS} threads): DDPM++ and \
         the ADM extractor/discriminator written in PyTorch from SPEC §2 (checked against the official outputs \
         by `make test`), the same frozen extractor/discriminator weights as our TIW rows, loss, backward, \
         gradient sanitising, Adam, EMA; the TIW step as the official code runs it (the frozen networks keep \
         requires_grad, attention recomputed in the backward with parameter gradients, SPEC §9.11). It does \
         not augment: the like-for-like rows are ours `(no augmentation)`; the `(augment 0.12)` rows do the \
         AugmentPipe's extra work on top. EDM: {}. TIW: {}. Rows `glibc malloc defaults`: the same child with \
         `TIW_MALLOC=default`, i.e. without `tiw`'s malloc settings (src/malloc_tuning.rs: freed memory stays \
         in the heap instead of coming back as fresh zeroed pages every step).\n",
        fmt_steps(&py["edm"]),
        fmt_steps(&py["tiw"]),
    ));
    println!("{md}");
    std::fs::write(out.join("train.md"), &md).unwrap();
    std::fs::write(
        out.join("train.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"batch": batch, "threads": THREADS, "rows": js,
            "pytorch_edm_steps_s": py["edm"].all, "pytorch_edm_peak_rss_mb": py["edm"].rss,
            "pytorch_tiw_steps_s": py["tiw"].all, "pytorch_tiw_peak_rss_mb": py["tiw"].rss}),
        )
        .unwrap(),
    )
    .unwrap();
}
