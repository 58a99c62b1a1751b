//! Data-parallel training benchmark (plain `fn main()` harness).
//!
//! ```text
//! cargo bench --bench parallel -- [--out DIR] [--steps N]
//! ```
//!
//! CPU, the full-size CIFAR-10 DDPM++ EDM network (55.7 M parameters, `--arch ddpmpp`) at
//! global batch 8 on random 32×32 images, EDM loss, dropout 0.13, no augmentation, through
//! the `tiw train` command:
//!
//! * 1 process × 2 libtorch threads (batch 8 in one round), and
//! * 2 ranks × 1 thread under `tiw launch` (Gloo on 127.0.0.1; 4 images per rank),
//!
//! each tick one optimizer step: seconds per step (median after two warm-up steps, from
//! `stats.jsonl`'s `Timing/sec_per_tick`) and the gradient all-reduce's share of the step
//! (`Timing/allreduce_sec`: 56 M f32 gradients summed over 2 ranks, including any wait for the
//! slower rank). Results: `DIR/parallel.md`, `DIR/parallel.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Per-tick `(sec_per_tick, allreduce_sec)` from a run's `stats.jsonl`.
fn ticks(run: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(run.join("stats.jsonl")).expect("stats.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mean = |k: &str| v[k]["mean"].as_f64().unwrap_or(0.0);
            (mean("Timing/sec_per_tick"), mean("Timing/allreduce_sec"))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn run(data: &Path, run_dir: &Path, steps: usize, ranks: usize) -> (f64, f64) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tiw"));
    if ranks > 1 {
        c.args(["launch", "--nproc-per-node", &ranks.to_string(), "--"]);
    }
    let threads = (2 / ranks).max(1).to_string();
    let stop = format!("{}", steps as f64 * 8.0 / 1000.0);
    c.args([
        "train",
        "--data",
        data.to_str().unwrap(),
        "--outdir",
        "unused",
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--precond",
        "edm",
        "--arch",
        "ddpmpp",
        "--batch",
        "8",
        "--duration",
        "1",
        "--stop-kimg",
        &stop,
        "--tick",
        "0.008",
        "--snap",
        "0",
        "--dump",
        "0",
        "--augment",
        "0",
        "--threads",
        &threads,
        "--quiet",
    ]);
    c.env("OMP_NUM_THREADS", &threads);
    let out = c.output().expect("running tiw");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = ticks(run_dir);
    // tick 0 is the first step; skip two warm-up steps
    let rest: Vec<(f64, f64)> = t.into_iter().skip(2).collect();
    let step = median(rest.iter().map(|r| r.0).collect());
    let reduce = median(rest.iter().map(|r| r.1).collect());
    (step, reduce)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out_dir = PathBuf::from(arg(&args, "--out").unwrap_or_else(|| "bench-out".into()));
    let steps: usize = arg(&args, "--steps").map_or(8, |s| s.parse().unwrap());
    std::fs::create_dir_all(&out_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let n = 64;
    let mut state = 0x1234_5678_u64;
    let images: Vec<u8> = (0..n * 32 * 32 * 3)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect();
    let data = tmp.path().join("random32.zip");
    tiw::data::writer::write_dataset_zip(&data, &images, n, 32, 32, 3, None).unwrap();
    let (s1, _) = run(&data, &tmp.path().join("one"), steps, 1);
    let (s2, r2) = run(&data, &tmp.path().join("two"), steps, 2);
    let share = r2 / s2;
    let md = format!(
        "# Data-parallel training step (CPU, DDPM++ 55.7 M parameters, global batch 8, EDM loss)\n\n\
         | setup | s/step | all-reduce s/step | all-reduce share |\n|---|---:|---:|---:|\n\
         | 1 process × 2 threads | {s1:.3} | – | – |\n\
         | 2 ranks × 1 thread (Gloo, loopback) | {s2:.3} | {r2:.3} | {:.1} % (target ≤ 5 %) |\n\n\
         2 ranks / 1 process time per step: {:.2}×\n",
        100.0 * share,
        s2 / s1
    );
    print!("{md}");
    std::fs::write(out_dir.join("parallel.md"), &md).unwrap();
    let json = serde_json::json!({
        "one_process_2_threads_s_per_step": s1,
        "two_ranks_1_thread_s_per_step": s2,
        "allreduce_s_per_step": r2,
        "allreduce_share": share,
        "steps": steps,
    });
    std::fs::write(out_dir.join("parallel.json"), json.to_string()).unwrap();
}
