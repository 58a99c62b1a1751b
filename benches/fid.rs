//! FID benchmark (plain `fn main()` harness, release build).
//!
//! ```text
//! cargo bench --bench fid -- [--out DIR] [--images N] [--rows N] [--metric-rows N] [--prc-rows N] [--kid-subsets N] [--only-metrics]
//! ```
//!
//! In one run, on the CPU:
//!
//! 1. **Baselines**: a 2048³ f64 and f32 matrix product with libtorch (`matmul`, 2 threads),
//!    the practical peaks the statistics are compared with.
//! 2. **Statistics** of 50,000 × 2048 f32 features (`--rows`; pseudo-random, non-negative
//!    like pooled ReLU features), fed in batches of 64 as the detector produces them, then
//!    `mu`/`sigma`: [`FeatureStats`] (blocked symmetric rank-k update in f64). Also the f64
//!    lower bound at the measured f64 peak (`n·D²` multiply-adds) and EDM's route
//!    (`x.T @ x` in f64 with libtorch, the full product).
//! 3. **Fréchet distance** of two 2048-d statistics ([`frechet_distance`], symmetric
//!    eigendecompositions in f64).
//! 4. **Inception features**: `--images` (1,000) random 32×32 PNGs through
//!    [`extract_stats`] with the detector on ONNX Runtime (CPU; decode + resize to 299 +
//!    Inception-v3), images/s. Needs the random-weight detector of the shared fixtures
//!    (`../shared/fixtures/fid/inception/inception_random.pth`; same compute as the real
//!    weights); skipped, and said so, when it is absent.
//!
//! 5. **KID and precision/recall** ([`tiw::fid::metrics`] on libtorch, with f64 and with f32
//!    feature products) of two sets of `--metric-rows` (50,000) × 2048 random features: KID
//!    with torch-fidelity's defaults (`--kid-subsets` 100 subsets of 1000), precision/recall
//!    (k = 3) on the first `--prc-rows` (10,000) rows of each set (its cost grows as rows²:
//!    about 2·n²·D multiply-adds). With `$TIW_TORCH_PY`
//!    (the full-torch venv, torch-fidelity 0.4.0) the same arrays go through torch-fidelity's
//!    metric functions in the same run, on its own f32 path (features as float32 tensors).
//!    `--only-metrics` skips 1–4.
//!
//! Results: `DIR/fid.md`, `DIR/fid.json` and the table on stdout. Targets (issue): distance
//! ≤ 2.5 s, statistics ≤ 2.5 s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use tch::{Device, Kind, Tensor};
use tiw::data::images::ImageSet;
use tiw::device::DeviceSpec;
use tiw::fid::detector::{Detector, DetectorRuntime};
use tiw::fid::distance::frechet_distance;
use tiw::fid::metrics::kid::{kid, Kid, KidOptions};
use tiw::fid::metrics::prc::{precision_recall, PrcOptions, PrecisionRecall};
use tiw::fid::metrics::{Features, ProductDtype};
use tiw::fid::stats::FeatureStats;
use tiw::fid::{extract_stats, ExtractOpts};

const DIM: usize = 2048;
const TARGET_DISTANCE_S: f64 = 2.5;
const TARGET_STATS_S: f64 = 2.5;

struct Args {
    out: PathBuf,
    images: usize,
    rows: usize,
    metric_rows: usize,
    prc_rows: usize,
    kid_subsets: usize,
    only_metrics: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        out: PathBuf::from("bench-out"),
        images: 1000,
        rows: 50_000,
        metric_rows: 50_000,
        prc_rows: 10_000,
        kid_subsets: 100,
        only_metrics: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |what: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match x.as_str() {
            "--out" => a.out = PathBuf::from(it.next().expect("--out needs a directory")),
            "--images" => a.images = num("--images"),
            "--rows" => a.rows = num("--rows"),
            "--metric-rows" => a.metric_rows = num("--metric-rows"),
            "--prc-rows" => a.prc_rows = num("--prc-rows"),
            "--kid-subsets" => a.kid_subsets = num("--kid-subsets"),
            "--only-metrics" => a.only_metrics = true,
            "--bench" => {}
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench fid -- [--out DIR] [--images N] [--rows N] [--metric-rows N] [--prc-rows N] [--kid-subsets N] [--only-metrics]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Deterministic pseudo-random non-negative features (xorshift; ~half zeros, like pooled
/// ReLU activations with a per-dimension scale).
fn features(rows: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let scale: Vec<f32> = (0..DIM).map(|j| 0.2 + (j % 7) as f32 * 0.1).collect();
    let mut out = vec![0f32; rows * DIM];
    for r in 0..rows {
        let common = next();
        for j in 0..DIM {
            let v = next() + 0.3 * common - 0.5;
            out[r * DIM + j] = v.max(0.0) * scale[j];
        }
    }
    out
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..n {
        let t0 = Instant::now();
        let r = f();
        best = best.min(t0.elapsed().as_secs_f64());
        last = Some(r);
    }
    (best, last.expect("n ≥ 1"))
}

fn gemm_gflops(kind: Kind) -> f64 {
    let n = 2048i64;
    let a = Tensor::randn([n, n], (kind, Device::Cpu));
    let b = Tensor::randn([n, n], (kind, Device::Cpu));
    let _ = a.matmul(&b);
    let (t, _) = best_of(5, || a.matmul(&b));
    2.0 * (n as f64).powi(3) / t / 1e9
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISS"
    }
}

fn write_pngs(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("create the image folder");
    let mut s = 0x1234_5678_9abc_def1u64;
    for i in 0..n {
        let mut img = image::RgbImage::new(32, 32);
        for p in img.pixels_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *p = image::Rgb([s as u8, (s >> 8) as u8, (s >> 16) as u8]);
        }
        img.save(dir.join(format!("{i:06}.png"))).expect("write a PNG");
    }
}

fn main() {
    // the malloc settings of the `tiw` binary (src/malloc_tuning.rs)
    tiw::malloc_tuning::keep_freed_memory();
    let args = parse_args();
    std::fs::create_dir_all(&args.out).expect("create --out");
    tch::set_num_threads(2);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut md = String::from("# FID benchmark\n\n");
    let mut report = serde_json::Map::new();
    if !args.only_metrics {
        fid_sections(&args, threads, &mut md, &mut report);
    }
    metric_section(&args, &mut md, &mut report);
    print!("{md}");
    std::fs::write(args.out.join("fid.md"), &md).expect("write fid.md");
    std::fs::write(
        args.out.join("fid.json"),
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).expect("json"),
    )
    .expect("write fid.json");
}

/// Sections 1–4 (baselines, statistics, distance, Inception features).
fn fid_sections(
    args: &Args,
    threads: usize,
    md: &mut String,
    report: &mut serde_json::Map<String, serde_json::Value>,
) {
    // 1. baselines
    let dgemm = gemm_gflops(Kind::Double);
    let sgemm = gemm_gflops(Kind::Float);
    eprintln!("fid bench: DGEMM {dgemm:.1} GFLOP/s, SGEMM {sgemm:.1} GFLOP/s (libtorch, 2 threads)");

    // 2. statistics
    let rows = args.rows;
    let feats = features(rows, 1);
    let macs = rows as f64 * (DIM * DIM) as f64;
    let (stats_s, ms) = best_of(2, || {
        let mut st = FeatureStats::new(DIM);
        for b in feats.chunks(64 * DIM) {
            st.add_f32(b);
        }
        st.mu_sigma().expect("mu_sigma")
    });
    let lower_bound_s = macs / (dgemm * 1e9); // n·D² multiply-adds = the lower triangle of a 2n·D² flop product
    let stats_gflops = macs / stats_s / 1e9; // symmetric: n·D² useful multiply-adds ×2 flops / 2
    let edm_route_s = {
        let x = Tensor::from_slice(&feats)
            .reshape([rows as i64, DIM as i64])
            .to_kind(Kind::Double);
        let (t, s) = best_of(1, || x.tr().matmul(&x));
        // parity of the two routes (max |Δ| / max |S|), not timed
        let ours = {
            let mut st = FeatureStats::new(DIM);
            st.add_f32(&feats);
            st.sum_outer()
        };
        let edm = Vec::<f64>::try_from(s.reshape([-1])).expect("to vec");
        let max = edm.iter().fold(0f64, |m, v| m.max(v.abs()));
        let err = ours.iter().zip(&edm).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "  Σffᵀ ours vs x.T @ x (f64): max |Δ| / max |S| = {:.2e}",
            err / max
        );
        t
    };
    eprintln!(
        "  statistics of {rows} × {DIM}: {stats_s:.2} s ({stats_gflops:.1} GFLOP/s); f64 lower bound {lower_bound_s:.2} s; \
         EDM's x.T @ x {edm_route_s:.2} s"
    );
    drop(feats);

    // 3. distance
    let other = {
        let f = features(4096, 2);
        let mut st = FeatureStats::new(DIM);
        st.add_f32(&f);
        st.mu_sigma().expect("mu_sigma")
    };
    let (dist_s, fid) = best_of(3, || frechet_distance(&ms, &other).expect("distance"));
    eprintln!("  Fréchet distance 2048-d: {dist_s:.2} s (FID {:.4})", fid.fid);

    md.push_str(&format!(
        "CPU threads: {threads} (libtorch 2, faer/rayon {threads}). Baselines (libtorch `matmul` 2048³, best of 5): \
         DGEMM **{dgemm:.1} GFLOP/s**, SGEMM **{sgemm:.1} GFLOP/s**.\n\n\
         | what | s | target | | notes |\n|---|---:|---:|---|---|\n\
         | statistics of {rows} × {DIM} f32 features (`FeatureStats`, batches of 64, then mu/sigma) | {stats_s:.2} | {TARGET_STATS_S} | {} | {stats_gflops:.1} GFLOP/s = {:.0} % of DGEMM; f64 lower bound at the DGEMM rate: {lower_bound_s:.2} s |\n\
         | EDM's route: `x.T @ x` in f64 (libtorch), full product | {edm_route_s:.2} | — | — | for comparison |\n\
         | Fréchet distance of two 2048-d statistics | {dist_s:.2} | {TARGET_DISTANCE_S} | {} | symmetric eigendecompositions, f64 |\n",
        mark(stats_s <= TARGET_STATS_S),
        100.0 * stats_gflops / dgemm,
        mark(dist_s <= TARGET_DISTANCE_S),
    ));
    report.insert("dgemm_gflops".into(), json!(dgemm));
    report.insert("sgemm_gflops".into(), json!(sgemm));
    report.insert("stats_rows".into(), json!(rows));
    report.insert("stats_s".into(), json!(stats_s));
    report.insert("stats_f64_lower_bound_s".into(), json!(lower_bound_s));
    report.insert("edm_xtx_s".into(), json!(edm_route_s));
    report.insert("distance_s".into(), json!(dist_s));

    // 4. Inception features on ort
    let detector =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/fid/inception/inception_random.pth");
    if args.images == 0 {
        eprintln!("  Inception: skipped (--images 0)");
    } else if detector.is_file() {
        let dir = args.out.join("fid-images");
        let _ = std::fs::remove_dir_all(&dir);
        write_pngs(&dir, args.images);
        let set = ImageSet::open(&dir).expect("open the images");
        let idx: Vec<usize> = (0..set.len()).collect();
        let t0 = Instant::now();
        let mut det = Detector::load(&detector, DetectorRuntime::Ort, DeviceSpec::Cpu).expect("detector");
        let load_s = t0.elapsed().as_secs_f64();
        // warm-up batch
        let _ = extract_stats(
            &set,
            &idx[..64.min(idx.len())],
            &mut det,
            &ExtractOpts {
                progress: false,
                ..Default::default()
            },
        )
        .expect("warm-up");
        let t0 = Instant::now();
        let st = extract_stats(
            &set,
            &idx,
            &mut det,
            &ExtractOpts {
                progress: false,
                ..Default::default()
            },
        )
        .expect("extract");
        let secs = t0.elapsed().as_secs_f64();
        let ips = args.images as f64 / secs;
        eprintln!(
            "  Inception (ort, CPU): {} images in {secs:.1} s = {ips:.2} images/s (load {load_s:.1} s, n = {})",
            args.images,
            st.count()
        );
        md.push_str(&format!(
            "\nInception-v3 features on ONNX Runtime (CPU, intra-op threads = {threads}), `extract_stats` over {} random \
             32×32 PNGs (decode, resize to 299, network; batches of 64; after one warm-up batch): **{ips:.2} images/s** \
             ({secs:.1} s; detector export + session {load_s:.1} s).\n",
            args.images
        ));
        report.insert("inception_images".into(), json!(args.images));
        report.insert("inception_images_per_s".into(), json!(ips));
        report.insert("inception_load_s".into(), json!(load_s));
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let msg = format!(
            "Inception images/s: SKIPPED — {} is absent (the shared fixtures' random-weight detector).",
            detector.display()
        );
        eprintln!("  {msg}");
        md.push_str(&format!("\n{msg}\n"));
    }
}

/// torch-fidelity 0.4.0 on the same features (float32, its default path) through
/// `$TIW_TORCH_PY`: (KID seconds, KID mean, PR seconds, precision, recall), or why not.
fn torch_fidelity(
    dir: &Path,
    g: &Features,
    r: &Features,
    prc_rows: usize,
    subsets: usize,
) -> Result<[f64; 5], String> {
    let py = std::env::var("TIW_TORCH_PY").map_err(|_| "TIW_TORCH_PY is not set".to_string())?;
    let path = dir.join("metric-features.npz");
    tiw::npz::write_f32(
        &path,
        &[
            ("gen".into(), vec![g.len(), g.dim], g.data.clone()),
            ("ref".into(), vec![r.len(), r.dim], r.data.clone()),
        ],
    )
    .map_err(|e| e.to_string())?;
    let script = r#"
import sys, time, numpy as np, torch
torch.set_num_threads(2)
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
a = np.load(sys.argv[1]); n = int(sys.argv[2]); subsets = int(sys.argv[3])
g, r = torch.from_numpy(a["gen"]), torch.from_numpy(a["ref"])
t = time.perf_counter(); k = kid_features_to_metric(g, r, kid_subsets=subsets, verbose=False); tk = time.perf_counter() - t
t = time.perf_counter(); p = prc_features_to_metric(g[:n], r[:n], verbose=False); tp = time.perf_counter() - t
print(tk, k["kernel_inception_distance_mean"], tp, p["precision"], p["recall"])
"#;
    let o = Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(prc_rows.to_string())
        .arg(subsets.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&path);
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_string());
    }
    let v: Vec<f64> = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    v.try_into()
        .map_err(|_| "unexpected torch-fidelity output".to_string())
}

/// Our KID on `(g, r)` and precision/recall on their first `m` rows with the products in
/// `dtype`: (KID seconds, KID, precision/recall seconds, precision/recall).
fn our_metrics(
    g: &Features,
    r: &Features,
    m: usize,
    subsets: usize,
    dtype: ProductDtype,
) -> (f64, Kid, f64, PrecisionRecall) {
    let t0 = Instant::now();
    let k = kid(
        g,
        r,
        &KidOptions {
            subsets,
            dtype,
            ..Default::default()
        },
    )
    .expect("kid");
    let kid_s = t0.elapsed().as_secs_f64();
    let (gp, rp) = (
        Features::from_rows(DIM, g.data[..m * DIM].to_vec()).expect("rows"),
        Features::from_rows(DIM, r.data[..m * DIM].to_vec()).expect("rows"),
    );
    let t0 = Instant::now();
    let opts = PrcOptions {
        dtype,
        ..Default::default()
    };
    let pr = precision_recall(&gp, &rp, &opts).expect("prc");
    (kid_s, k, t0.elapsed().as_secs_f64(), pr)
}

/// Section 5: KID and precision/recall, f64 and f32 products, against torch-fidelity.
fn metric_section(args: &Args, md: &mut String, report: &mut serde_json::Map<String, serde_json::Value>) {
    let n = args.metric_rows;
    let (g, r) = (
        Features::from_rows(DIM, features(n, 3)).expect("rows"),
        Features::from_rows(DIM, features(n, 4)).expect("rows"),
    );
    let subsets = args.kid_subsets.max(1);
    let m = args.prc_rows.min(n);
    md.push_str(&format!(
        "\nSample metrics, two sets of random {DIM}-d features (libtorch; `--metrics-dtype` = the \
         products' type, kernels/distances/sums f64):\n\n\
         | what | rows per set | s | value |\n|---|---:|---:|---|\n"
    ));
    let mut ours = Vec::new();
    for dtype in [ProductDtype::F64, ProductDtype::F32] {
        let (kid_s, k, prc_s, pr) = our_metrics(&g, &r, m, subsets, dtype);
        let name = format!("{dtype:?}").to_lowercase();
        eprintln!(
            "  {name}: KID {n} × {DIM} ({subsets} subsets of 1000): {kid_s:.1} s (KID {:.9e}); \
             precision/recall {m} × {DIM}: {prc_s:.1} s (P {}, R {})",
            k.mean, pr.precision, pr.recall
        );
        md.push_str(&format!(
            "| tiw KID, {name} products ({subsets} subsets of 1000, degree 3) | {n} | {kid_s:.1} | {:.6e} ± {:.3e} |\n\
             | tiw precision/recall (k = 3), {name} products | {m} | {prc_s:.1} | P {:.5}, R {:.5} |\n",
            k.mean, k.std, pr.precision, pr.recall
        ));
        report.insert(format!("kid_s_{name}"), json!(kid_s));
        report.insert(format!("kid_{name}"), json!(k.mean));
        report.insert(format!("prc_s_{name}"), json!(prc_s));
        report.insert(format!("precision_{name}"), json!(pr.precision));
        report.insert(format!("recall_{name}"), json!(pr.recall));
        ours.push((kid_s, k, prc_s, pr));
    }
    let ((k64_s, k64, p64_s, pr64), (k32_s, k32, p32_s, pr32)) = (ours[0], ours[1]);
    let kid_rel = (k32.mean - k64.mean).abs() / k64.mean.abs();
    eprintln!(
        "  f32 vs f64 products: KID rel diff {kid_rel:.2e}; precision {:+}, recall {:+} vectors",
        ((pr32.precision - pr64.precision) * m as f64).round(),
        ((pr32.recall - pr64.recall) * m as f64).round()
    );
    report.insert("kid_f32_vs_f64_rel".into(), json!(kid_rel));
    report.insert("metric_rows".into(), json!(n));
    report.insert("prc_rows".into(), json!(m));
    match torch_fidelity(&args.out, &g, &r, m, subsets) {
        Ok([tk, kv, tp, p, rc]) => {
            eprintln!(
                "  torch-fidelity 0.4.0 (f32): KID {tk:.1} s ({kv:.9e}), precision/recall {tp:.1} s (P {p}, R {rc}); \
                 tiw/torch-fidelity time: KID {:.2}× (f64) {:.2}× (f32), PR {:.2}× (f64) {:.2}× (f32)",
                k64_s / tk,
                k32_s / tk,
                p64_s / tp,
                p32_s / tp
            );
            md.push_str(&format!(
                "| torch-fidelity 0.4.0 KID (numpy f32) | {n} | {tk:.1} | {kv:.6e} |\n\
                 | torch-fidelity 0.4.0 precision/recall (torch f32 `cdist`, 2 threads) | {m} | {tp:.1} | P {p:.5}, R {rc:.5} |\n\n\
                 tiw time / torch-fidelity time: KID {:.2}× (f64) and {:.2}× (f32 products); \
                 precision/recall {:.2}× (f64) and {:.2}× (f32 products).\n",
                k64_s / tk,
                k32_s / tk,
                p64_s / tp,
                p32_s / tp
            ));
            report.insert("torch_fidelity_kid_s".into(), json!(tk));
            report.insert("torch_fidelity_kid".into(), json!(kv));
            report.insert("torch_fidelity_prc_s".into(), json!(tp));
        }
        Err(why) => {
            eprintln!("  torch-fidelity: SKIPPED ({why})");
            md.push_str(&format!("\ntorch-fidelity comparison: SKIPPED ({why}).\n"));
        }
    }
}
