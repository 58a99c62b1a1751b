//! `tiw dataset convert|split` (SPEC §5.4): the fixture made by EDM's dataset_tool.py, CIFAR
//! tarballs (hand-made Python 2 pickles and, when numpy is there, CPython pickles of every
//! protocol), PIL's Lanczos resize / crops / PNG bytes (when PIL is there), split counts,
//! determinism and clean failures.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tolerances::TOL_JPEG;
use common::{arr, fixture, read_npz, s};
use tiw::data::dataset_tool::{convert, transform_image, ConvertOptions, Transform};
use tiw::data::images::Image;
use tiw::data::split::{plan, split, Ratios, SplitOptions};
use tiw::data::writer::{encode_png, write_dataset_zip};

fn tiw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tiw-full"))
}

/// Zip members in archive order with their bytes.
fn members(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(p).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = Vec::new();
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect()
}

fn no_progress() -> impl FnMut(usize, usize) {
    |_, _| {}
}

/// The folder dataset_tool.py read for the fixture (SPEC §5.4; fixtures README §9).
fn fixture_source(dir: &Path) -> (Vec<u8>, Vec<i64>) {
    let items = read_npz(&fixture("dataset/dataset_items.npz"));
    let src = arr(&items, "source_images_nhwc").le_bytes();
    let labels = arr(&items, "source_labels").to_i64();
    let mut json = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let png = encode_png(&src[i * 192..(i + 1) * 192], 8, 8, 3).unwrap();
        std::fs::write(dir.join(format!("img_{i:03}.png")), png).unwrap();
        json.push(format!("[\"img_{i:03}.png\", {l}]"));
    }
    std::fs::write(
        dir.join("dataset.json"),
        format!("{{\"labels\": [{}]}}", json.join(", ")),
    )
    .unwrap();
    (src, labels)
}

#[test]
fn convert_matches_dataset_tool_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let src_dir = dir.path().join("src");
    std::fs::create_dir(&src_dir).unwrap();
    fixture_source(&src_dir);
    let out = dir.path().join("sub/out.zip");
    let o = tiw()
        .args(["dataset", "convert", "--source", &s(&src_dir), "--dest", &s(&out)])
        .output()
        .unwrap();
    common::ok(o, "dataset convert");
    let mine = members(&out);
    let theirs = members(&fixture("dataset/dataset.zip"));
    let names = |m: &[(String, Vec<u8>)]| m.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&mine), names(&theirs));
    // PNG bytes (PIL's compress_level=0 encoding) and dataset.json bytes are identical
    for ((n, a), (_, b)) in mine.iter().zip(&theirs) {
        assert!(a == b, "{n} differs from dataset_tool.py's");
    }
    // every member stored, as ZIP_STORED
    let mut z = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    for i in 0..z.len() {
        assert_eq!(
            z.by_index(i).unwrap().compression(),
            zip::CompressionMethod::Stored
        );
    }
    // the same conversion from the converted zip (zip source, its dataset.json) is a fixed point
    let again = dir.path().join("again.zip");
    convert(&out, &again, &ConvertOptions::default(), &mut no_progress()).unwrap();
    assert_eq!(members(&again), mine);
}

#[test]
fn folder_labels_come_from_class_subfolders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("imgs");
    for (k, cls) in ["dog", "cat", "cat-b"].iter().enumerate() {
        std::fs::create_dir_all(root.join(cls)).unwrap();
        for j in 0..2 {
            let px = vec![(k * 50 + j) as u8; 4 * 4 * 3];
            std::fs::write(
                root.join(cls).join(format!("{j}.png")),
                encode_png(&px, 4, 4, 3).unwrap(),
            )
            .unwrap();
        }
    }
    std::fs::write(root.join("notes.txt"), "not an image").unwrap();
    let out = dir.path().join("o.zip");
    let sum = convert(&root, &out, &ConvertOptions::default(), &mut no_progress()).unwrap();
    assert_eq!((sum.written, sum.shape, sum.labelled), (6, (4, 4, 3), true));
    let m = members(&out);
    let json = String::from_utf8(m.last().unwrap().1.clone()).unwrap();
    // path-component order: cat/…, cat-b/…, dog/… ; classes by sorted names cat=0, cat-b=1, dog=2
    assert_eq!(
        json,
        "{\"labels\": [[\"00000/img00000000.png\", 0], [\"00000/img00000001.png\", 0], [\"00000/img00000002.png\", 1], \
         [\"00000/img00000003.png\", 1], [\"00000/img00000004.png\", 2], [\"00000/img00000005.png\", 2]]}"
    );
    let first = tiw::data::images::decode(&m[2].1).unwrap();
    assert_eq!(first.data[0], 100, "cat-b/0.png is third");
}

#[test]
fn npz_source_with_labels_and_resize() {
    use tiw::npz::{Array, Data};
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("s.npz");
    // N×C×H×W (recognised by C = 3 on axis 1), int64 labels
    let chw: Vec<u8> = (0..5 * 3 * 8 * 8).map(|v| (v * 5 % 251) as u8).collect();
    tiw::npz::write(
        &npz,
        &[
            Array {
                name: "samples".into(),
                shape: vec![5, 3, 8, 8],
                data: Data::U8(chw.clone()),
            },
            Array {
                name: "labels".into(),
                shape: vec![5],
                data: Data::I64(vec![4, 3, 2, 1, 0]),
            },
        ],
    )
    .unwrap();
    let out = dir.path().join("n.zip");
    let o = tiw()
        .args([
            "dataset",
            "convert",
            "--source",
            &s(&npz),
            "--dest",
            &s(&out),
            "--resolution",
            "4x4",
            "--max-images",
            "3",
        ])
        .output()
        .unwrap();
    common::ok(o, "dataset convert npz");
    let m = members(&out);
    assert_eq!(m.len(), 4);
    for (i, (_, png)) in m[..3].iter().enumerate() {
        let img = tiw::data::images::decode(png).unwrap();
        let mut hwc = vec![0u8; 192];
        for c in 0..3 {
            for p in 0..64 {
                hwc[p * 3 + c] = chw[i * 192 + c * 64 + p];
            }
        }
        let want = tiw::data::resample::resize_lanczos(&hwc, 8, 8, 3, 4, 4);
        assert_eq!(img.data, want, "image {i}");
    }
    let json = String::from_utf8(m[3].1.clone()).unwrap();
    assert!(json.ends_with("[\"00000/img00000002.png\", 2]]}"), "{json}");
}

// ---------------------------------------------------------------- CIFAR

/// A `cifar-10-batches-py/data_batch_N` as Python 2's cPickle (protocol 2) wrote them:
/// str keys and data as SHORT_BINSTRING/BINSTRING, the array by `_reconstruct` + BUILD.
fn py2_batch(data: &[u8], labels: &[u8]) -> Vec<u8> {
    let n = labels.len() as i32;
    let mut p = vec![0x80, 2, b'}', b'('];
    let sstr = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    sstr(&mut p, b"batch_label");
    sstr(&mut p, b"training batch");
    sstr(&mut p, b"data");
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85");
    sstr(&mut p, b"b");
    p.extend_from_slice(b"\x87R(K\x01J");
    p.extend_from_slice(&n.to_le_bytes());
    p.extend_from_slice(b"M\x00\x0c\x86cnumpy\ndtype\n");
    sstr(&mut p, b"u1");
    p.extend_from_slice(b"K\x00K\x01\x87R(K\x03");
    sstr(&mut p, b"|");
    p.extend_from_slice(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T");
    p.extend_from_slice(&(data.len() as i32).to_le_bytes());
    p.extend_from_slice(data);
    p.extend_from_slice(b"tb");
    sstr(&mut p, b"labels");
    p.extend_from_slice(b"](");
    for &l in labels {
        p.extend_from_slice(&[b'K', l]);
    }
    p.extend_from_slice(b"eu.");
    p
}

fn tarball(path: &Path, members: &[(String, Vec<u8>)]) {
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
}

/// Checks a converted CIFAR zip against CHW data and labels.
fn check_cifar_zip(out: &Path, chw: &[u8], labels: &[i64]) {
    let m = members(out);
    assert_eq!(m.len(), labels.len() + 1);
    for (i, (name, png)) in m[..labels.len()].iter().enumerate() {
        assert_eq!(name, &format!("00000/img{i:08}.png"));
        let img = tiw::data::images::decode(png).unwrap();
        assert_eq!((img.width, img.height, img.channels), (32, 32, 3));
        for p in [0usize, 517, 1023] {
            for ch in 0..3 {
                assert_eq!(
                    img.data[p * 3 + ch],
                    chw[i * 3072 + ch * 1024 + p],
                    "image {i} pixel {p} channel {ch}"
                );
            }
        }
    }
    let want: Vec<String> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| format!("[\"00000/img{i:08}.png\", {l}]"))
        .collect();
    assert_eq!(
        String::from_utf8(m.last().unwrap().1.clone()).unwrap(),
        format!("{{\"labels\": [{}]}}", want.join(", "))
    );
}

#[test]
fn cifar_python2_tarball_converts_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let (mut chw, mut labels, mut members) = (Vec::new(), Vec::new(), Vec::new());
    // member order in the tarball is not the batch order
    for k in [4usize, 1, 5, 3, 2] {
        let n = k; // batch k holds k images
        let data: Vec<u8> = (0..n * 3072).map(|v| ((v * 7 + k * 13) % 256) as u8).collect();
        let lab: Vec<u8> = (0..n).map(|v| ((v + k) % 10) as u8).collect();
        members.push((
            format!("cifar-10-batches-py/data_batch_{k}"),
            py2_batch(&data, &lab),
        ));
    }
    members.push((
        "cifar-10-batches-py/test_batch".into(),
        py2_batch(&[0; 3072], &[3]),
    ));
    for k in 1..=5usize {
        chw.extend((0..k * 3072).map(|v| ((v * 7 + k * 13) % 256) as u8));
        labels.extend((0..k).map(|v| ((v + k) % 10) as i64));
    }
    let tgz = dir.path().join("cifar-10-python.tar.gz");
    tarball(&tgz, &members);
    let out = dir.path().join("cifar.zip");
    let sum = convert(&tgz, &out, &ConvertOptions::default(), &mut no_progress()).unwrap();
    assert_eq!(sum.written, 15);
    check_cifar_zip(&out, &chw, &labels);

    // a truncated tarball fails with a clear error and leaves nothing
    let bytes = std::fs::read(&tgz).unwrap();
    let cut = dir.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let bad = dir.path().join("bad.zip");
    let e = format!(
        "{:#}",
        convert(&cut, &bad, &ConvertOptions::default(), &mut no_progress()).unwrap_err()
    );
    assert!(
        e.contains("cut.tar.gz") && (e.contains("truncated") || e.contains("corrupt")),
        "{e}"
    );
    assert!(!bad.exists());
    // a pickle that calls a code-execution global is refused
    let evil = dir.path().join("evil.tar.gz");
    let mut m = members.clone();
    m[0].1 = b"\x80\x02cos\nsystem\nU\x04echo\x85R.".to_vec();
    tarball(&evil, &m);
    let e = format!(
        "{:#}",
        convert(&evil, &bad, &ConvertOptions::default(), &mut no_progress()).unwrap_err()
    );
    assert!(e.contains("os.system"), "{e}");
    assert!(!bad.exists());
}

/// A Python interpreter that can import `modules`, or None (with a SKIPPED line).
fn python_with(modules: &str, vars: &[&str]) -> Option<String> {
    for v in vars {
        if let Ok(py) = std::env::var(v) {
            let ok = Command::new(&py)
                .args(["-c", &format!("import {modules}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Some(py);
            }
        }
    }
    println!(
        "SKIPPED: no Python with {modules} in {vars:?} (source scripts/env.sh; TIW_TORCH_CHECK=1 for PIL)"
    );
    None
}

#[test]
fn cifar_cpython_pickles_of_every_protocol() {
    let Some(py) = python_with("numpy", &["TIW_PY", "TIW_TORCH_PY"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import pickle, sys, numpy as np
out = sys.argv[1]
for k, proto in enumerate([2, 3, 4, 5, 5]):
    rng = np.random.RandomState(k)
    data = rng.randint(0, 256, (3, 3072)).astype(np.uint8)
    labels = [int(v) for v in rng.randint(0, 10, 3)]
    d = {'batch_label': 'training batch %d' % (k + 1), 'data': data, 'filenames': ['f'] * 3,
         'labels': labels if k % 2 == 0 else np.array(labels, dtype=np.int64)}
    open('%s/data_batch_%d' % (out, k + 1), 'wb').write(pickle.dumps(d, protocol=proto))
    open('%s/expect_%d' % (out, k + 1), 'wb').write(data.tobytes() + bytes(labels))
"#;
    let o = Command::new(&py)
        .args(["-c", script, &s(dir.path())])
        .output()
        .unwrap();
    common::ok(o, "python pickles");
    let (mut chw, mut labels, mut members) = (Vec::new(), Vec::new(), Vec::new());
    for k in 1..=5 {
        let e = std::fs::read(dir.path().join(format!("expect_{k}"))).unwrap();
        chw.extend_from_slice(&e[..3 * 3072]);
        labels.extend(e[3 * 3072..].iter().map(|&v| v as i64));
        let b = std::fs::read(dir.path().join(format!("data_batch_{k}"))).unwrap();
        members.push((format!("cifar-10-batches-py/data_batch_{k}"), b));
    }
    let tgz = dir.path().join("cifar-10-python.tar.gz");
    tarball(&tgz, &members);
    let out = dir.path().join("c.zip");
    convert(&tgz, &out, &ConvertOptions::default(), &mut no_progress()).unwrap();
    check_cifar_zip(&out, &chw, &labels);
}

// ---------------------------------------------------------------- PIL parity

#[test]
fn jpeg_sources_decode_within_a_few_levels_of_pil() {
    let Some(py) = python_with("PIL, numpy", &["TIW_TORCH_PY", "TIW_PY"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // RGB at 4:2:0 / 4:4:4 / progressive / 4:2:2, and gray; PIL's decode saved beside each file
    let script = r#"
import sys, numpy as np, PIL.Image
out = sys.argv[1]
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:32, 0:32]
cfg = [dict(quality=75), dict(quality=95, subsampling=0), dict(quality=90, progressive=True), dict(quality=50, subsampling=1)]
for mode in ["rgb", "gray"]:
    for i, kw in enumerate(cfg):
        a = np.stack([np.sin(xx / 5 + i) * 60 + 120, np.cos(yy / 7) * 50 + 100, (xx + yy) * 3.0], -1)
        im = PIL.Image.fromarray(np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8), "RGB")
        if mode == "gray":
            im = im.convert("L")
        im.save("%s/%s/img%d.jpg" % (out, mode, i), **kw)
        open("%s/%s_%d.raw" % (out, mode, i), "wb").write(np.asarray(PIL.Image.open("%s/%s/img%d.jpg" % (out, mode, i))).tobytes())
"#;
    for m in ["rgb", "gray"] {
        std::fs::create_dir_all(dir.path().join(m)).unwrap();
    }
    let o = Command::new(&py)
        .args(["-c", script, &s(dir.path())])
        .output()
        .unwrap();
    common::ok(o, "python JPEGs");
    let mut worst = 0u8;
    for m in ["rgb", "gray"] {
        let out = dir.path().join(format!("{m}.zip"));
        convert(
            &dir.path().join(m),
            &out,
            &ConvertOptions::default(),
            &mut no_progress(),
        )
        .unwrap();
        let pngs: Vec<_> = members(&out)
            .into_iter()
            .filter(|(n, _)| n.ends_with(".png"))
            .collect();
        assert_eq!(pngs.len(), 4, "{m}");
        for (i, (name, png)) in pngs.iter().enumerate() {
            let ours = tiw::data::images::decode(png).unwrap();
            let pil = std::fs::read(dir.path().join(format!("{m}_{i}.raw"))).unwrap();
            assert_eq!(ours.data.len(), pil.len(), "{m} {name}: size");
            let e = ours
                .data
                .iter()
                .zip(&pil)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            println!("{m} {name}: max |tiw − PIL| = {e} levels");
            worst = worst.max(e);
            let full_scale = f64::from(e) / 255.0;
            assert!(
                full_scale <= TOL_JPEG,
                "{m} {name}: {e} levels = {full_scale:.1e} > {TOL_JPEG:.1e}"
            );
        }
    }
    println!(
        "JPEG sources: worst {worst} levels = {:.1e} of full scale vs PIL (tolerance {TOL_JPEG:.1e})",
        f64::from(worst) / 255.0
    );
}

#[test]
fn resize_crop_and_png_match_pil() {
    let Some(py) = python_with("PIL, numpy", &["TIW_TORCH_PY", "TIW_PY"]) else {
        return;
    };
    // (H, W, C, transform, out W, out H); transform 0 none, 1 center-crop, 2 center-crop-wide
    let cases: [(usize, usize, usize, u8, usize, usize); 11] = [
        (23, 37, 3, 0, 16, 16),
        (40, 40, 1, 0, 29, 13),
        (10, 12, 3, 0, 64, 64),
        (33, 50, 3, 1, 32, 32),
        (50, 33, 1, 1, 16, 16),
        (48, 64, 3, 2, 32, 16),
        (30, 64, 3, 2, 32, 16),
        (7, 300, 3, 0, 5, 2),
        (45, 45, 3, 2, 32, 18),
        (128, 128, 3, 0, 128, 128),
        (256, 256, 1, 0, 256, 256),
    ];
    let spec: Vec<String> = cases
        .iter()
        .map(|c| format!("{},{},{},{},{},{}", c.0, c.1, c.2, c.3, c.4, c.5))
        .collect();
    // EDM dataset_tool's transforms, re-derived from SPEC §5.4 / the tool's documented behaviour;
    // the two-pass resize of Pillow ≤ 12 (see `tiw::data::resample`)
    let script = r#"
import io, sys, numpy as np, PIL.Image
out = sys.argv[1]
res = {}
for k, c in enumerate(sys.argv[2:]):
    h, w, ch, t, ow, oh = map(int, c.split(','))
    rng = np.random.RandomState(100 + k)
    img = rng.randint(0, 256, (h, w, ch) if ch == 3 else (h, w)).astype(np.uint8)
    res['in%d' % k] = img
    def lanczos(a, size):
        # horizontal pass, then vertical: PIL's order up to Pillow 12 (Pillow 13 runs the
        # vertical pass first for some shapes, python-pillow/Pillow#9549); each call is one pass
        im = PIL.Image.fromarray(a)
        if size[0] != im.size[0]:
            im = im.resize((size[0], im.size[1]), PIL.Image.Resampling.LANCZOS)
        return np.array(im.resize(size, PIL.Image.Resampling.LANCZOS))
    def rgb(a):
        return a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2)
    if t == 0:
        y = img if (w, h) == (ow, oh) else lanczos(img, (ow, oh))
    elif t == 1:
        s = min(h, w)
        y = lanczos(rgb(img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]), (ow, oh))
    else:
        cw = int(np.round(ow * h / w))
        if w < ow or cw < oh:
            y = None
        else:
            band = lanczos(rgb(img[(h - cw) // 2:(h - cw) // 2 + cw]), (ow, oh))
            y = np.zeros((ow, ow, 3), np.uint8)
            y[(ow - oh) // 2:(ow - oh) // 2 + oh] = band
    if y is None:
        res['out%d' % k] = np.zeros((0,), np.uint8)
        res['png%d' % k] = np.zeros((0,), np.uint8)
    else:
        res['out%d' % k] = y
        b = io.BytesIO()
        PIL.Image.fromarray(y).save(b, format='png', compress_level=0, optimize=False)
        res['png%d' % k] = np.frombuffer(b.getvalue(), np.uint8)
np.savez(out, **res)
"#;
    let dir = tempfile::tempdir().unwrap();
    let npz = dir.path().join("pil.npz");
    let mut cmd = Command::new(&py);
    cmd.args(["-c", script, &s(&npz)]).args(&spec);
    common::ok(cmd.output().unwrap(), "PIL reference");
    let a = read_npz(&npz);
    for (k, &(h, w, c, t, ow, oh)) in cases.iter().enumerate() {
        let input = Image {
            width: w,
            height: h,
            channels: c,
            data: arr(&a, &format!("in{k}")).le_bytes(),
        };
        let tr = match t {
            0 => None,
            1 => Some(Transform::CenterCrop),
            _ => Some(Transform::CenterCropWide),
        };
        let res = if t == 0 && (w, h) == (ow, oh) {
            None
        } else {
            Some((ow, oh))
        };
        let got = transform_image(input, tr, res).unwrap();
        let want = arr(&a, &format!("out{k}"));
        match got {
            None => assert!(want.shape == [0], "case {k}: PIL kept the image, tiw skipped it"),
            Some(img) => {
                let wb = want.le_bytes();
                assert_eq!(want.shape[..2], [img.height, img.width], "case {k}: shape");
                let worst = img
                    .data
                    .iter()
                    .zip(&wb)
                    .map(|(x, y)| (*x as i32 - *y as i32).abs())
                    .max()
                    .unwrap_or(0);
                println!(
                    "case {k} {c:?}: {h}x{w}x{c} -> {}x{}x{}: worst |Δ| = {worst}",
                    img.height, img.width, img.channels
                );
                assert_eq!(img.data.len(), wb.len(), "case {k}: size");
                assert_eq!(worst, 0, "case {k}: pixels differ from PIL's");
                let png = encode_png(&img.data, img.height, img.width, img.channels).unwrap();
                assert!(
                    png == arr(&a, &format!("png{k}")).le_bytes(),
                    "case {k}: PNG bytes differ from PIL's"
                );
            }
        }
    }
}

// ---------------------------------------------------------------- split

/// A labelled dataset zip with `per_class[c]` 8×8 RGB images of class c (interleaved).
fn labelled_zip(path: &Path, per_class: &[usize]) -> Vec<u32> {
    let mut labels = Vec::new();
    let mut left = per_class.to_vec();
    while left.iter().any(|&v| v > 0) {
        for (c, l) in left.iter_mut().enumerate() {
            if *l > 0 {
                labels.push(c as u32);
                *l -= 1;
            }
        }
    }
    let n = labels.len();
    let images: Vec<u8> = (0..n * 192).map(|v| ((v / 192) * 31 + v % 7) as u8).collect();
    write_dataset_zip(path, &images, n, 8, 8, 3, Some(&labels)).unwrap();
    labels
}

fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn split_counts_follow_the_ratios_exactly() {
    // CIFAR-10-LT (imbalance 100, 5000 per class): Cao et al.'s int(5000 · 0.01^(c/9))
    let opts = |ratios, f, n| SplitOptions {
        reference_fraction: f,
        ratios,
        max_per_class: n,
        seed: 0,
    };
    let p = plan(&[5000; 10], &opts(Ratios::LongTail(100.0), 0.0, Some(5000))).unwrap();
    assert_eq!(p.bias, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
    assert_eq!(p.reference, [0; 10]);
    // 5 % reference: M = round(0.05 · Σn) split evenly, remainder to the first classes
    let p = plan(&[5000; 10], &opts(Ratios::LongTail(100.0), 0.05, Some(4900))).unwrap();
    let nb: usize = p.bias.iter().sum();
    let m = (0.05 * nb as f64).round() as usize;
    assert_eq!(p.reference.iter().sum::<usize>(), m);
    assert!(p.reference.iter().all(|&r| r == m / 10 || r == m / 10 + 1));
    // default n_max: the largest that fits beside the reference set
    let p = plan(&[5000; 10], &opts(Ratios::LongTail(100.0), 0.05, None)).unwrap();
    assert!(p.bias[0] + p.reference[0] <= 5000);
    let q = plan(
        &[5000; 10],
        &opts(Ratios::LongTail(100.0), 0.05, Some(p.max_per_class + 1)),
    );
    assert!(q.is_err(), "n_max {} + 1 should not fit", p.max_per_class);
    // explicit ratios are normalised by their maximum
    let p = plan(
        &[100, 100, 100],
        &opts(Ratios::Explicit(vec![2.0, 0.58, 1.0]), 0.1, Some(50)),
    )
    .unwrap();
    assert_eq!(p.bias, [50, 14, 25]);
    assert_eq!(p.reference, [3, 3, 3]);
    // more reference images than a class has
    let e = plan(&[100, 100, 5], &opts(Ratios::Uniform, 0.5, Some(50)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("class 2 has 5 images"), "{e}");
}

#[test]
fn split_writes_disjoint_deterministic_sets() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("all.zip");
    let labels = labelled_zip(&src, &[40, 40, 40, 40]);
    let run = |out: &Path, seed: u64| {
        let o = tiw()
            .args([
                "dataset",
                "split",
                "--source",
                &s(&src),
                "--reference-fraction",
                "0.1",
                "--long-tail",
                "4",
            ])
            .args([
                "--max-per-class",
                "30",
                "--seed",
                &seed.to_string(),
                "--outdir",
                &s(out),
            ])
            .output()
            .unwrap();
        common::ok(o, "dataset split");
    };
    let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    run(&a, 7);
    run(&b, 7);
    run(&c, 8);
    assert_eq!(tree(&a), tree(&b), "same seed → byte-identical outputs");
    let sj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("split.json")).unwrap()).unwrap();
    let sj_c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.join("split.json")).unwrap()).unwrap();
    assert_ne!(
        sj["bias_source_members"], sj_c["bias_source_members"],
        "another seed, another choice"
    );
    // n_c = floor(30 · 4^(−c/3)) = 30, 18, 11, 7 (Σ 66); M = round(6.6) = 7 → 2, 2, 2, 1
    assert_eq!(sj["bias_per_class"], serde_json::json!([30, 18, 11, 7]));
    assert_eq!(sj["reference_per_class"], serde_json::json!([2, 2, 2, 1]));
    let names = |k: &str| -> Vec<String> {
        sj[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (bias, reference) = (names("bias_source_members"), names("reference_source_members"));
    assert!(bias.iter().all(|n| !reference.contains(n)), "sets overlap");
    // the npz files hold those images with their labels, in source order
    let src_members = members(&src);
    let pixels = |name: &str| {
        let png = &src_members.iter().find(|m| m.0 == name).unwrap().1;
        tiw::data::images::decode(png).unwrap().data
    };
    for (file, set) in [
        ("discriminator_training/bias/fake_data.npz", &bias),
        ("discriminator_training/reference/real_data.npz", &reference),
    ] {
        let z = read_npz(&a.join(file));
        let samples = arr(&z, "samples");
        assert_eq!(samples.shape, [set.len(), 8, 8, 3]);
        let got = samples.le_bytes();
        let got_labels = arr(&z, "labels").to_i64();
        for (j, name) in set.iter().enumerate() {
            assert_eq!(got[j * 192..(j + 1) * 192], pixels(name)[..], "{file}[{j}]");
            let i: usize = name[9..17].parse().unwrap();
            assert_eq!(got_labels[j], labels[i] as i64);
        }
    }
    // score_training = bias ∪ reference, labelled, readable by the training dataset
    let obs = members(&a.join("score_training/dataset.zip"));
    assert_eq!(obs.len(), bias.len() + reference.len() + 1);
    let ds = tiw::data::ImageDataset::open(
        &a.join("score_training/dataset.zip"),
        tiw::data::DatasetOptions {
            use_labels: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((ds.len(), ds.label_dim()), (73, 4));
}

// ---------------------------------------------------------------- bad inputs

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dest = d.join("out/x.zip");
    let err = |src: &Path, o: &ConvertOptions| {
        format!("{:#}", convert(src, &dest, o, &mut no_progress()).unwrap_err())
    };
    let nothing_left = || assert!(!d.join("out").exists(), "partial output left behind");
    let plain = ConvertOptions::default();
    // empty folder
    std::fs::create_dir(d.join("empty")).unwrap();
    let e = err(&d.join("empty"), &plain);
    assert!(e.contains("no image files"), "{e}");
    nothing_left();
    // mixed resolutions
    let mixed = d.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for (i, r) in [8usize, 8, 16, 8].iter().enumerate() {
        std::fs::write(
            mixed.join(format!("{i}.png")),
            encode_png(&vec![9; r * r * 3], *r, *r, 3).unwrap(),
        )
        .unwrap();
    }
    let e = err(&mixed, &plain);
    assert!(
        e.contains("2.png") && e.contains("16×16×3") && e.contains("--resolution"),
        "{e}"
    );
    nothing_left();
    let skip = ConvertOptions {
        skip_bad: true,
        ..Default::default()
    };
    let sum = convert(&mixed, &dest, &skip, &mut no_progress()).unwrap();
    assert_eq!((sum.written, sum.skipped_bad), (3, 1));
    // skipped images leave a gap in the numbering
    let names: Vec<String> = members(&dest).into_iter().map(|m| m.0).collect();
    assert_eq!(
        names,
        [
            "00000/img00000000.png",
            "00000/img00000001.png",
            "00000/img00000003.png",
            "dataset.json"
        ]
    );
    std::fs::remove_dir_all(d.join("out")).unwrap();
    // --resolution makes them uniform
    let r = ConvertOptions {
        resolution: Some((4, 4)),
        ..Default::default()
    };
    assert_eq!(convert(&mixed, &dest, &r, &mut no_progress()).unwrap().written, 4);
    std::fs::remove_dir_all(d.join("out")).unwrap();
    // corrupt PNG
    let mut png = encode_png(&[7; 8 * 8 * 3], 8, 8, 3).unwrap();
    png.truncate(60);
    std::fs::write(mixed.join("1.png"), &png).unwrap();
    std::fs::write(mixed.join("2.png"), encode_png(&[7; 8 * 8 * 3], 8, 8, 3).unwrap()).unwrap();
    let e = err(&mixed, &plain);
    assert!(e.contains("1.png") && e.contains("--skip-bad"), "{e}");
    nothing_left();
    let sum = convert(&mixed, &dest, &skip, &mut no_progress()).unwrap();
    assert_eq!((sum.written, sum.skipped_bad), (3, 1));
    std::fs::remove_dir_all(d.join("out")).unwrap();
    // non-square and non power-of-two sizes
    let odd = d.join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("a.png"), encode_png(&[1; 6 * 6], 6, 6, 1).unwrap()).unwrap();
    let e = err(&odd, &plain);
    assert!(e.contains("power of two"), "{e}");
    nothing_left();
    // oversized split: nothing written
    let src = d.join("l.zip");
    labelled_zip(&src, &[10, 10]);
    let out = d.join("split");
    let o = SplitOptions {
        reference_fraction: 0.5,
        ratios: Ratios::Uniform,
        max_per_class: Some(9),
        seed: 0,
    };
    let e = format!("{:#}", split(&src, &out, &o, &mut no_progress()).unwrap_err());
    assert!(e.contains("class 0 has 10 images"), "{e}");
    assert!(!out.exists());
    // an unlabelled zip cannot be split
    let un = d.join("u.zip");
    write_dataset_zip(&un, &[0; 2 * 48], 2, 4, 4, 3, None).unwrap();
    let e = format!("{:#}", split(&un, &out, &o, &mut no_progress()).unwrap_err());
    assert!(e.contains("no labels"), "{e}");
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tiw-split-"))
        .collect();
    assert!(leftovers.is_empty(), "staging folders left behind");
    // the CLI reports the error and exits 1
    let o = tiw()
        .args([
            "dataset",
            "convert",
            "--source",
            &s(&d.join("empty")),
            "--dest",
            &s(&dest),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image files"));
    let _ = std::io::stdout().flush();
}
