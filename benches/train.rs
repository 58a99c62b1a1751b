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
//! steps. Anchors (the official PyTorch code on this machine, same settings): TIW 8.93 s per
//! step, EDM 5.76 s. Results: `DIR/train.md`, `DIR/train.json`.

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

/// Child: runs `steps` steps of one loss and prints `RESULT <median s/step> <peak RSS MB> <all>`.
fn child(mode: &str, steps: usize, batch: usize, dir: &Path) {
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
        Some(&pipe as &dyn Augment),
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = arg(&args, "--steps").and_then(|s| s.parse().ok()).unwrap_or(6);
    let batch: usize = arg(&args, "--batch").and_then(|s| s.parse().ok()).unwrap_or(8);
    if let Some(mode) = arg(&args, "--child") {
        child(&mode, steps, batch, Path::new(&arg(&args, "--dir").unwrap()));
        return;
    }
    let out = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "bench-out".into()));
    std::fs::create_dir_all(&out).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let mut rows = Vec::new();
    // `tiw train`'s malloc settings (src/malloc_tuning.rs), then glibc's defaults for comparison
    for (mode, anchor, malloc) in [
        ("edm", ANCHOR_EDM_S, "tuned"),
        ("tiw", ANCHOR_TIW_S, "tuned"),
        ("edm", ANCHOR_EDM_S, "default"),
        ("tiw", ANCHOR_TIW_S, "default"),
    ] {
        eprintln!("train bench: {mode}, {steps} steps at batch {batch}, malloc {malloc} ...");
        let r = Command::new(&me)
            .env("TIW_MALLOC", malloc)
            .args([
                "--child",
                mode,
                "--steps",
                &steps.to_string(),
                "--batch",
                &batch.to_string(),
                "--dir",
            ])
            .arg(tmp.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&r.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_else(|| panic!("{mode}: no result\n{}", String::from_utf8_lossy(&r.stderr)));
        let f: Vec<&str> = line.split_whitespace().collect();
        let s_step: f64 = f[1].parse().unwrap();
        let rss: f64 = f[2].parse().unwrap();
        let label = if malloc == "tuned" {
            mode.to_string()
        } else {
            format!("{mode} (glibc malloc defaults)")
        };
        rows.push((
            mode,
            label,
            s_step,
            anchor,
            rss,
            f.get(3).unwrap_or(&"").to_string(),
        ));
    }
    // PyTorch eager's EDM step on this machine, same protocol (median after two warm-up steps)
    eprintln!("train bench: PyTorch eager EDM step ({steps} steps at batch {batch}) ...");
    let py = pytorch::run(
        THREADS,
        &[
            "train-edm",
            "--batch",
            &batch.to_string(),
            "--steps",
            &steps.to_string(),
        ],
        &out.join("pytorch_train.json"),
    );
    let py_all: Vec<f64> = py
        .as_ref()
        .and_then(|v| v["step_s"].as_array())
        .map(|a| a.iter().filter_map(|x| x.as_f64()).skip(2).collect())
        .unwrap_or_default();
    let py_edm = pytorch::median(&serde_json::json!(py_all));
    let py_rss = py.as_ref().and_then(|v| v["peak_rss_mb"].as_f64());
    let mut md = String::from(
        "| loss | s/step (median) | PyTorch eager, same run | ours / PyTorch | target | official PyTorch (anchor) | \
         ours / anchor | images/s | peak RSS MB | per-step s |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---|\n",
    );
    let mut js = Vec::new();
    for (mode, label, s, anchor, rss, all) in &rows {
        // PyTorch TIW step estimated from its EDM step with the anchors' TIW/EDM ratio
        let (py_s, estimated, target) = match *mode {
            "edm" => (py_edm, false, TARGET_EDM),
            _ => (py_edm.map(|e| e * ANCHOR_TIW_S / ANCHOR_EDM_S), true, TARGET_TIW),
        };
        md.push_str(&format!(
            "| {label} | {s:.2} | {} | {} | ≤ {target:.2}× {} | {anchor:.2} | {:.2}× | {:.2} | {rss:.0} | {all} |\n",
            py_s.map(|p| format!("{}{p:.2}", if estimated { "≈ " } else { "" }))
                .unwrap_or_else(|| "—".into()),
            py_s.map(|p| format!("{:.2}×", s / p)).unwrap_or_else(|| "—".into()),
            py_s.map(|p| if s / p <= target { "ok" } else { "MISS" }).unwrap_or(""),
            s / anchor,
            batch as f64 / s
        ));
        js.push(
            serde_json::json!({"loss": label, "s_per_step": s, "anchor_s": anchor, "ratio": s / anchor,
            "pytorch_s": py_s, "pytorch_estimated": estimated, "ours_over_pytorch": py_s.map(|p| s / p),
            "target": target, "images_per_s": batch as f64 / s, "peak_rss_mb": rss, "steps": all}),
        );
    }
    md.push_str(&format!(
        "\nPyTorch eager = `benches/pytorch_baseline.py train-edm` (DDPM++ written from SPEC §2, EDM loss, backward, \
         gradient sanitising, Adam, EMA; no augmentation, so it does a little less work than our step), \
         {THREADS} threads, steps {} s, peak RSS {} MB. Its TIW step (≈) is estimated as its EDM step × {:.2}, the \
         anchors' TIW/EDM ratio ({ANCHOR_TIW_S} s / {ANCHOR_EDM_S} s, measured where the issue was written; \
         on another CPU compare with the same-run columns). Rows `(glibc malloc defaults)`: the same child \
         with `TIW_MALLOC=default`, i.e. without `tiw`'s malloc settings (src/malloc_tuning.rs: freed \
         memory stays in the heap instead of coming back as fresh zeroed pages every step).\n",
        if py_all.is_empty() {
            "—".into()
        } else {
            py_all.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ")
        },
        py_rss.map(|r| format!("{r:.0}")).unwrap_or_else(|| "—".into()),
        ANCHOR_TIW_S / ANCHOR_EDM_S
    ));
    println!("{md}");
    std::fs::write(out.join("train.md"), &md).unwrap();
    std::fs::write(
        out.join("train.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"batch": batch, "threads": THREADS, "rows": js,
            "pytorch_edm_steps_s": py_all, "pytorch_peak_rss_mb": py_rss}),
        )
        .unwrap(),
    )
    .unwrap();
}
