//! Sample metrics beyond FID (`tiw::fid::metrics`): KID, precision/recall and the Inception
//! Score vs torch-fidelity 0.4.0 on fixed small arrays (through `$TIW_TORCH_PY`, the
//! full-torch venv of `make test`, which has torch-fidelity pinned), vs direct restatements
//! of the formulas, NumPy's `RandomState.choice` (through `$TIW_PY`), features kept in
//! statistics files and merged over shards, `tiw fid distance --metrics`, and bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixture;
use common::run_tiw as tiw;

use common::tolerances::{
    TOL_FID_REL, TOL_MERGE_REL, TOL_METRICS_F32_REL, TOL_METRICS_REL, TOL_METRICS_VS_FORMULA_REL,
};
use tiw::data::random::RandomState;
use tiw::fid::metrics::inception_score::{inception_score, IsOptions};
use tiw::fid::metrics::kid::{choice_without_replacement, kid, KidOptions};
use tiw::fid::metrics::prc::{precision_recall, PrcOptions};
use tiw::fid::metrics::{Features, ProductDtype};
use tiw::fid::stats::FeatureStats;
use tiw::fid::statsfile;

/// Deterministic pseudo-random `n × d` features: a per-set offset `shift` plus uniform noise
/// and a shared per-row component (so the sets overlap partly, as real feature sets do).
fn feats(n: usize, d: usize, seed: u64, shift: f32) -> Features {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut data = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = next();
        for j in 0..d {
            data.push(next() + 0.5 * c + shift * (j % 3) as f32);
        }
    }
    Features::from_rows(d, data).unwrap()
}

/// |ours − want| ≤ tol·|want| (or ≤ tol when want is 0); prints and returns the error.
fn check(what: &str, ours: f64, want: f64, tol: f64) -> f64 {
    let err = (ours - want).abs() / want.abs().max(1e-300);
    let err = if want == 0.0 { (ours - want).abs() } else { err };
    println!("  {what:<28} ours {ours:<24.16e} ref {want:<24.16e} err {err:.2e}");
    assert!(err <= tol, "{what}: {ours} vs {want} (err {err:.3e} > {tol:.0e})");
    err
}

/// Unbiased MMD² restated with plain f64 loops.
fn mmd2_direct(x: &Features, y: &Features, gamma: f64, coef: f64, degree: i32) -> f64 {
    let k = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(&p, &q)| p as f64 * q as f64).sum();
        (gamma * dot + coef).powi(degree)
    };
    let m = x.len() as f64;
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    for i in 0..x.len() {
        for j in 0..x.len() {
            if i != j {
                xx += k(x.row(i), x.row(j));
                yy += k(y.row(i), y.row(j));
            }
            xy += k(x.row(i), y.row(j));
        }
    }
    (xx + yy) / (m * (m - 1.0)) - 2.0 * xy / (m * m)
}

/// Precision and recall by brute force (sorted distance lists).
fn prc_direct(g: &Features, r: &Features, k: usize) -> (f64, f64) {
    let d = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let radii = |s: &Features| -> Vec<f64> {
        (0..s.len())
            .map(|i| {
                let mut v: Vec<f64> = (0..s.len()).map(|j| d(s.row(i), s.row(j))).collect();
                v.sort_by(f64::total_cmp);
                v[k]
            })
            .collect()
    };
    let (rg, rr) = (radii(g), radii(r));
    let inside = |a: &Features, b: &Features, rb: &[f64]| {
        (0..a.len())
            .filter(|&i| (0..b.len()).any(|j| d(a.row(i), b.row(j)) <= rb[j]))
            .count() as f64
            / a.len() as f64
    };
    (inside(g, r, &rr), inside(r, g, &rg))
}

#[test]
fn metrics_match_their_formulas() {
    let (g, r) = (feats(40, 12, 1, 0.0), feats(40, 12, 2, 0.15));
    let mut worst = 0f64;
    // KID on one full subset: the draw only permutes rows, which MMD² does not see; both
    // product types (f32 products: the features' rounding of aᵀb only)
    for (dtype, tol) in [
        (ProductDtype::F64, TOL_METRICS_VS_FORMULA_REL),
        (ProductDtype::F32, TOL_METRICS_F32_REL),
    ] {
        for (degree, gamma, coef) in [(3, None, 1.0), (2, Some(0.3), 0.5)] {
            let opts = KidOptions {
                subsets: 1,
                subset_size: 40,
                degree,
                gamma,
                coef,
                seed: 7,
                dtype,
            };
            let got = kid(&g, &r, &opts).unwrap();
            let want = mmd2_direct(&g, &r, gamma.unwrap_or(1.0 / 12.0), coef, degree as i32);
            worst = worst.max(check(&format!("kid d={degree} {dtype:?}"), got.mean, want, tol));
            assert_eq!(got.std, 0.0, "one subset has no spread");
        }
    }
    // several tiles (7, 16 rows) exercise the radii's symmetric tiles; tiles of 2 and 1 rows
    // are smaller than k + 1
    for (k, tile, dtype) in [
        (3, 4096, ProductDtype::F64),
        (1, 7, ProductDtype::F64),
        (5, 16, ProductDtype::F64),
        (3, 7, ProductDtype::F32),
        (2, 40, ProductDtype::F32),
        (3, 2, ProductDtype::F64),
        (5, 1, ProductDtype::F32),
    ] {
        let got = precision_recall(&g, &r, &PrcOptions { k, tile, dtype }).unwrap();
        let (p, rc) = prc_direct(&g, &r, k);
        println!("  prc k={k} tile={tile} {dtype:?}: ours {got:?}, direct ({p}, {rc})");
        assert_eq!(
            (got.precision, got.recall),
            (p, rc),
            "k = {k}, tile = {tile}, {dtype:?}"
        );
    }
    // IS of confident, balanced predictions approaches the number of classes; of uniform ones, 1
    let c = 5;
    let mut sharp = vec![0f32; 50 * c];
    for i in 0..50 {
        sharp[i * c + i % c] = 40.0;
    }
    let opts = IsOptions {
        splits: 1,
        ..Default::default()
    };
    let s = inception_score(&Features::from_rows(c, sharp).unwrap(), &opts).unwrap();
    worst = worst.max(check("is one-hot balanced", s.mean, c as f64, 1e-12));
    let flat = inception_score(&Features::from_rows(c, vec![0.3; 50 * c]).unwrap(), &opts).unwrap();
    worst = worst.max(check("is uniform", flat.mean, 1.0, 1e-12));
    println!("worst: {worst:.2e}");
}

#[test]
fn kid_subsets_are_numpy_choice_draws() {
    let Ok(py) = std::env::var("TIW_PY") else {
        panic!("TIW_PY is not set: run the tests through `make test` (scripts/env.sh)")
    };
    let script = "import numpy as np\nr = np.random.RandomState(2020)\nfor n in (50, 1000, 70000):\n    print(' '.join(map(str, r.choice(n, 17, replace=False))))\n";
    let o = Command::new(py).arg("-c").arg(script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = String::from_utf8(o.stdout).unwrap();
    let mut rng = RandomState::new(2020);
    let got: Vec<String> = [50, 1000, 70000]
        .iter()
        .map(|&n| {
            let c = choice_without_replacement(&mut rng, n, 17);
            c.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(" ")
        })
        .collect();
    assert_eq!(got, want.lines().collect::<Vec<_>>());
    println!("3 × choice(n, 17, replace=False) identical to numpy");
}

/// torch-fidelity's values on the arrays of `inputs` (see the script), as `name value` lines.
fn torch_fidelity(inputs: &Path) -> Option<Vec<(String, f64)>> {
    let Ok(py) = std::env::var("TIW_TORCH_PY") else {
        println!("SKIPPED: TIW_TORCH_PY is not set (run through `make test`, which provides a full-torch venv with torch-fidelity)");
        return None;
    };
    // torch-fidelity's own metric functions on float64 tensors (float64: its kernels and
    // distances then run in f64 like ours, so the comparison is not bounded by f32 rounding)
    let script = r#"
import sys, numpy as np, torch
import torch_fidelity
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
assert torch_fidelity.__version__ == "0.4.0", torch_fidelity.__version__
a = np.load(sys.argv[1])
g, r, l = (torch.from_numpy(a[k]).double() for k in ("gen", "ref", "logits"))
kw = dict(verbose=False)
k = kid_features_to_metric(g, r, kid_subsets=6, kid_subset_size=30, rng_seed=2020, **kw)
print("kid", k["kernel_inception_distance_mean"]); print("kid_std", k["kernel_inception_distance_std"])
k = kid_features_to_metric(g, r, kid_subsets=4, kid_subset_size=45, rng_seed=11, kid_kernel_poly_degree=2,
                           kid_kernel_poly_gamma=0.25, kid_kernel_poly_coef0=0.5, **kw)
print("kid2", k["kernel_inception_distance_mean"]); print("kid2_std", k["kernel_inception_distance_std"])
for nb in (3, 5):
    p = prc_features_to_metric(g, r, prc_neighborhood=nb, prc_batch_size=10000, save_cpu_ram=False, **kw)
    print(f"precision_k{nb}", p["precision"]); print(f"recall_k{nb}", p["recall"])
for splits in (10, 3):
    s = isc_features_to_metric(l, splits=splits, shuffle=True, rng_seed=2020)
    print(f"is_{splits}", s["inception_score_mean"]); print(f"is_std_{splits}", s["inception_score_std"])
"#;
    let o = Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(inputs)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "torch-fidelity 0.4.0 in {py} (scripts/env.sh installs it into the full-torch venv):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect(),
    )
}

#[test]
fn kid_prc_is_match_torch_fidelity() {
    let (g, r) = (feats(57, 16, 3, 0.0), feats(64, 16, 4, 0.1));
    let logits = {
        let f = feats(53, 12, 5, 0.0);
        Features::from_rows(12, f.data.iter().map(|v| (v - 0.7) * 6.0).collect()).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs.npz");
    tiw::npz::write_f32(
        &inputs,
        &[
            ("gen".into(), vec![g.len(), g.dim], g.data.clone()),
            ("ref".into(), vec![r.len(), r.dim], r.data.clone()),
            (
                "logits".into(),
                vec![logits.len(), logits.dim],
                logits.data.clone(),
            ),
        ],
    )
    .unwrap();
    let Some(want) = torch_fidelity(&inputs) else {
        return;
    };
    let w = |k: &str| {
        want.iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .1
    };
    let mut worst = 0f64;
    for (dtype, tol) in [
        (ProductDtype::F64, TOL_METRICS_REL),
        (ProductDtype::F32, TOL_METRICS_F32_REL),
    ] {
        for (name, v) in kid_prc_rows(&g, &r, dtype) {
            worst = worst.max(check(&format!("{name} {dtype:?}"), v, w(&name), tol));
        }
    }
    let mut ours: Vec<(String, f64)> = Vec::new();
    for splits in [10, 3] {
        let s = inception_score(
            &logits,
            &IsOptions {
                splits,
                ..Default::default()
            },
        )
        .unwrap();
        ours.push((format!("is_{splits}"), s.mean));
        ours.push((format!("is_std_{splits}"), s.std));
    }
    for (name, v) in &ours {
        worst = worst.max(check(name, *v, w(name), TOL_METRICS_REL));
    }
    println!("worst vs torch-fidelity 0.4.0: {worst:.2e}");
}

/// Our KID (two option sets) and precision/recall (k = 3, 5) rows for the torch-fidelity
/// comparison, with the products in `dtype`.
fn kid_prc_rows(g: &Features, r: &Features, dtype: ProductDtype) -> Vec<(String, f64)> {
    let k1 = kid(
        g,
        r,
        &KidOptions {
            subsets: 6,
            subset_size: 30,
            dtype,
            ..Default::default()
        },
    )
    .unwrap();
    let k2 = kid(
        g,
        r,
        &KidOptions {
            subsets: 4,
            subset_size: 45,
            degree: 2,
            gamma: Some(0.25),
            coef: 0.5,
            seed: 11,
            dtype,
        },
    )
    .unwrap();
    let mut rows: Vec<(String, f64)> = vec![
        ("kid".into(), k1.mean),
        ("kid_std".into(), k1.std),
        ("kid2".into(), k2.mean),
        ("kid2_std".into(), k2.std),
    ];
    for k in [3, 5] {
        let pr = precision_recall(g, r, &PrcOptions { k, tile: 20, dtype }).unwrap();
        rows.push((format!("precision_k{k}"), pr.precision));
        rows.push((format!("recall_k{k}"), pr.recall));
    }
    rows
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stats_of(f: &Features) -> FeatureStats {
    let mut st = FeatureStats::new(f.dim);
    st.add_f32(&f.data);
    st
}

/// `name value` lines of a `tiw fid distance --metrics` run.
fn metric_lines(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn shards_merged_equal_one_pass() {
    let d = 24;
    let (all, reference) = (feats(90, d, 8, 0.0), feats(80, d, 9, 0.05));
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // two shards (rows 0..50 and 50..90) with their features, merged, vs one file
    let split = 50 * d;
    for (name, part) in [("a.npz", &all.data[..split]), ("b.npz", &all.data[split..])] {
        let f = Features::from_rows(d, part.to_vec()).unwrap();
        statsfile::write_partial_with(&p(name), &mut stats_of(&f), Some(&f)).unwrap();
    }
    statsfile::write_partial_with(&p("one.npz"), &mut stats_of(&all), Some(&all)).unwrap();
    statsfile::write_partial_with(&p("ref.npz"), &mut stats_of(&reference), Some(&reference)).unwrap();
    let (ok, _, err) = tiw(&[
        "fid",
        "merge",
        s(&p("a.npz")),
        s(&p("b.npz")),
        "--dest",
        s(&p("merged.npz")),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("(with features)"), "{err}");
    assert_eq!(
        statsfile::read_features(&p("merged.npz")).unwrap(),
        all,
        "features concatenated in order"
    );
    let metrics = [
        "--metrics",
        "fid,kid,prc",
        "--kid-subsets",
        "5",
        "--kid-subset-size",
        "40",
        "--prc-k",
        "3",
    ];
    let refp = p("ref.npz");
    let run = |a: &Path| {
        let mut args = vec!["fid", "distance", s(a), s(&refp)];
        args.extend_from_slice(&metrics);
        let (ok, out, err) = tiw(&args);
        assert!(ok, "{err}");
        metric_lines(&out)
    };
    let (merged, one) = (run(&p("merged.npz")), run(&p("one.npz")));
    println!("one pass: {one:?}");
    let names: Vec<&str> = one.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fid", "kid", "kid_std", "precision", "recall"]);
    // separate processes: libtorch may split a GEMM over a different number of threads
    // (MKL adapts them to the load), so KID can move in its last bits; counts are exact
    for ((n, a), (_, b)) in merged.iter().zip(&one) {
        check(&format!("merged {n}"), *a, *b, TOL_MERGE_REL);
    }
    // the same numbers as the library on the in-memory features
    let k = kid(
        &all,
        &reference,
        &KidOptions {
            subsets: 5,
            subset_size: 40,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((one[1].0.as_str(), one[2].0.as_str()), ("kid", "kid_std"));
    check("kid: cli vs library", one[1].1, k.mean, TOL_MERGE_REL);
    check("kid_std: cli vs library", one[2].1, k.std, TOL_MERGE_REL);
    // --metrics-dtype f32 reaches the library: its KID, within the f32 bound of f64's; the
    // same counts
    let one_path = p("one.npz");
    let f32_run = {
        let mut args = vec!["fid", "distance", s(&one_path), s(&refp)];
        args.extend_from_slice(&metrics);
        args.extend_from_slice(&["--metrics-dtype", "f32"]);
        let (ok, out, err) = tiw(&args);
        assert!(ok, "{err}");
        metric_lines(&out)
    };
    let k32 = kid(
        &all,
        &reference,
        &KidOptions {
            subsets: 5,
            subset_size: 40,
            dtype: ProductDtype::F32,
            ..Default::default()
        },
    )
    .unwrap();
    // another process may split the f32 GEMMs differently: the f32 bound, not TOL_MERGE_REL
    assert_eq!(f32_run[1].0, "kid");
    check(
        "kid f32: cli vs library",
        f32_run[1].1,
        k32.mean,
        TOL_METRICS_F32_REL,
    );
    for ((n, a), (m, b)) in f32_run.iter().zip(&one) {
        assert_eq!(n, m, "the same metric lines in both runs");
        check(&format!("{n}: f32 vs f64 products"), *a, *b, TOL_METRICS_F32_REL);
    }
    let mut args = vec!["fid", "distance", s(&one_path), s(&refp)];
    args.extend_from_slice(&["--metrics", "kid", "--metrics-dtype", "f16"]);
    let (ok, _, err) = tiw(&args);
    assert!(
        !ok && err.contains("f16") && err.contains("possible values: f64, f32"),
        "{err}"
    );
    // a merge with a part lacking features drops them, saying so
    statsfile::write_partial(&p("c.npz"), &mut stats_of(&reference)).unwrap();
    let (ok, _, err) = tiw(&[
        "fid",
        "merge",
        s(&p("a.npz")),
        s(&p("c.npz")),
        "--dest",
        s(&p("m2.npz")),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("has no features"), "{err}");
    assert!(statsfile::read_features(&p("m2.npz")).is_err());
}

#[test]
fn metrics_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (a, b16, small) = (feats(30, 8, 1, 0.0), feats(30, 16, 2, 0.0), feats(3, 8, 3, 0.0));
    statsfile::write_partial_with(&p("a.npz"), &mut stats_of(&a), Some(&a)).unwrap();
    statsfile::write_partial_with(&p("b16.npz"), &mut stats_of(&b16), Some(&b16)).unwrap();
    statsfile::write_partial_with(&p("small.npz"), &mut stats_of(&small), Some(&small)).unwrap();
    statsfile::write_partial(&p("nofeat.npz"), &mut stats_of(&a)).unwrap();
    // features whose row count contradicts n
    let mut st = stats_of(&a);
    let outer = st.sum_outer();
    statsfile::write_savez(
        &p("mismatch.npz"),
        &[
            ("n", statsfile::NpyArray::i64(vec![], &[30])),
            ("sum", statsfile::NpyArray::f64(vec![8], st.sum())),
            ("sum_outer", statsfile::NpyArray::f64(vec![8, 8], &outer)),
            (
                "features",
                statsfile::NpyArray::f32(vec![29, 8], &a.data[..29 * 8]),
            ),
        ],
    )
    .unwrap();
    let q = |n: &str| s(&p(n)).to_string();
    let (fa, fb16, fsmall, fnofeat, fmis) = (
        q("a.npz"),
        q("b16.npz"),
        q("small.npz"),
        q("nofeat.npz"),
        q("mismatch.npz"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![&fa, &fb16, "--metrics", "kid"], "dimension 8 but"),
        (
            vec![&fa, &fa, "--metrics", "kid", "--kid-subset-size", "31"],
            "subset size 31 is larger than the number of samples",
        ),
        (
            vec![&fa, &fsmall, "--metrics", "prc", "--prc-k", "3"],
            "3 reference feature vector(s); need at least 4",
        ),
        (vec![&fa, &fnofeat, "--metrics", "fid,kid"], "no `features` array"),
        (vec![&fa, &fa, "--metrics", "fid,kld"], "unknown metric \"kld\""),
        (
            vec![&fmis, &fa, "--metrics", "kid"],
            "do not match the statistics",
        ),
        (vec![&fa, &fa, "--metrics", "is"], "no FID detector"),
    ];
    for (args, want) in cases {
        let mut full = vec!["fid", "distance"];
        full.extend_from_slice(&args);
        let (ok, _, err) = tiw(&full);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
        println!(
            "  {:<60} -> {}",
            args[2..].join(" "),
            err.lines().last().unwrap_or("")
        );
    }
    // without --metrics, the bare FID line as before; features-only files work too
    statsfile::write_savez(
        &p("only.npz"),
        &[("features", statsfile::NpyArray::f32(vec![30, 8], &a.data))],
    )
    .unwrap();
    let (ok, out, err) = tiw(&["fid", "distance", s(&p("only.npz")), s(&p("a.npz"))]);
    assert!(ok, "{err}");
    let fid: f64 = out.trim().parse().unwrap();
    assert!(fid.abs() < 1e-9, "identical sets: {fid}");
}

fn png_rgb(data: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w as u32, h as u32);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    out
}

/// A tiny ONNX classifier made here: logits = the mean of each colour channel
/// (`[N,3,H,W] → [N,3]`), so the predicted class is the image's dominant channel.
fn write_channel_classifier(path: &Path) {
    use tiw_models::backend::Ops;
    use tiw_models::onnx_ops::{Dim, OnnxOps};
    let o = OnnxOps::new(17).unwrap();
    let n = Dim::Sym("N".into());
    let x = o.input(
        "images",
        &[
            n.clone(),
            Dim::Fixed(3),
            Dim::Sym("H".into()),
            Dim::Sym("W".into()),
        ],
    );
    let y = o
        .reshape(&o.mean_keepdim(&x, &[2, 3]).unwrap(), &[-1, 3])
        .unwrap();
    let model = o.finish(&[("logits", &y, vec![n, Dim::Fixed(3)])], &[]);
    tiw::onnx_export::write_onnx(&model, path).unwrap();
}

/// 10 images 4×4 into `dir`: 6 red-dominant, 3 green, 1 blue (noise keeps the other
/// channels lower).
fn write_channel_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let classes = [0, 0, 1, 0, 2, 1, 0, 0, 1, 0];
    for (i, &c) in classes.iter().enumerate() {
        let px: Vec<u8> = (0..16 * 3)
            .map(|j| {
                if j % 3 == c {
                    200
                } else {
                    ((i * 7 + j * 13) % 90) as u8
                }
            })
            .collect();
        std::fs::write(dir.join(format!("{i:02}.png")), png_rgb(&px, 4, 4)).unwrap();
    }
}

#[test]
fn eval_proportions_with_an_onnx_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    write_channel_classifier(&p("clf.onnx"));
    let imgs = p("imgs");
    write_channel_images(&imgs);
    std::fs::write(p("target.txt"), "# red green blue\n0.5, 0.3\n0.2\n").unwrap();
    let base = |runtime: &str, target: &str| -> Vec<String> {
        [
            "eval",
            "proportions",
            "--images",
            s(&imgs),
            "--classifier",
            s(&p("clf.onnx")),
            "--labels",
            "red,green,blue",
            "--runtime",
            runtime,
            "--target",
            target,
            "--bootstrap",
            "200",
            "--seed",
            "3",
            "--batch",
            "4",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let run = |args: &[String]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = tiw(&a);
        assert!(ok, "{err}");
        out
    };
    let target_file = s(&p("target.txt")).to_string();
    for (runtime, target, tv) in [
        (
            "tract",
            "uniform",
            0.5 * ((0.6 - 1.0 / 3.0) + (1.0 / 3.0 - 0.3) + (1.0 / 3.0 - 0.1)),
        ),
        ("ort", target_file.as_str(), 0.5 * (0.1 + 0.0 + 0.1)),
    ] {
        let out = run(&base(runtime, target));
        println!("{runtime}, target {target}:\n{out}");
        let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split(' ').collect()).collect();
        assert_eq!(lines.len(), 4);
        for (line, (name, count)) in lines.iter().zip([("red", "6"), ("green", "3"), ("blue", "1")]) {
            assert_eq!((line[0], line[1], line[2]), ("class", name, count), "{line:?}");
        }
        let v: Vec<f64> = lines[3][1..].iter().map(|x| x.parse().unwrap()).collect();
        assert_eq!(lines[3][0], "tv");
        check("tv", v[0], tv, 1e-12);
        assert!(v[1] <= v[2], "interval {v:?}");
        assert!(v[1] >= 0.0 && v[2] <= 1.0, "interval {v:?}");
    }
    // the library's bootstrap: the interval of a constant sample is a point
    let r = tiw::eval::proportions::proportion_report(&[1, 1, 1, 1], &[0.5, 0.5], 50, 1).unwrap();
    assert_eq!(r.tv_ci95, Some((0.5, 0.5)));
    // bad input
    std::fs::write(p("clf.pt"), b"not a model").unwrap();
    let mixed = p("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::write(mixed.join("a.png"), png_rgb(&[9; 4 * 4 * 3], 4, 4)).unwrap();
    std::fs::write(mixed.join("b.png"), png_rgb(&[9; 2 * 2 * 3], 2, 2)).unwrap();
    std::fs::write(p("short.txt"), "1 1").unwrap();
    let with = |i: usize, v: &str, args: &[String]| {
        let mut a = args.to_vec();
        a[i] = v.to_string();
        a
    };
    let uniform = base("tract", "uniform");
    let cases = [
        (
            with(5, s(&p("clf.pt")), &uniform),
            "only ONNX classifiers (.onnx) are supported",
        ),
        (
            with(7, "red,green", &uniform),
            "--labels names 2 classes but the classifier has 3",
        ),
        (
            with(11, s(&p("short.txt")), &uniform),
            "2 target proportions but the classifier has 3 classes",
        ),
        (with(3, s(&mixed), &uniform), "the classifier needs one size"),
        (with(3, s(&p("none")), &uniform), "no such file"),
    ];
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, err) = tiw(&a);
        assert!(!ok, "{args:?} succeeded");
        assert!(
            err.to_lowercase().contains(&want.to_lowercase()),
            "expected {want:?} in:\n{err}"
        );
        println!("  -> {}", err.lines().last().unwrap_or(""));
    }
}

/// `eval proportions` with a TorchScript classifier (`--runtime torchscript`, made by
/// `torch.jit.script` in the full-torch venv): the same lines as the ONNX classifier of the
/// same function on tract, for a module returning a tensor and one returning a tuple; an
/// ONNX file, a state dict and a `.pt` on an ONNX runtime are clear errors.
#[test]
fn eval_proportions_with_a_torchscript_classifier() {
    let Ok(py) = std::env::var("TIW_TORCH_PY") else {
        println!(
            "SKIPPED: TIW_TORCH_PY is not set (run through `make test`, which provides a full-torch venv)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let script = r#"
import sys, torch
class Mean(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))
class Pair(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)), x
torch.jit.save(torch.jit.script(Mean()), sys.argv[1])
torch.jit.save(torch.jit.script(Pair()), sys.argv[2])
"#;
    // torch.jit.script reads the class sources: the script must be a file, not `-c`
    std::fs::write(p("make_ts.py"), script).unwrap();
    let o = Command::new(&py)
        .args([s(&p("make_ts.py")), s(&p("mean.pt")), s(&p("pair.pt"))])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write_channel_classifier(&p("clf.onnx"));
    let imgs = p("imgs");
    write_channel_images(&imgs);
    let eval = |clf: &Path, runtime: &str| {
        let args = [
            "eval",
            "proportions",
            "--images",
            s(&imgs),
            "--classifier",
            s(clf),
            "--runtime",
            runtime,
            "--labels",
            "red,green,blue",
            "--bootstrap",
            "100",
            "--seed",
            "5",
            "--batch",
            "3",
        ];
        tiw(&args)
    };
    let (ok, want, err) = eval(&p("clf.onnx"), "tract");
    assert!(ok, "{err}");
    for module in ["mean.pt", "pair.pt"] {
        let (ok, got, err) = eval(&p(module), "torchscript");
        assert!(ok, "{module}: {err}");
        println!("{module}:\n{got}");
        assert_eq!(got, want, "{module} vs the ONNX classifier on tract");
        assert!(err.contains("TorchScript"), "{err}");
    }
    let state_dict = fixture("classifier/feature_extractor.pt");
    std::fs::write(p("garbage.pt"), b"not a model").unwrap();
    for (clf, runtime, want) in [
        (
            p("garbage.pt"),
            "torchscript",
            "as TorchScript: PytorchStreamReader",
        ),
        (p("none.pt"), "torchscript", "cannot read"),
        (p("mean.pt"), "tract", "--runtime torchscript"),
        (
            p("clf.onnx"),
            "torchscript",
            "an ONNX classifier runs with --runtime tract or ort",
        ),
        (
            state_dict.clone(),
            "torchscript",
            "a state dict or pickled model is not",
        ),
    ] {
        let (ok, _, err) = eval(&clf, runtime);
        assert!(!ok && !err.contains("panicked"), "{err}");
        assert!(
            err.contains(want) && err.contains(s(&clf)),
            "{want:?} missing:\n{err}"
        );
        println!("  -> {}", err.lines().last().unwrap_or(""));
    }
}

/// `tiw` with `args`, asserting success; stdout.
fn tiw_ok(args: &[&str]) -> String {
    let (ok, out, err) = tiw(args);
    assert!(ok, "tiw {args:?}:\n{err}");
    out
}

#[test]
fn inception_pass_keeps_features_over_shards_and_ranks() {
    let Some(w) = common::inception_weights() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // 9 images 32×32; folder `all` holds them all, `a` the first 5, `b` the last 4
    for f in ["all", "a", "b"] {
        std::fs::create_dir_all(p(f)).unwrap();
    }
    for i in 0..9 {
        let px: Vec<u8> = (0..32 * 32 * 3)
            .map(|j| ((j * (i + 3) + i * 41 + (j / 96) * 7) % 256) as u8)
            .collect();
        let png = png_rgb(&px, 32, 32);
        std::fs::write(p("all").join(format!("{i}.png")), &png).unwrap();
        std::fs::write(p(if i < 5 { "a" } else { "b" }).join(format!("{i}.png")), &png).unwrap();
    }
    let wp = s(&w).to_string();
    // batch 1: every image is its own detector call, so features do not depend on the split
    let det = ["--detector", wp.as_str(), "--batch", "1", "--quiet"];
    let stats = |images: &str, dest: &str| {
        let mut a = vec![
            "fid",
            "stats",
            "--keep-features",
            "--images",
            images,
            "--dest",
            dest,
        ];
        a.extend_from_slice(&det);
        tiw_ok(&a);
    };
    let (pa, pb, pall) = (p("a"), p("b"), p("all"));
    let (sa, sb, one, merged) = (p("a.npz"), p("b.npz"), p("one.npz"), p("merged.npz"));
    stats(s(&pa), s(&sa));
    stats(s(&pb), s(&sb));
    stats(s(&pall), s(&one));
    tiw_ok(&["fid", "merge", s(&sa), s(&sb), "--dest", s(&merged)]);
    // two ranks (tiw launch, Gloo): features gathered in subset order
    let two = p("two.npz");
    let mut a = vec![
        "launch",
        "--nproc-per-node",
        "2",
        "--",
        "fid",
        "stats",
        "--keep-features",
        "--images",
        s(&pall),
        "--dest",
        s(&two),
    ];
    a.extend_from_slice(&det);
    tiw_ok(&a);
    let f1 = statsfile::read_features(&one).unwrap();
    assert_eq!((f1.len(), f1.dim), (9, 2048));
    for (what, path) in [("2 shards merged", &merged), ("2 ranks", &two)] {
        let f = statsfile::read_features(path).unwrap();
        let err = f
            .data
            .iter()
            .zip(&f1.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        println!("  features, {what} vs one pass: max abs diff {err:.2e}");
        assert_eq!(f.len(), 9);
        assert!(err as f64 <= common::tolerances::TOL_FEAT_ABS, "{what}: {err}");
    }
    // a reference with features (`ref --metrics`), then calc's single pass vs distance
    let reference = p("ref.npz");
    let mut a = vec![
        "fid",
        "ref",
        "--data",
        s(&pb),
        "--dest",
        s(&reference),
        "--metrics",
        "fid,kid,prc",
    ];
    a.extend_from_slice(&det);
    tiw_ok(&a);
    assert_eq!(statsfile::read_features(&reference).unwrap().len(), 4);
    let m = [
        "--metrics",
        "fid,kid,prc,is",
        "--kid-subsets",
        "3",
        "--kid-subset-size",
        "4",
        "--prc-k",
        "2",
        "--is-splits",
        "3",
    ];
    let mut a = vec![
        "fid",
        "calc",
        "--images",
        s(&pall),
        "--ref",
        s(&reference),
        "--num",
        "9",
    ];
    a.extend_from_slice(&det);
    a.extend_from_slice(&m);
    let calc = metric_lines(&tiw_ok(&a));
    let lines = |stats: &Path| {
        let mut a = vec![
            "fid",
            "distance",
            s(stats),
            s(&reference),
            "--detector",
            wp.as_str(),
        ];
        a.extend_from_slice(&m);
        metric_lines(&tiw_ok(&a))
    };
    let names: Vec<&str> = calc.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["fid", "kid", "kid_std", "precision", "recall", "is", "is_std"]
    );
    println!("calc: {calc:?}");
    for stats in [&one, &merged, &two] {
        for ((n, a), (_, b)) in lines(stats).iter().zip(&calc) {
            // merged sums reach the rank-8 covariances in another f64 order, which the
            // low-rank FID amplifies; the features (everything else) are identical
            let tol = if n == "fid" { TOL_FID_REL } else { TOL_MERGE_REL };
            check(&format!("distance {n}"), *a, *b, tol);
        }
    }
    assert!(calc[5].1 >= 1.0, "IS ≥ 1");
}
