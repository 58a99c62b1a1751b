//! FID: Fréchet distance vs scipy (`fid/fid_cases.npz`, `fid_vs_ref_stats.npz`), the
//! reference `.npz` written byte for byte like `np.savez`, partial statistics and merging,
//! NumPy `RandomState` subset selection (vs numpy), image-set readers, the TF1 resize and
//! the Inception-v3 network on libtorch and ONNX Runtime vs torch-fidelity
//! (`fid/inception/`), and the `tiw fid` commands end to end and on bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use npyz::WriterBuilder;

use common::run_tiw as tiw;
use common::tolerances::{
    TOL_FEAT_ABS, TOL_FEAT_REL, TOL_FID_ABS_NEAR_0, TOL_FID_REL, TOL_FID_VS_BIASED_SQRTM_REL,
    TOL_INCEPTION_FID_ABS, TOL_INCEPTION_FID_REL, TOL_MERGE_REL, TOL_MU_ABS, TOL_RESIZE_ABS, TOL_SIGMA_ABS,
};
use common::{arr, fixture, read_npz, NpzArray};
use tiw::data::images::{self, ImageSet};
use tiw::data::random::{subset_indices, RandomState};
use tiw::fid::distance::{format_g, frechet_distance};
use tiw::fid::preprocess;
use tiw::fid::stats::{FeatureStats, MuSigma};
use tiw::fid::statsfile;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mu_sigma(f: &[NpzArray], prefix: &str) -> MuSigma {
    MuSigma {
        mu: arr(f, &format!("{prefix}mu")).to_f64(),
        sigma: arr(f, &format!("{prefix}sigma")).to_f64(),
    }
}

/// |a − b| ≤ rel·|b|, or ≤ abs (near 0). Returns the relative error (absolute when |b| < abs).
fn check_fid(what: &str, ours: f64, want: f64, rel: f64, abs: f64) -> f64 {
    let err = (ours - want).abs();
    let ok = err <= rel * want.abs() || err <= abs;
    let e = if want.abs() > abs { err / want.abs() } else { err };
    println!("  {what:<36} ours {ours:<24.16e} ref {want:<24.16e} err {e:.2e}");
    assert!(
        ok,
        "{what}: {ours} vs {want} (err {err:.3e}; tol rel {rel:.0e} / abs {abs:.0e})"
    );
    e
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn fid_cases_match_scipy() {
    let f = read_npz(&fixture("fid/fid_cases.npz"));
    let mut worst = (0f64, String::new());
    let mut routes = (0, 0);
    for dim in [16, 64] {
        for kind in ["generic", "identical", "rank_deficient"] {
            let c = format!("d{dim}_{kind}");
            let a = mu_sigma(&f, &format!("{c}_"));
            let b = MuSigma {
                mu: arr(&f, &format!("{c}_mu_ref")).to_f64(),
                sigma: arr(&f, &format!("{c}_sigma_ref")).to_f64(),
            };
            let want = arr(&f, &format!("{c}_fid")).to_f64()[0];
            let got = frechet_distance(&a, &b).unwrap().fid;
            let e = check_fid(&c, got, want, TOL_FID_REL, TOL_FID_ABS_NEAR_0);
            // the Cholesky route (Σ₁ positive definite) and the eigendecomposition route agree
            let eigh = tiw_fid_linalg::trace_sqrt_product_eigh(&a.sigma, &b.sigma, dim).unwrap();
            match tiw_fid_linalg::trace_sqrt_product_cholesky(&a.sigma, &b.sigma, dim) {
                Some(chol) => {
                    let chol = chol.unwrap();
                    println!(
                        "    cholesky route; vs eigh route: {:.1e}",
                        (chol - eigh).abs() / eigh
                    );
                    assert!((chol - eigh).abs() <= 1e-12 * eigh, "{c}: {chol} vs {eigh}");
                    routes.0 += 1;
                }
                None => {
                    println!("    eigh route (Σ₁ not positive definite)");
                    routes.1 += 1;
                }
            }
            if e > worst.0 {
                worst = (e, c);
            }
        }
    }
    println!("worst: {:.2e} ({})", worst.0, worst.1);
    assert!(routes.0 > 0 && routes.1 > 0, "both routes exercised: {routes:?}");
}

#[test]
fn fid_against_reference_file() {
    let f = read_npz(&fixture("fid/fid_cases.npz"));
    let r = statsfile::read_mu_sigma(&fixture("fid/ref_stats_d64.npz")).unwrap();
    assert_eq!(r.dim(), 64);
    let want = arr(&read_npz(&fixture("fid/fid_vs_ref_stats.npz")), "fid").to_f64()[0];
    let got = frechet_distance(&mu_sigma(&f, "d64_generic_"), &r).unwrap().fid;
    check_fid(
        "d64_generic vs ref_stats_d64.npz",
        got,
        want,
        TOL_FID_REL,
        TOL_FID_ABS_NEAR_0,
    );
    // the command prints it with %g
    let a = tempfile::tempdir().unwrap();
    let pa = a.path().join("a.npz");
    statsfile::write_reference(&pa, &mu_sigma(&f, "d64_generic_")).unwrap();
    let (ok, out, err) = tiw(&["fid", "distance", s(&pa), s(&fixture("fid/ref_stats_d64.npz"))]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format_g(want), "printed FID");
    assert_eq!(out.trim(), "189.128");
}

#[test]
fn reference_npz_is_byte_identical_to_numpy_savez() {
    let path = fixture("fid/ref_stats_d64.npz");
    let r = statsfile::read_mu_sigma(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub/ref.npz");
    statsfile::write_reference(&out, &r).unwrap();
    let (a, b) = (std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
    assert_eq!(a.len(), b.len(), "size");
    assert!(
        a == b,
        "bytes differ from np.savez at offset {}",
        a.iter().zip(&b).position(|(x, y)| x != y).unwrap()
    );
    println!("ref_stats_d64.npz rewritten: {} bytes, identical", a.len());
}

#[test]
fn reference_npz_2048_layout_matches_numpy() {
    // a full-size file as fid.py ref writes it: numpy reads it back and the bytes equal np.savez
    let Ok(py) = std::env::var("TIW_PY") else {
        panic!("TIW_PY is not set: run the tests through `make test` (scripts/env.sh)")
    };
    let d = 2048;
    let mu: Vec<f64> = (0..d).map(|i| (i as f64 * 0.37).sin()).collect();
    let sigma: Vec<f64> = (0..d * d)
        .map(|k| ((k / d) as f64 * 0.01 - (k % d) as f64 * 0.02).cos() * 1e-3)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    statsfile::write_reference(&ours, &MuSigma { mu, sigma }).unwrap();
    let theirs = dir.path().join("theirs.npz");
    let script = "import sys, numpy as np\nd = dict(np.load(sys.argv[1]))\nassert d['mu'].shape == (2048,) and d['sigma'].shape == (2048, 2048)\nnp.savez(sys.argv[2], mu=d['mu'], sigma=d['sigma'])\n";
    let o = Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(&ours)
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        std::fs::read(&ours).unwrap() == std::fs::read(&theirs).unwrap(),
        "2048-d file differs from np.savez"
    );
}

/// Deterministic pseudo-random f32 features.
fn features(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n * d)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 3.0
        })
        .collect()
}

#[test]
fn partial_statistics_merge_and_match_direct_formula() {
    let (n, d) = (1500, 40);
    let f = features(n, d, 7);
    // direct f64: mu = Σf/n, sigma = (Σffᵀ − (mu muᵀ)·n)/(n − 1)
    let mut sum = vec![0f64; d];
    let mut outer = vec![0f64; d * d];
    for r in f.chunks(d) {
        for i in 0..d {
            sum[i] += r[i] as f64;
            for j in 0..d {
                outer[i * d + j] += r[i] as f64 * r[j] as f64;
            }
        }
    }
    let mu: Vec<f64> = sum.iter().map(|x| x / n as f64).collect();
    let sigma: Vec<f64> = (0..d * d)
        .map(|k| (outer[k] - mu[k / d] * mu[k % d] * n as f64) / (n as f64 - 1.0))
        .collect();
    let mut whole = FeatureStats::new(d);
    whole.add_f32(&f);
    let w = whole.mu_sigma().unwrap();
    let e_mu = max_abs(&w.mu, &mu);
    let e_sigma = max_abs(&w.sigma, &sigma) / sigma.iter().fold(0f64, |m, x| m.max(x.abs()));
    println!("one pass vs direct: mu {e_mu:.2e}, sigma {e_sigma:.2e} (rel)");
    assert!(e_mu < 1e-12 && e_sigma < TOL_MERGE_REL);
    // three parts through files, merged by the command
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (k, part) in [0..700usize, 700..701, 701..1500].into_iter().enumerate() {
        let mut st = FeatureStats::new(d);
        st.add_f32(&f[part.start * d..part.end * d]);
        let p = dir.path().join(format!("part{k}.npz"));
        statsfile::write_partial(&p, &mut st).unwrap();
        paths.push(p);
    }
    let merged = dir.path().join("merged.npz");
    let merged_ref = dir.path().join("merged_ref.npz");
    let (ok, _, err) = tiw(&[
        "fid",
        "merge",
        s(&paths[0]),
        s(&paths[1]),
        s(&paths[2]),
        "--dest",
        s(&merged),
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = tiw(&[
        "fid",
        "merge",
        s(&paths[0]),
        s(&paths[1]),
        s(&paths[2]),
        "--dest",
        s(&merged_ref),
        "--mu-sigma",
    ]);
    assert!(ok, "{err}");
    let m = statsfile::read_mu_sigma(&merged).unwrap();
    let mr = statsfile::read_mu_sigma(&merged_ref).unwrap();
    assert_eq!(m, mr, "partial file and --mu-sigma agree");
    let e = max_abs(&m.sigma, &w.sigma) / w.sigma.iter().fold(0f64, |a, x| a.max(x.abs()));
    println!(
        "merged vs one pass: sigma {e:.2e} (rel), mu {:.2e}",
        max_abs(&m.mu, &w.mu)
    );
    assert!(e < TOL_MERGE_REL && max_abs(&m.mu, &w.mu) < 1e-12);
    match statsfile::read(&merged).unwrap() {
        statsfile::StatsFile::Partial(p) => assert_eq!(p.count(), n as u64),
        _ => panic!("merge wrote a reference layout"),
    }
    // distance accepts both layouts: partial vs itself = 0
    let (ok, out, err) = tiw(&["fid", "distance", s(&merged), s(&merged_ref)]);
    assert!(ok, "{err}");
    assert!(out.trim().parse::<f64>().unwrap().abs() < 1e-9, "{out}");
    // a reference file cannot be merged; different dimensions cannot be merged
    let (ok, _, err) = tiw(&[
        "fid",
        "merge",
        s(&merged_ref),
        "--dest",
        s(&dir.path().join("x.npz")),
    ]);
    assert!(!ok && err.contains("cannot be merged"), "{err}");
    let mut other = FeatureStats::new(8);
    other.add_f32(&features(3, 8, 1));
    let p8 = dir.path().join("d8.npz");
    statsfile::write_partial(&p8, &mut other).unwrap();
    let (ok, _, err) = tiw(&[
        "fid",
        "merge",
        s(&paths[0]),
        s(&p8),
        "--dest",
        s(&dir.path().join("x.npz")),
    ]);
    assert!(!ok && err.contains("dimension"), "{err}");
}

#[test]
fn random_state_subset_matches_numpy() {
    let Ok(py) = std::env::var("TIW_PY") else {
        panic!("TIW_PY is not set: run the tests through `make test` (scripts/env.sh)")
    };
    let cases: [(usize, usize, i64); 7] = [
        (10, 5, 0),
        (100, 37, 1),
        (1000, 10, 123),
        (17, 16, 4294967295),
        (5000, 4999, 2147483648),
        (70000, 50000, 0),
        (3, 2, -5),
    ];
    let script = "import sys, numpy as np\nfor c in sys.argv[1:]:\n    n, m, s = map(int, c.split(','))\n    idx = np.arange(n, dtype=np.int64)\n    np.random.RandomState(s % (1 << 31)).shuffle(idx)\n    print(' '.join(map(str, np.sort(idx[:m]))))\n";
    let args: Vec<String> = cases.iter().map(|(n, m, s)| format!("{n},{m},{s}")).collect();
    let o = Command::new(&py)
        .arg("-c")
        .arg(script)
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for ((n, m, seed), line) in cases.iter().zip(text.lines()) {
        let want: Vec<usize> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(
            subset_indices(*n, Some(*m), *seed),
            want,
            "n={n} num={m} seed={seed}"
        );
        println!("  subset n={n} num={m} seed={seed}: identical to numpy");
    }
    // raw draws and a full shuffle
    let o = Command::new(&py)
        .arg("-c")
        .arg("import numpy as np\nr = np.random.RandomState(20261128)\nprint(' '.join(map(str, r.randint(0, 2**32, size=5, dtype=np.uint64))))\nx = np.arange(12)\nnp.random.RandomState(7).shuffle(x)\nprint(' '.join(map(str, x)))\n")
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    let mut r = RandomState::new(20261128);
    let want: Vec<u64> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    // randint(0, 2**32, uint64) draws masked 32-bit values (mask 2^32-1 → next_u32 each)
    let got: Vec<u64> = (0..5).map(|_| r.next_u32() as u64).collect();
    assert_eq!(got, want, "MT19937 outputs");
    let mut x: Vec<usize> = (0..12).collect();
    RandomState::new(7).shuffle(&mut x);
    let want: Vec<usize> = lines
        .next()
        .unwrap()
        .split(' ')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(x, want, "shuffle");
    // no subset when the set is not larger than num
    assert_eq!(subset_indices(5, Some(5), 3), vec![0, 1, 2, 3, 4]);
    assert_eq!(subset_indices(5, None, 3), vec![0, 1, 2, 3, 4]);
}

fn png_bytes(data: &[u8], w: usize, h: usize, color: png::ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, w as u32, h as u32);
        e.set_color(color);
        e.set_depth(png::BitDepth::Eight);
        let mut wr = e.write_header().unwrap();
        wr.write_image_data(data).unwrap();
    }
    out
}

/// `[N,3,H,W]` uint8 → per-image HWC bytes.
fn nchw_to_hwc(a: &NpzArray) -> Vec<(usize, usize, Vec<u8>)> {
    let (n, c, h, w) = (a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
    let bytes = a.le_bytes();
    (0..n)
        .map(|i| {
            let mut d = vec![0u8; h * w * c];
            for ch in 0..c {
                for p in 0..h * w {
                    d[p * c + ch] = bytes[((i * c + ch) * h * w) + p];
                }
            }
            (h, w, d)
        })
        .collect()
}

#[test]
fn image_sets_dir_zip_npz() {
    // EDM dataset.zip vs the images ImageFolderDataset decoded
    let items = read_npz(&fixture("dataset/dataset_items.npz"));
    let src_bytes = arr(&items, "source_images_nhwc").le_bytes();
    let set = ImageSet::open(&fixture("dataset/dataset.zip")).unwrap();
    assert_eq!(set.len(), 20);
    assert_eq!(set.name(0), "00000/img00000000.png");
    let mut r = set.reader().unwrap();
    for i in 0..20 {
        let img = r.load(i).unwrap();
        assert_eq!((img.height, img.width, img.channels), (8, 8, 3));
        assert_eq!(
            img.data,
            src_bytes[i * 192..(i + 1) * 192],
            "dataset.zip image {i}"
        );
    }
    // stored (np.savez) and deflated (np.savez_compressed) `samples`
    for f in ["dataset/real_data.npz", "dataset/fake_data.npz"] {
        let a = read_npz(&fixture(f));
        let samples = arr(&a, "samples");
        let sample_bytes = samples.le_bytes();
        let set = ImageSet::open(&fixture(f)).unwrap();
        assert_eq!(set.len(), samples.shape[0]);
        let mut r = set.reader().unwrap();
        let per = 16 * 16 * 3;
        for i in (0..set.len()).rev() {
            assert_eq!(
                r.load(i).unwrap().data,
                sample_bytes[i * per..(i + 1) * per],
                "{f} image {i}"
            );
        }
    }
    // a folder: recursive, sorted by relative path, non-image files ignored; gray images
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
    let gray: Vec<u8> = (0..30).map(|v| (v * 7) as u8).collect();
    std::fs::write(
        dir.path().join("b/c/z.PNG"),
        png_bytes(&gray, 6, 5, png::ColorType::Grayscale),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.png"),
        png_bytes(&[1u8; 2 * 2 * 3], 2, 2, png::ColorType::Rgb),
    )
    .unwrap();
    std::fs::write(dir.path().join("b/notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join(".png"), b"hidden, no extension").unwrap();
    let set = ImageSet::open(dir.path()).unwrap();
    assert_eq!(
        (set.len(), set.name(0), set.name(1)),
        (2, "a.png".to_string(), "b/c/z.PNG".to_string())
    );
    let img = set.reader().unwrap().load(1).unwrap();
    assert_eq!(
        (img.width, img.height, img.channels, img.data.clone()),
        (6, 5, 1, gray)
    );
    // palette images expand to RGB
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, 2, 1);
        e.set_color(png::ColorType::Indexed);
        e.set_depth(png::BitDepth::Eight);
        e.set_palette(vec![10, 20, 30, 40, 50, 60]);
        e.write_header().unwrap().write_image_data(&[1, 0]).unwrap();
    }
    assert_eq!(images::decode(&out).unwrap().data, vec![40, 50, 60, 10, 20, 30]);
    // errors: alpha, corrupt, not a PNG
    let e = images::decode(&png_bytes(&[0u8; 4], 1, 1, png::ColorType::Rgba)).unwrap_err();
    assert!(format!("{e:#}").contains("alpha"), "{e:#}");
    let mut bad = png_bytes(&[9u8; 48], 4, 4, png::ColorType::Rgb);
    bad.truncate(bad.len() - 20);
    assert!(format!("{:#}", images::decode(&bad).unwrap_err()).contains("corrupt PNG"));
    assert!(format!("{:#}", images::decode(b"GIF89a....").unwrap_err()).contains("not a PNG"));
    std::fs::write(dir.path().join("b/broken.png"), &bad).unwrap();
    let set = ImageSet::open(dir.path()).unwrap();
    let e = set.reader().unwrap().load(1).unwrap_err();
    assert!(format!("{e:#}").contains("b/broken.png"), "names the file: {e:#}");
}

#[test]
fn tf1_resize_matches_fixture_bit_for_bit() {
    let inputs = read_npz(&fixture("fid/inception/inputs.npz"));
    let expected = read_npz(&fixture("fid/inception/expected.npz"));
    let want = arr(&expected, "resized_299").to_f32();
    let per = 3 * 299 * 299;
    let mut worst = 0f64;
    for (row, key) in [(0, "images32"), (1, "images64")] {
        let (h, w, data) = nchw_to_hwc(arr(&inputs, key)).swap_remove(0);
        let img = images::Image {
            width: w,
            height: h,
            channels: 3,
            data,
        };
        let mut out = vec![0f32; per];
        preprocess::resize_normalize(&img, &mut out);
        let reference = &want[row * per..(row + 1) * per];
        let e = out
            .iter()
            .zip(reference)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
        let exact = out.iter().zip(reference).all(|(a, b)| a.to_bits() == b.to_bits());
        println!("  resized_299[{row}] ({key}[0]): max abs err {e:.2e}, bit-exact: {exact} (tol {TOL_RESIZE_ABS:.0e})");
        assert!(e <= TOL_RESIZE_ABS);
        worst = worst.max(e);
    }
    // one channel is repeated to three
    let img = images::Image {
        width: 3,
        height: 2,
        channels: 1,
        data: vec![0, 50, 100, 150, 200, 250],
    };
    let mut out = vec![0f32; per];
    preprocess::resize_normalize(&img, &mut out);
    assert!(out[..299 * 299] == out[299 * 299..2 * 299 * 299] && out[..299 * 299] == out[2 * 299 * 299..]);
    assert_eq!(out[0], -1.0);
    println!("worst resize error {worst:.2e}");
}

/// Stats of `[n, 2048]` f32 features as fid.py accumulates them.
fn stats_of(f: &[f32]) -> MuSigma {
    let mut st = FeatureStats::new(2048);
    st.add_f32(f);
    st.mu_sigma().unwrap()
}

fn feature_err(ours: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(ours.len(), want.len());
    let mut worst_excess = f64::NEG_INFINITY;
    let mut worst_abs = 0f64;
    for (a, b) in ours.iter().zip(want) {
        let d = (*a as f64 - *b as f64).abs();
        worst_abs = worst_abs.max(d);
        worst_excess = worst_excess.max(d - (TOL_FEAT_ABS + TOL_FEAT_REL * (*b as f64).abs()));
    }
    (worst_abs, worst_excess)
}

/// Checks features + statistics + FID of one runtime's features against expected.npz.
fn check_inception_outputs(rt: &str, feats32: &[f32], feats64: &[f32], expected: &[NpzArray]) -> f64 {
    let mut worst = 0f64;
    for (key, ours) in [("features32", feats32), ("features64", feats64)] {
        let (a, excess) = feature_err(ours, &arr(expected, key).to_f32());
        println!(
            "  {rt:<4} {key:<12} max abs err {a:.2e} (tol {TOL_FEAT_ABS:.0e} + {TOL_FEAT_REL:.0e}·|ref|)"
        );
        assert!(
            excess <= 0.0,
            "{rt} {key}: error exceeds the tolerance by {excess:.3e}"
        );
        worst = worst.max(a);
    }
    let all = stats_of(feats32);
    let mu_err = max_abs(&all.mu, &arr(expected, "mu").to_f64());
    let diag: Vec<f64> = (0..2048).map(|i| all.sigma[i * 2048 + i]).collect();
    let block: Vec<f64> = (0..64 * 64)
        .map(|k| all.sigma[(k / 64) * 2048 + k % 64])
        .collect();
    let sig_err = max_abs(&diag, &arr(expected, "sigma_diag").to_f64())
        .max(max_abs(&block, &arr(expected, "sigma_block64").to_f64()));
    println!("  {rt:<4} mu max abs err {mu_err:.2e} (tol {TOL_MU_ABS:.0e}), sigma diag/block64 {sig_err:.2e} (tol {TOL_SIGMA_ABS:.0e})");
    assert!(mu_err <= TOL_MU_ABS && sig_err <= TOL_SIGMA_ABS);
    let (a, b) = (stats_of(&feats32[..4 * 2048]), stats_of(&feats32[4 * 2048..]));
    assert!(max_abs(&a.mu, &arr(expected, "mu_0_3").to_f64()) <= TOL_MU_ABS);
    assert!(max_abs(&b.mu, &arr(expected, "mu_4_7").to_f64()) <= TOL_MU_ABS);
    let fid = frechet_distance(&a, &b).unwrap();
    let exact = exact_low_rank_fid(&arr(expected, "features32").to_f32());
    check_fid(
        &format!("{rt} FID 0-3 vs 4-7 (exact, rank 3)"),
        fid.fid,
        exact,
        TOL_INCEPTION_FID_REL,
        TOL_INCEPTION_FID_ABS,
    );
    let edm = arr(expected, "fid_0_3_vs_4_7").to_f64()[0];
    check_fid(
        &format!("{rt} FID 0-3 vs 4-7 (EDM sqrtm)"),
        fid.fid,
        edm,
        TOL_FID_VS_BIASED_SQRTM_REL,
        0.0,
    );
    let eigh = arr(expected, "fid_0_3_vs_4_7_eigh").to_f64()[0];
    check_fid(
        &format!("{rt} FID 0-3 vs 4-7 (numpy eigh)"),
        fid.fid,
        eigh,
        TOL_FID_VS_BIASED_SQRTM_REL,
        0.0,
    );
    let mean = arr(expected, "fid_0_3_vs_4_7_mean_term").to_f64()[0];
    check_fid(
        &format!("{rt} |mu1-mu2|^2"),
        fid.mean_term,
        mean,
        TOL_INCEPTION_FID_REL,
        TOL_INCEPTION_FID_ABS,
    );
    worst
}

/// The FID of rows 0..4 vs 4..8 of `[8, 2048]` features, exactly for rank-3 covariances:
/// `tr √(Σ₁Σ₂)` = nuclear norm of `G = X₁X₂ᵀ/3` (X centred), i.e. `Σ √λ(G Gᵀ)` of a 4×4.
fn exact_low_rank_fid(f: &[f32]) -> f64 {
    let rows = |r: std::ops::Range<usize>| -> (Vec<f64>, Vec<Vec<f64>>) {
        let x: Vec<Vec<f64>> = r
            .map(|i| f[i * 2048..(i + 1) * 2048].iter().map(|&v| v as f64).collect())
            .collect();
        let mu: Vec<f64> = (0..2048)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / 4.0)
            .collect();
        let xc = x
            .iter()
            .map(|r| r.iter().zip(&mu).map(|(a, m)| a - m).collect())
            .collect();
        (mu, xc)
    };
    let ((ma, xa), (mb, xb)) = (rows(0..4), rows(4..8));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mean: f64 = ma.iter().zip(&mb).map(|(a, b)| (a - b) * (a - b)).sum();
    let tr = |x: &[Vec<f64>]| x.iter().map(|r| dot(r, r)).sum::<f64>() / 3.0;
    let g: Vec<f64> = (0..16).map(|k| dot(&xa[k / 4], &xb[k % 4]) / 3.0).collect();
    let ggt: Vec<f64> = (0..16)
        .map(|k| (0..4).map(|l| g[(k / 4) * 4 + l] * g[(k % 4) * 4 + l]).sum())
        .collect();
    let ev = tiw_fid_linalg::symmetric_eigenvalues(&ggt, 4).unwrap();
    let nuclear: f64 = ev.iter().map(|&l| l.max(0.0).sqrt()).sum();
    mean + tr(&xa) + tr(&xb) - 2.0 * nuclear
}

/// Preprocessed `[n,3,299,299]` input of an NCHW uint8 array.
fn preprocessed(a: &NpzArray) -> Vec<f32> {
    let per = 3 * 299 * 299;
    let imgs = nchw_to_hwc(a);
    let mut x = vec![0f32; imgs.len() * per];
    for (k, (h, w, d)) in imgs.into_iter().enumerate() {
        let img = images::Image {
            width: w,
            height: h,
            channels: 3,
            data: d,
        };
        preprocess::resize_normalize(&img, &mut x[k * per..(k + 1) * per]);
    }
    x
}

#[test]
fn inception_features_on_libtorch_and_onnx_runtime() {
    use tiw::device::DeviceSpec;
    use tiw::fid::detector::{Detector, DetectorRuntime};
    let Some(w) = common::inception_weights() else {
        return;
    };
    let inputs = read_npz(&fixture("fid/inception/inputs.npz"));
    let expected = read_npz(&fixture("fid/inception/expected.npz"));
    let (x32, x64) = (
        preprocessed(arr(&inputs, "images32")),
        preprocessed(arr(&inputs, "images64")),
    );
    // libtorch, with the intermediate taps
    let (store, _) = tiw_models::load::read(&w).unwrap();
    let o = tiw_models::tch_ops::TchOps::new(tch::Device::Cpu);
    let net = tiw_models::inception::FidInception::from_store(&o, &store).unwrap();
    let _g = tch::no_grad_guard();
    let run = |x: &[f32], n: i64| {
        let t = tiw_models::tch_ops::TchTensor(tch::Tensor::from_slice(x).reshape([n, 3, 299, 299]));
        let taps = net.forward_taps(&o, &t).unwrap();
        let v =
            |t: &tiw_models::tch_ops::TchTensor| Vec::<f32>::try_from(&t.0.contiguous().view(-1)).unwrap();
        (
            v(&taps.pool64),
            v(&taps.pool192),
            v(&taps.pool768),
            v(&taps.pool3),
        )
    };
    let t32 = run(&x32, 8);
    let t64 = run(&x64, 4);
    for (set, t) in [("32", &t32), ("64", &t64)] {
        for (tap, ours) in [("pool64", &t.0), ("pool192", &t.1), ("pool768", &t.2)] {
            let key = format!("features{set}_{tap}");
            let (a, excess) = feature_err(ours, &arr(&expected, &key).to_f32());
            println!("  tch  {key:<20} max abs err {a:.2e}");
            assert!(
                excess <= 0.0,
                "{key}: error exceeds the tolerance by {excess:.3e}"
            );
        }
    }
    let worst_tch = check_inception_outputs("tch", &t32.3, &t64.3, &expected);
    drop(net);
    // ONNX Runtime through the detector used by `tiw fid` (in-memory export)
    let mut det = Detector::load(&w, DetectorRuntime::Ort, DeviceSpec::Cpu).unwrap();
    let f32s = det.features(x32, 8).unwrap();
    let f64s = det.features(x64, 4).unwrap();
    let worst_ort = check_inception_outputs("ort", &f32s, &f64s, &expected);
    println!("worst feature abs error: tch {worst_tch:.2e}, ort {worst_ort:.2e}");
    // the exported graph: parameter count (BatchNorm folded, fc dropped) and the ONNX checker
    let m = tiw_models::inception::export_onnx(&store, 17, &[]).unwrap();
    assert_eq!(
        m.parameter_count(),
        23885392 - 2048 * 1008 - 1008 - bn_folded_count(&store)
    );
    let Ok(py) = std::env::var("TIW_PY") else {
        panic!("TIW_PY is not set: run the tests through `make test` (scripts/env.sh)")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inception.onnx");
    std::fs::write(&path, m.to_bytes().unwrap()).unwrap();
    let o = Command::new(py)
        .arg("-c")
        .arg("import sys, onnx\nonnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)\n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "onnx.checker: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Parameters removed by folding BatchNorm: per conv, 4 BN vectors become 1 bias.
fn bn_folded_count(store: &tiw_converters::TensorStore) -> usize {
    store
        .entries()
        .iter()
        .filter(|e| e.name.ends_with(".bn.running_mean"))
        .map(|e| e.shape[0] * 3)
        .sum()
}

/// Writes the 8 `images32` as a PNG folder, a stored zip of images 4..8 (EDM layout) and an
/// npz (`images`, NHWC) of images 0..4.
fn write_image_sets(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let inputs = read_npz(&fixture("fid/inception/inputs.npz"));
    let imgs = nchw_to_hwc(arr(&inputs, "images32"));
    let folder = dir.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    for (i, (h, w, d)) in imgs.iter().enumerate() {
        std::fs::write(
            folder.join(format!("{i:06}.png")),
            png_bytes(d, *w, *h, png::ColorType::Rgb),
        )
        .unwrap();
    }
    let zip_path = dir.join("dataset.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (i, (h, w, d)) in imgs.iter().enumerate().skip(4) {
            z.start_file(format!("00000/img{i:08}.png"), o).unwrap();
            std::io::Write::write_all(&mut z, &png_bytes(d, *w, *h, png::ColorType::Rgb)).unwrap();
        }
        z.start_file("dataset.json", o).unwrap();
        std::io::Write::write_all(&mut z, b"{\"labels\": null}").unwrap();
        z.finish().unwrap();
    }
    let npz_path = dir.join("samples.npz");
    {
        let mut npz =
            npyz::npz::NpzWriter::new(std::io::BufWriter::new(std::fs::File::create(&npz_path).unwrap()));
        let mut wr = npz
            .array::<u8>("images", Default::default())
            .unwrap()
            .default_dtype()
            .shape(&[4, 32, 32, 3])
            .begin_nd()
            .unwrap();
        for (_, _, d) in imgs.iter().take(4) {
            wr.extend(d.iter().copied()).unwrap();
        }
        wr.finish().unwrap();
        npz.zip_writer().finish().unwrap();
    }
    (folder, zip_path, npz_path)
}

#[test]
fn fid_commands_end_to_end() {
    let Some(w) = common::inception_weights() else {
        return;
    };
    let expected = read_npz(&fixture("fid/inception/expected.npz"));
    let dir = tempfile::tempdir().unwrap();
    let (folder, zip_path, npz_path) = write_image_sets(dir.path());
    let det = ["--detector", s(&w), "--quiet"];
    // fid.py ref: mu/sigma of all 8 images
    let ref_path = dir.path().join("out/ref.npz");
    let mut args = vec![
        "fid",
        "ref",
        "--data",
        s(&folder),
        "--dest",
        s(&ref_path),
        "--batch",
        "3",
    ];
    args.extend(det);
    let (ok, _, err) = tiw(&args);
    assert!(ok, "{err}");
    let r = statsfile::read_mu_sigma(&ref_path).unwrap();
    let mu_err = max_abs(&r.mu, &arr(&expected, "mu").to_f64());
    let diag: Vec<f64> = (0..2048).map(|i| r.sigma[i * 2048 + i]).collect();
    let sig_err = max_abs(&diag, &arr(&expected, "sigma_diag").to_f64());
    println!("  fid ref (folder, ort): mu err {mu_err:.2e}, sigma diag err {sig_err:.2e}");
    assert!(mu_err <= TOL_MU_ABS && sig_err <= TOL_SIGMA_ABS);
    // partial statistics of the two halves (npz on libtorch, zip on ort), merged = the reference
    let (pa, pb, merged) = (
        dir.path().join("a.npz"),
        dir.path().join("b.npz"),
        dir.path().join("m.npz"),
    );
    let mut args = vec![
        "fid",
        "stats",
        "--images",
        s(&npz_path),
        "--dest",
        s(&pa),
        "--runtime",
        "tch",
    ];
    args.extend(det);
    let (ok, _, err) = tiw(&args);
    assert!(ok, "{err}");
    let mut args = vec![
        "fid",
        "stats",
        "--images",
        s(&zip_path),
        "--dest",
        s(&pb),
        "--workers",
        "2",
        "--batch",
        "1",
    ];
    args.extend(det);
    let (ok, _, err) = tiw(&args);
    assert!(ok, "{err}");
    let (ok, _, err) = tiw(&["fid", "merge", s(&pa), s(&pb), "--dest", s(&merged)]);
    assert!(ok, "{err}");
    let m = statsfile::read_mu_sigma(&merged).unwrap();
    println!(
        "  merged halves vs ref: mu {:.2e}, sigma {:.2e}",
        max_abs(&m.mu, &r.mu),
        max_abs(&m.sigma, &r.sigma)
    );
    assert!(max_abs(&m.mu, &r.mu) <= TOL_MU_ABS && max_abs(&m.sigma, &r.sigma) <= TOL_SIGMA_ABS);
    // FID of the halves, printed with %g
    let (ok, out, err) = tiw(&["fid", "distance", s(&pa), s(&pb)]);
    assert!(ok, "{err}");
    let printed: f64 = out.trim().parse().unwrap();
    let exact = exact_low_rank_fid(&arr(&expected, "features32").to_f32());
    println!(
        "  fid distance halves: {} (exact {exact}; EDM's sqrtm {})",
        out.trim(),
        arr(&expected, "fid_0_3_vs_4_7").to_f64()[0]
    );
    assert_eq!(out.trim(), format_g(exact), "6 significant digits agree");
    assert!((printed - exact).abs() <= 1e-5 * exact);
    // fid.py calc: a 4-image random subset of the folder against the reference, with the
    // detector exported to an .onnx file first
    let onnx = dir.path().join("inception.onnx");
    let (ok, _, err) = tiw(&["fid", "export", "--detector", s(&w), "--dest", s(&onnx)]);
    assert!(ok, "{err}");
    let args = [
        "fid",
        "calc",
        "--images",
        s(&folder),
        "--ref",
        s(&ref_path),
        "--num",
        "4",
        "--seed",
        "3",
        "--detector",
        s(&onnx),
        "--quiet",
    ];
    let (ok, out, err) = tiw(&args);
    assert!(ok, "{err}");
    let v: f64 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("calc printed {out:?}"));
    assert!(v.is_finite() && v > 0.0, "{out}");
    // the same subset through the library: same value
    let set = ImageSet::open(&folder).unwrap();
    let idx = tiw::fid::select(&set, Some(4), 3).unwrap();
    assert_eq!(idx, subset_indices(8, Some(4), 3));
    let f = arr(&expected, "features32").to_f32();
    let sub: Vec<f32> = idx
        .iter()
        .flat_map(|&i| f[i * 2048..(i + 1) * 2048].to_vec())
        .collect();
    let want = frechet_distance(&stats_of(&sub), &statsfile::read_mu_sigma(&ref_path).unwrap())
        .unwrap()
        .fid;
    println!(
        "  fid calc --num 4 --seed 3: {} (from expected features: {want})",
        out.trim()
    );
    assert!((v - want).abs() <= 1e-4 * want, "{v} vs {want}");
}

#[test]
fn fid_commands_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fake_det = d.join("det.pth");
    std::fs::write(&fake_det, b"not used").unwrap();
    let ref64 = fixture("fid/ref_stats_d64.npz");
    let folder = d.join("imgs");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3 {
        std::fs::write(
            folder.join(format!("{i}.png")),
            png_bytes(&[i as u8; 4 * 4 * 3], 4, 4, png::ColorType::Rgb),
        )
        .unwrap();
    }
    // a 2048-d reference so that `calc` gets past the reference check
    let good_ref = d.join("ref2048.npz");
    statsfile::write_reference(
        &good_ref,
        &MuSigma {
            mu: vec![0.0; 2048],
            sigma: vec![0.0; 2048 * 2048],
        },
    )
    .unwrap();
    let corrupt = d.join("corrupt.npz");
    std::fs::write(&corrupt, b"PK\x03\x04 this is not a zip archive at all").unwrap();
    let truncated = d.join("truncated.npz");
    let bytes = std::fs::read(&ref64).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let wrong_keys = d.join("wrong.npz");
    statsfile::write_savez(
        &wrong_keys,
        &[("x", statsfile::NpyArray::f64(vec![2], &[1.0, 2.0]))],
    )
    .unwrap();
    let bad_shape = d.join("bad_shape.npz");
    statsfile::write_savez(
        &bad_shape,
        &[
            ("mu", statsfile::NpyArray::f64(vec![3], &[0.0; 3])),
            ("sigma", statsfile::NpyArray::f64(vec![2, 2], &[0.0; 4])),
        ],
    )
    .unwrap();
    let nan_ref = d.join("nan.npz");
    statsfile::write_reference(
        &nan_ref,
        &MuSigma {
            mu: vec![f64::NAN, 0.0],
            sigma: vec![1.0, 0.0, 0.0, 1.0],
        },
    )
    .unwrap();
    let no_samples = d.join("nosamples.npz");
    statsfile::write_savez(
        &no_samples,
        &[("label", statsfile::NpyArray::f64(vec![2], &[1.0, 2.0]))],
    )
    .unwrap();
    let missing = d.join("does-not-exist");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let det = ["--detector".to_string(), p(&fake_det)];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&missing),
                "--ref".into(),
                p(&good_ref),
            ],
            "no such file or directory",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&good_ref),
                "--num".into(),
                "10".into(),
            ],
            "found 3 images, but expected at least 10",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&ref64),
                "--num".into(),
                "2".into(),
            ],
            "dimension 64",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&corrupt),
                "--num".into(),
                "2".into(),
            ],
            "corrupt.npz",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&truncated),
                "--num".into(),
                "2".into(),
            ],
            "truncated.npz",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&wrong_keys),
                "--num".into(),
                "2".into(),
            ],
            "neither FID reference statistics",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&bad_shape),
                "--num".into(),
                "2".into(),
            ],
            "sigma has shape [2, 2] but mu has 3 entries",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&folder),
                "--ref".into(),
                p(&nan_ref),
                "--num".into(),
                "2".into(),
            ],
            "non-finite",
        ),
        (
            vec![
                "calc".into(),
                "--images".into(),
                p(&no_samples),
                "--ref".into(),
                p(&good_ref),
                "--num".into(),
                "2".into(),
            ],
            "no `samples` or `images` array (has: label)",
        ),
        (
            vec![
                "ref".into(),
                "--data".into(),
                p(&folder),
                "--dest".into(),
                p(&d.join("r.npz")),
                "--num".into(),
                "1".into(),
            ],
            "need at least 2",
        ),
        (
            vec![
                "ref".into(),
                "--data".into(),
                p(&ref64),
                "--dest".into(),
                p(&d.join("r.npz")),
            ],
            "no `samples` or `images` array",
        ),
        (
            vec![
                "stats".into(),
                "--images".into(),
                p(&d.join("r.txt")),
                "--dest".into(),
                p(&d.join("r.npz")),
            ],
            "no such file",
        ),
        (
            vec![
                "distance".into(),
                p(&ref64),
                p(&fixture("fid/fid_vs_ref_stats.npz")),
            ],
            "neither FID reference statistics",
        ),
        (
            vec!["distance".into(), p(&ref64), p(&good_ref)],
            "dimension 64 but",
        ),
        (vec!["distance".into(), p(&ref64), p(&corrupt)], "corrupt.npz"),
    ];
    for (args, want) in &cases {
        let mut full: Vec<&str> = vec!["fid"];
        full.extend(args.iter().map(String::as_str));
        if matches!(args[0].as_str(), "calc" | "ref" | "stats") {
            full.extend(det.iter().map(String::as_str));
        }
        let (ok, out, err) = tiw(&full);
        assert!(!ok, "{full:?} succeeded: {out}");
        assert!(err.contains(want), "{full:?}: expected {want:?} in:\n{err}");
        assert_eq!(
            err.trim().lines().count(),
            1,
            "one-line error for {full:?}:\n{err}"
        );
        println!("  {:<8} -> {}", args[0], err.trim());
    }
    // no detector anywhere: a clear message, before any work
    let (ok, _, err) = tiw(&[
        "fid",
        "calc",
        "--images",
        &p(&folder),
        "--ref",
        &p(&good_ref),
        "--num",
        "2",
    ]);
    assert!(!ok && err.contains("--detector"), "{err}");
    // a file that is not the Inception weights
    let (ok, _, err) = tiw(&[
        "fid",
        "calc",
        "--images",
        &p(&folder),
        "--ref",
        &p(&good_ref),
        "--num",
        "2",
        "--detector",
        &p(&fixture("classifier/discriminator.pt")),
        "--quiet",
    ]);
    assert!(!ok && err.contains("not the Inception-v3 FID weights"), "{err}");
}
