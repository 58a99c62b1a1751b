//! Training data (SPEC §5.1, §5.4) against `tests/fixtures/dataset/` and numpy.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{arr, fixture, read_npz};
use tch::Device;
use tiw::data::{
    write_dataset_zip, write_samples_npz, DatasetOptions, ImageDataset, InfiniteSampler, SamplesDataset,
};
use tiw::parity::norm_err;

fn opts(use_labels: bool, xflip: bool) -> DatasetOptions {
    DatasetOptions {
        use_labels,
        xflip,
        ..Default::default()
    }
}

fn i64s(a: &common::NpzArray) -> Vec<i64> {
    a.to_i64()
}

/// Compares every item of `ds` with the fixture's `labels{u}_xflip{x}_*` arrays.
fn check_items(ds: &ImageDataset, items: &[common::NpzArray], u: u8, x: u8) {
    let key = |k: &str| format!("labels{u}_xflip{x}_{k}");
    let meta = i64s(arr(items, &key("meta")));
    assert_eq!(
        meta,
        [
            ds.len() as i64,
            ds.resolution() as i64,
            ds.channels() as i64,
            ds.label_dim() as i64,
            ds.has_labels() as i64
        ],
        "meta u{u} x{x}"
    );
    let raw = i64s(arr(items, &key("raw_idx")));
    let images = &arr(items, &key("images")).le_bytes();
    let labels = arr(items, &key("labels")).to_f32();
    let per = images.len() / ds.len();
    let mut ours_img = Vec::new();
    let mut ours_lab = Vec::new();
    assert_eq!(raw.len(), ds.len());
    for (i, &r) in raw.iter().enumerate() {
        assert_eq!(ds.raw_idx(i) as i64, r, "raw_idx[{i}]");
        ours_img.extend(ds.image(i).unwrap());
        ours_lab.extend(ds.label(i));
    }
    assert_eq!(per, 3 * 8 * 8);
    assert_eq!(&ours_img, images, "images u{u} x{x}");
    assert_eq!(ours_lab, labels, "labels u{u} x{x}");
}

#[test]
fn image_folder_matches_fixture_items() {
    let items = read_npz(&fixture("dataset/dataset_items.npz"));
    let zip = fixture("dataset/dataset.zip");
    for (u, x) in [(1u8, 0u8), (1, 1), (0, 0)] {
        let ds = ImageDataset::open(&zip, opts(u == 1, x == 1)).unwrap();
        assert_eq!(ds.name(), "dataset");
        check_items(&ds, &items, u, x);
        // the batch helper: x/127.5 − 1 and the labels
        let (img, lab) = ds.batch(&[0, ds.len() - 1], Device::Cpu).unwrap();
        assert_eq!(img.size(), [2, 3, 8, 8]);
        assert_eq!(lab.size(), [2, ds.label_dim() as i64]);
        let got = Vec::<f32>::try_from(img.flatten(0, -1)).unwrap();
        let want: Vec<f32> = [ds.image(0).unwrap(), ds.image(ds.len() - 1).unwrap()]
            .concat()
            .iter()
            .map(|&v| v as f32 / 127.5 - 1.0)
            .collect();
        assert_eq!(got, want);
    }
    println!("dataset.zip: 3 option sets bit-exact (images, labels, raw_idx, meta)");
}

#[test]
fn image_folder_from_a_directory_and_uncached() {
    // extract the fixture zip into a directory: same items
    let dir = tempfile::tempdir().unwrap();
    let mut z = zip::ZipArchive::new(std::fs::File::open(fixture("dataset/dataset.zip")).unwrap()).unwrap();
    z.extract(dir.path()).unwrap();
    let items = read_npz(&fixture("dataset/dataset_items.npz"));
    let ds = ImageDataset::open(
        dir.path(),
        DatasetOptions {
            cache: false,
            ..opts(true, true)
        },
    )
    .unwrap();
    check_items(&ds, &items, 1, 1);
    ds.preload().unwrap();
}

#[test]
fn max_size_subset_matches_numpy_rule() {
    // RandomState(seed).shuffle(arange(20)) then sort the first 7 (checked against numpy in
    // tests/fid.rs random_state_subset_matches_numpy)
    let zip = fixture("dataset/dataset.zip");
    let ds = ImageDataset::open(
        &zip,
        DatasetOptions {
            max_size: Some(7),
            seed: 3,
            ..opts(true, true)
        },
    )
    .unwrap();
    let want = tiw::data::random::subset_indices(20, Some(7), 3);
    assert_eq!(ds.len(), 14);
    let raw: Vec<usize> = (0..14).map(|i| ds.raw_idx(i)).collect();
    assert_eq!(raw, [want.clone(), want].concat());
    let full = ImageDataset::open(&zip, opts(true, false)).unwrap();
    assert_eq!(ds.image(8).unwrap().len(), 192);
    assert_eq!(ds.label(3), full.label(ds.raw_idx(3)));
}

#[test]
fn samples_npz_stored_and_deflated() {
    for (file, what) in [("real_data.npz", "stored"), ("fake_data.npz", "deflated")] {
        let path = fixture(&format!("dataset/{file}"));
        let want = read_npz(&path);
        let want = arr(&want, "samples");
        let ds = SamplesDataset::open(&path).unwrap();
        let [n, h, w, c] = want.shape[..] else { panic!() };
        assert_eq!((ds.len(), ds.image_shape()), (n, [c, h, w]));
        let got: Vec<u8> = (0..n).flat_map(|i| ds.image_hwc(i).unwrap()).collect();
        assert_eq!(got, want.le_bytes(), "{file} ({what})");
    }
}

#[test]
fn samples_to_tensor_matches_fixture() {
    let ds = SamplesDataset::open(&fixture("dataset/real_data.npz")).unwrap();
    let want = read_npz(&fixture("dataset/samples_totensor.npz"));
    let idx: Vec<usize> = (0..ds.len()).collect();
    let unit = Vec::<f32>::try_from(ds.to_unit_tensor(&idx, Device::Cpu).unwrap().flatten(0, -1)).unwrap();
    let scaled = Vec::<f32>::try_from(ds.to_tensor(&idx, Device::Cpu).unwrap().flatten(0, -1)).unwrap();
    let e1 = norm_err(&unit, &arr(&want, "images").to_f32());
    let e2 = norm_err(&scaled, &arr(&want, "scaled").to_f32());
    println!("samples_totensor: images {e1:.3e}, scaled {e2:.3e}");
    assert!(e1 <= 1e-7 && e2 <= 1e-7);
}

#[test]
fn writers_round_trip() {
    let items = read_npz(&fixture("dataset/dataset_items.npz"));
    let src = arr(&items, "source_images_nhwc");
    let labels: Vec<u32> = i64s(arr(&items, "source_labels"))
        .iter()
        .map(|&v| v as u32)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("mine.zip");
    write_dataset_zip(&zip_path, &src.le_bytes(), 20, 8, 8, 3, Some(&labels)).unwrap();
    // opens exactly like the fixture written by dataset_tool.py
    for (u, x) in [(1u8, 0u8), (1, 1), (0, 0)] {
        let ds = ImageDataset::open(&zip_path, opts(u == 1, x == 1)).unwrap();
        check_items(&ds, &items, u, x);
    }
    // same member names, all stored, and the same dataset.json bytes
    let names = |p: &Path| -> Vec<(String, bool)> {
        let mut z = zip::ZipArchive::new(std::fs::File::open(p).unwrap()).unwrap();
        (0..z.len())
            .map(|i| {
                let f = z.by_index(i).unwrap();
                (
                    f.name().to_string(),
                    f.compression() == zip::CompressionMethod::Stored,
                )
            })
            .collect()
    };
    assert_eq!(names(&zip_path), names(&fixture("dataset/dataset.zip")));
    let json = |p: &Path| -> Vec<u8> {
        let mut z = zip::ZipArchive::new(std::fs::File::open(p).unwrap()).unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut z.by_name("dataset.json").unwrap(), &mut b).unwrap();
        b
    };
    assert_eq!(json(&zip_path), json(&fixture("dataset/dataset.zip")));
    // unlabelled: {"labels": null} → label_dim 0 even with use_labels
    let plain = dir.path().join("plain.zip");
    write_dataset_zip(&plain, &src.le_bytes(), 20, 8, 8, 3, None).unwrap();
    let ds = ImageDataset::open(&plain, opts(true, false)).unwrap();
    assert_eq!((ds.label_dim(), ds.len()), (0, 20));
    // samples npz
    let npz = dir.path().join("samples.npz");
    write_samples_npz(&npz, &src.le_bytes(), 20, 8, 8, 3).unwrap();
    let back = read_npz(&npz);
    assert_eq!(arr(&back, "samples").shape, [20, 8, 8, 3]);
    assert_eq!(arr(&back, "samples").le_bytes(), src.le_bytes());
    let s = SamplesDataset::open(&npz).unwrap();
    assert_eq!(s.image_hwc(19).unwrap(), src.le_bytes()[19 * 192..]);
    // a dataset zip also serves as discriminator data
    let s = SamplesDataset::open(&zip_path).unwrap();
    assert_eq!(s.image_hwc(4).unwrap(), src.le_bytes()[4 * 192..5 * 192]);
    // gray images
    let gray: Vec<u8> = (0..3 * 5 * 5).map(|v| (v * 7 % 256) as u8).collect();
    let gz = dir.path().join("gray.zip");
    write_dataset_zip(&gz, &gray, 3, 5, 5, 1, None).unwrap();
    let ds = ImageDataset::open(&gz, opts(false, false)).unwrap();
    assert_eq!((ds.channels(), ds.resolution()), (1, 5));
    assert_eq!(ds.image(2).unwrap(), gray[50..]);
}

fn numpy_python() -> Option<String> {
    let Ok(py) = std::env::var("TIW_PY") else {
        println!("SKIPPED: TIW_PY is not set (source scripts/env.sh); cannot compare with numpy");
        return None;
    };
    let ok = Command::new(&py)
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: {py} cannot import numpy; cannot compare with numpy");
        return None;
    }
    Some(py)
}

#[test]
fn infinite_sampler_matches_numpy() {
    let Some(py) = numpy_python() else { return };
    // the SPEC §5.1 stream, written with numpy
    let script = r#"
import sys, numpy as np
for case in sys.argv[1:]:
    n, rank, world, seed, shuffle, ws, count = case.split(',')
    n, rank, world, seed, count = int(n), int(rank), int(world), int(seed), int(count)
    order = np.arange(n)
    rnd = None
    window = 0
    if shuffle == '1':
        rnd = np.random.RandomState(seed)
        rnd.shuffle(order)
        window = int(np.rint(order.size * float(ws)))
    out = []
    idx = 0
    while len(out) < count:
        i = idx % order.size
        if idx % world == rank:
            out.append(int(order[i]))
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
        idx += 1
    print(' '.join(map(str, out)))
"#;
    let cases: [(usize, usize, usize, u32, bool, f64, usize); 8] = [
        (20, 0, 1, 0, true, 0.5, 200),
        (21, 0, 1, 1, true, 0.5, 200),
        (10500, 0, 1, 12345, true, 0.5, 30000),
        (10500, 3, 4, 7, true, 0.5, 8000),
        (7, 1, 3, 4294967295, true, 0.5, 100),
        (1, 0, 1, 0, true, 0.5, 5),
        (5, 0, 2, 9, false, 0.5, 12),
        (100, 0, 1, 2, true, 0.1, 500),
    ];
    let args: Vec<String> = cases
        .iter()
        .map(|&(n, r, w, s, sh, ws, c)| format!("{n},{r},{w},{s},{},{ws},{c}", sh as u8))
        .collect();
    let o = Command::new(&py)
        .arg("-c")
        .arg(script)
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    for (case, line) in cases.iter().zip(text.lines()) {
        let &(n, r, w, s, sh, ws, c) = case;
        let want: Vec<usize> = line.split_whitespace().map(|v| v.parse().unwrap()).collect();
        let got: Vec<usize> = InfiniteSampler::new(n, r, w, sh, s, ws)
            .unwrap()
            .take(c)
            .collect();
        assert_eq!(got, want, "case {case:?}");
    }
    println!("InfiniteSampler: {} cases identical to numpy", cases.len());
}

#[test]
fn sampler_state_resumes_exactly() {
    let mut a = InfiniteSampler::edm(1000, 1, 2, 42).unwrap();
    let head: Vec<usize> = a.by_ref().take(1234).collect();
    let state = a.state_json();
    let text = serde_json::to_string(&state).unwrap();
    let mut b = InfiniteSampler::from_state_json(&serde_json::from_str(&text).unwrap()).unwrap();
    let tail_a: Vec<usize> = a.take(3000).collect();
    let tail_b: Vec<usize> = b.by_ref().take(3000).collect();
    assert_eq!(tail_a, tail_b);
    // replay gives the same
    let mut c = InfiniteSampler::edm(1000, 1, 2, 42).unwrap();
    c.advance(1234);
    let tail_c: Vec<usize> = c.take(3000).collect();
    assert_eq!(tail_c, tail_a);
    assert_eq!(head.len(), 1234);
    // a corrupted state is rejected
    let mut bad = state.clone();
    bad["order"][0] = serde_json::json!(5);
    bad["order"][1] = serde_json::json!(5);
    assert!(InfiniteSampler::from_state_json(&bad).is_err());
}

// ---- hostile input -------------------------------------------------------------------------

fn zip_with(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in members {
        z.start_file(*name, o).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn png(h: usize, w: usize) -> Vec<u8> {
    let px: Vec<u8> = (0..h * w * 3).map(|v| v as u8).collect();
    tiw::data::writer::encode_png(&px, h, w, 3).unwrap()
}

fn open_err(path: &Path, o: DatasetOptions) -> String {
    match ImageDataset::open(path, o).and_then(|d| d.preload().map(|_| d)) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn hostile_datasets_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    // truncated zip
    let bytes = std::fs::read(fixture("dataset/dataset.zip")).unwrap();
    std::fs::write(p("trunc.zip"), &bytes[..bytes.len() / 2]).unwrap();
    let e = open_err(&p("trunc.zip"), opts(false, false));
    println!("truncated: {e}");
    assert!(e.contains("trunc.zip") && e.contains("zip"), "{e}");

    // one image of another size
    zip_with(
        &p("sizes.zip"),
        &[
            ("00000/img00000000.png", png(8, 8)),
            ("00000/img00000001.png", png(8, 7)),
        ],
    );
    let e = open_err(&p("sizes.zip"), opts(false, false));
    println!("sizes: {e}");
    assert!(e.contains("00000/img00000001.png") && e.contains("8×7"), "{e}");

    // non-square
    zip_with(&p("rect.zip"), &[("a.png", png(8, 6))]);
    let e = open_err(&p("rect.zip"), opts(false, false));
    println!("non-square: {e}");
    assert!(e.contains("square") && e.contains("a.png"), "{e}");

    // corrupt PNG data
    let mut bad = png(8, 8);
    let k = bad.len() - 20;
    bad[k] ^= 0xff;
    bad.truncate(bad.len() - 8);
    zip_with(&p("badpng.zip"), &[("a.png", png(8, 8)), ("b.png", bad)]);
    let e = open_err(&p("badpng.zip"), opts(false, false));
    println!("bad png: {e}");
    assert!(e.contains("b.png") && e.contains("PNG"), "{e}");

    // a PNG header declaring 100000×100000 pixels
    let mut huge = png(8, 8);
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    zip_with(&p("huge.zip"), &[("a.png", huge)]);
    let e = open_err(&p("huge.zip"), opts(false, false));
    println!("huge: {e}");
    assert!(e.contains("a.png") && e.contains("limit"), "{e}");

    // dataset.json: invalid JSON, missing label, negative label, wrong structure
    for (json, needle) in [
        (&b"{\"labels\": [[\"a.png\", 1]"[..], "JSON"),
        (b"{\"labels\": [[\"b.png\", 1]]}", "no label for image a.png"),
        (b"{\"labels\": [[\"a.png\", -1]]}", "integers"),
        (b"{\"labels\": {\"a.png\": 1}}", "list"),
        (b"{\"classes\": []}", "no \"labels\""),
    ] {
        zip_with(
            &p("json.zip"),
            &[("a.png", png(4, 4)), ("dataset.json", json.to_vec())],
        );
        let e = open_err(&p("json.zip"), opts(true, false));
        println!("dataset.json: {e}");
        assert!(e.contains("dataset.json") && e.contains(needle), "{e}");
        // ignored without use_labels
        assert!(ImageDataset::open(&p("json.zip"), opts(false, false)).is_ok());
    }

    // no images / not a dataset / npz without samples
    zip_with(&p("empty.zip"), &[("readme.txt", b"hi".to_vec())]);
    let e = open_err(&p("empty.zip"), opts(false, false));
    assert!(e.contains("no image files"), "{e}");
    tiw::npz::write_f32(
        &p("labels.npz"),
        &[("label".to_string(), vec![2], vec![0.0, 1.0])],
    )
    .unwrap();
    let e = format!("{:#}", SamplesDataset::open(&p("labels.npz")).unwrap_err());
    println!("npz: {e}");
    assert!(e.contains("labels.npz") && e.contains("no `samples`"), "{e}");
}
