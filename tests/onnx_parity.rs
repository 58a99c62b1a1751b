//! ONNX export from the single model definition: every fixture network, the feature
//! extractor, both discriminators and the pipeline pass `onnx.checker` (full check), load in
//! ONNX Runtime and tract, run at batch 1 and 7 from one export, and match the official
//! outputs (and libtorch).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::tolerances::{TOL_VS_FIXTURE, TOL_VS_TCH};
use common::{arr, fixture, read_npz, NpzArray};
use tiw::device::DeviceSpec;
use tiw::onnx_export::{self, ExportOpts, OnnxRuntime, WhatGraph};
use tiw::parity::norm_err;
use tiw::runtime::NamedArray;

const NETS: [&str; 6] = [
    "edm_adm_r16_uncond",
    "edm_ddpmpp_r16_uncond",
    "edm_ddpmpp_r8_cond10",
    "edm_ncsnpp_r16_uncond",
    "ve_ncsnpp_r8_uncond",
    "vp_ddpmpp_r8_uncond",
];

fn export_to(src: &Path, opts: &ExportOpts, out: &Path) -> Vec<u8> {
    let (m, _) = onnx_export::export(src, opts).unwrap_or_else(|e| panic!("{}: {e:#}", src.display()));
    // three encodings of one export: streamed to the file, streamed into memory, and prost's
    // encoding of the materialised ModelProto — byte for byte the same
    onnx_export::write_onnx(&m, out).unwrap();
    let streamed = std::fs::read(out).unwrap();
    let in_memory = m.to_bytes().unwrap();
    let expected_len = m.encoded_len();
    let materialized = tiw_models::onnx_ops::encode(&m.into_proto().unwrap());
    assert_eq!(expected_len, materialized.len(), "{}: encoded_len", src.display());
    assert!(
        streamed == materialized && in_memory == materialized,
        "{}: the streamed encoding differs from prost's ({} / {} / {} bytes)",
        src.display(),
        streamed.len(),
        in_memory.len(),
        materialized.len()
    );
    streamed
}

/// Runs `onnx.checker.check_model(full_check=True)` on every file (one Python process).
fn onnx_check(files: &[PathBuf]) {
    let Ok(py) = std::env::var("TIW_PY") else {
        panic!("TIW_PY is not set: run the tests through `make test` (scripts/env.sh)");
    };
    let script = "import sys, onnx\nfor p in sys.argv[1:]:\n    onnx.checker.check_model(onnx.load(p), full_check=True)\n    print('checker ok', p)\n";
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .expect("python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "onnx.checker failed:\n{text}");
}

fn named(name: &str, a: &NpzArray) -> NamedArray {
    NamedArray {
        name: name.into(),
        shape: a.shape.clone(),
        data: a.to_f32(),
    }
}

/// Repeats the rows of `a` cyclically to `n` rows.
fn tile(a: &NamedArray, n: usize) -> NamedArray {
    let per: usize = a.shape[1..].iter().product();
    let rows = a.shape[0];
    let mut data = Vec::with_capacity(n * per);
    for i in 0..n {
        let r = i % rows;
        data.extend_from_slice(&a.data[r * per..(r + 1) * per]);
    }
    let mut shape = a.shape.clone();
    shape[0] = n;
    NamedArray {
        name: a.name.clone(),
        shape,
        data,
    }
}

/// Runs `inputs` at batch 1 (first row) and batch 7 (rows tiled) on both runtimes and checks
/// against `reference` (rows tiled likewise). Returns the worst error.
fn check_graph(
    bytes: &[u8],
    what: &str,
    inputs: &[NamedArray],
    reference: &NpzArray,
    out_index: usize,
) -> f64 {
    let mut worst = 0f64;
    let rref = NamedArray {
        name: "ref".into(),
        shape: reference.shape.clone(),
        data: reference.to_f32(),
    };
    for rt in [OnnxRuntime::Ort, OnnxRuntime::Tract] {
        let mut g =
            onnx_export::load(bytes, rt, DeviceSpec::Cpu).unwrap_or_else(|e| panic!("{what}: {rt:?}: {e:#}"));
        for n in [1usize, 7] {
            let ins: Vec<NamedArray> = inputs.iter().map(|a| tile(a, n)).collect();
            let out = g
                .run(&ins)
                .unwrap_or_else(|e| panic!("{what} {rt:?} batch {n}: {e:#}"));
            let want = tile(&rref, n);
            let got = &out[out_index];
            assert_eq!(got.shape, want.shape, "{what} {rt:?} batch {n}: shape");
            let e = norm_err(&got.data, &want.data);
            println!("  {what:<32} {:<6} batch {n}: err {e:.2e}", format!("{rt:?}"));
            assert!(
                e <= TOL_VS_FIXTURE,
                "{what} {rt:?} batch {n}: {e:.3e} > {TOL_VS_FIXTURE:.0e}"
            );
            worst = worst.max(e);
        }
    }
    worst
}

#[test]
fn fixture_nets_export_and_run_on_ort_and_tract() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut worst = (0f64, String::new());
    for net in NETS {
        let src = fixture(&format!("nets/{net}/network-snapshot-000000.pkl"));
        let path = dir.path().join(format!("{net}.onnx"));
        let opts = ExportOpts {
            what: None,
            opset: 17,
            extractor: None,
            img_resolution: None,
        };
        let bytes = export_to(&src, &opts, &path);
        files.push(path);
        let f = read_npz(&fixture(&format!("nets/{net}/forward.npz")));
        let g = onnx_export::load(&bytes, OnnxRuntime::Ort, DeviceSpec::Cpu).unwrap();
        let names = g.input_names();
        let mut ins = vec![named("x", arr(&f, "x")), named("sigma", arr(&f, "sigma"))];
        let n = arr(&f, "x").shape[0];
        let mut reference = arr(&f, "D");
        if names.iter().any(|x| x == "class_labels") {
            ins.push(named("class_labels", arr(&f, "class_labels")));
        }
        if names.iter().any(|x| x == "augment_labels") {
            // D_augment uses the recorded labels; D (no labels) equals zeros (map_augment has no bias)
            ins.push(named("augment_labels", arr(&f, "augment_labels")));
            reference = arr(&f, "D_augment");
        }
        println!("{net}:");
        let e = check_graph(&bytes, net, &ins, reference, 0);
        if e > worst.0 {
            worst = (e, net.to_string());
        }
        if names.iter().any(|x| x == "augment_labels") {
            let zeros = NamedArray {
                name: "augment_labels".into(),
                shape: vec![n, 9],
                data: vec![0.0; n * 9],
            };
            let ins2: Vec<NamedArray> = ins
                .iter()
                .filter(|a| a.name != "augment_labels")
                .cloned()
                .chain([zeros])
                .collect();
            check_graph(&bytes, &format!("{net} (augment 0 = D)"), &ins2, arr(&f, "D"), 0);
        }
    }
    onnx_check(&files);
    println!("worst vs fixtures: {:.2e} ({})", worst.0, worst.1);
}

#[test]
fn onnx_runtimes_match_tch_within_1e5() {
    use tch::Tensor;
    use tiw_models::tch_ops::{TchOps, TchTensor};
    let o = TchOps::new(tch::Device::Cpu);
    for net in [
        "edm_ddpmpp_r8_cond10",
        "edm_ncsnpp_r16_uncond",
        "edm_adm_r16_uncond",
    ] {
        let src = fixture(&format!("nets/{net}/network-snapshot-000000.pkl"));
        let (m, _) = onnx_export::export(
            &src,
            &ExportOpts {
                what: None,
                opset: 17,
                extractor: None,
                img_resolution: None,
            },
        )
        .unwrap();
        let bytes = m.to_bytes().unwrap();
        let f = read_npz(&fixture(&format!("nets/{net}/forward.npz")));
        let t = |a: &NpzArray| {
            TchTensor(
                Tensor::from_slice(&a.to_f32())
                    .reshape(a.shape.iter().map(|&d| d as i64).collect::<Vec<_>>()),
            )
        };
        let model = tiw_models::load::edm_denoiser(&o, &src).unwrap();
        let has = |k: &str| f.iter().any(|a| a.name == k);
        let labels = has("class_labels").then(|| t(arr(&f, "class_labels")));
        let aug = has("augment_labels").then(|| t(arr(&f, "augment_labels")));
        let d = tch::no_grad(|| {
            model.forward(
                &o,
                &t(arr(&f, "x")),
                &t(arr(&f, "sigma")),
                labels.as_ref(),
                aug.as_ref(),
                false,
            )
        })
        .unwrap()
        .d;
        let dv = Vec::<f32>::try_from(&d.0.contiguous().view(-1)).unwrap();
        let mut ins = vec![named("x", arr(&f, "x")), named("sigma", arr(&f, "sigma"))];
        if has("class_labels") {
            ins.push(named("class_labels", arr(&f, "class_labels")));
        }
        if has("augment_labels") {
            ins.push(named("augment_labels", arr(&f, "augment_labels")));
        }
        for rt in [OnnxRuntime::Ort, OnnxRuntime::Tract] {
            let mut g = onnx_export::load(&bytes, rt, DeviceSpec::Cpu).unwrap();
            let out = g.run(&ins).unwrap();
            let e = norm_err(&out[0].data, &dv);
            println!("{net} {rt:?} vs tch: {e:.2e}");
            assert!(e <= TOL_VS_TCH, "{net} {rt:?} vs tch {e:.3e}");
        }
    }
}

#[test]
fn adm_encoders_and_pipeline_export_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let f = read_npz(&fixture("classifier/forward.npz"));
    let fe_pt = fixture("classifier/feature_extractor.pt");
    let dis_pt = fixture("classifier/discriminator.pt");
    let cdis_pt = fixture("classifier/discriminator_cond_legacy.pt");
    let mut files = Vec::new();
    let mk = |what: WhatGraph,
              src: &Path,
              name: &str,
              extractor: Option<PathBuf>,
              opset: i64|
     -> (Vec<u8>, PathBuf) {
        let p = dir.path().join(name);
        let b = export_to(
            src,
            &ExportOpts {
                what: Some(what),
                opset,
                extractor,
                img_resolution: None,
            },
            &p,
        );
        (b, p)
    };
    let (fe, p) = mk(WhatGraph::Extractor, &fe_pt, "fe.onnx", None, 17);
    files.push(p);
    check_graph(
        &fe,
        "extractor features",
        &[named("x", arr(&f, "x")), named("t", arr(&f, "t"))],
        arr(&f, "features"),
        0,
    );
    let (dis, p) = mk(WhatGraph::Discriminator, &dis_pt, "dis.onnx", None, 18);
    files.push(p);
    check_graph(
        &dis,
        "discriminator logits",
        &[named("features", arr(&f, "features")), named("t", arr(&f, "t"))],
        arr(&f, "dis_logits"),
        0,
    );
    let (cdis, p) = mk(WhatGraph::Discriminator, &cdis_pt, "cdis.onnx", None, 21);
    files.push(p);
    let onehot = {
        let a = arr(&f, "cond_labels_onehot");
        NamedArray {
            name: "condition".into(),
            shape: a.shape.clone(),
            data: a.to_f32(),
        }
    };
    // the sigmoid of the conditional logits is the recorded output
    let mut g = onnx_export::load(&cdis, OnnxRuntime::Ort, DeviceSpec::Cpu).unwrap();
    let out = g
        .run(&[
            named("features", arr(&f, "features")),
            named("t", arr(&f, "t")),
            onehot.clone(),
        ])
        .unwrap();
    let sig: Vec<f32> = out[0].data.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
    let e = norm_err(&sig, &arr(&f, "cdis_sigmoid_onehot").to_f32());
    println!("  conditional discriminator (ort, opset 21): err {e:.2e}");
    assert!(e <= TOL_VS_FIXTURE);
    let (pipe, p) = mk(
        WhatGraph::DiscriminatorPipeline,
        &dis_pt,
        "pipe.onnx",
        Some(fe_pt.clone()),
        17,
    );
    files.push(p);
    check_graph(
        &pipe,
        "pipeline prediction",
        &[named("x_vp", arr(&f, "x")), named("t", arr(&f, "t"))],
        arr(&f, "closure_prediction"),
        0,
    );
    onnx_check(&files);
}

#[test]
fn full_size_configurations_export_with_expected_parameter_counts() {
    use tiw_converters::{Json, TensorStore};
    use tiw_models::config::NetConfig;
    use tiw_models::vb::{TensorKind, Weights};
    let o = tiw_models::tch_ops::TchOps::new(tch::Device::Cpu);
    for name in [
        "cifar10_ddpmpp_edm_uncond",
        "celeba64_ddpmpp_edm_uncond",
        "cifar10_ncsnpp_edm_uncond",
        "cifar10_adm_edm_uncond",
    ] {
        let j =
            Json::parse(&std::fs::read_to_string(fixture(&format!("keys/{name}.json"))).unwrap()).unwrap();
        let cfg = NetConfig::from_json(j.get("config").unwrap()).unwrap();
        // list the configuration's tensors, then export a zero-weight store of them
        let w = Weights::zeros(&o);
        tiw_models::edm::EdmDenoiser::new(&w.root(), &cfg).unwrap();
        let listing = w.listing();
        let store = TensorStore::from_owned(
            listing
                .iter()
                .map(|l| {
                    (
                        l.name.clone(),
                        tiw_converters::DType::F32,
                        l.shape.clone(),
                        vec![0u8; 4 * l.shape.iter().product::<usize>()],
                    )
                })
                .collect(),
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        let m = tiw_models::export::denoiser(&store, &cfg, None, 17, &[]).unwrap();
        let params: usize = listing
            .iter()
            .filter(|l| l.kind == TensorKind::Param)
            .map(|l| l.shape.iter().product::<usize>())
            .sum();
        let exported = m.parameter_count();
        let buffers = store.total_numel() - params;
        println!("{name}: exported {exported} = {params} params + {buffers} buffer elements ({:.1} s, debug build)", t0.elapsed().as_secs_f64());
        assert_eq!(exported, params + buffers);
        assert_eq!(params as i64, j.get("num_params").unwrap().as_i64().unwrap());
    }
}

#[test]
fn bad_onnx_and_bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl");
    let (m, _) = onnx_export::export(
        &src,
        &ExportOpts {
            what: None,
            opset: 17,
            extractor: None,
            img_resolution: None,
        },
    )
    .unwrap();
    let bytes = m.to_bytes().unwrap();
    // truncated / corrupt files
    for (name, data) in [
        ("trunc.onnx", bytes[..bytes.len() / 3].to_vec()),
        ("garbage.onnx", vec![0xffu8; 1000]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &data).unwrap();
        let e = onnx_export::read_model(&p)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_else(|| "accepted".into());
        println!("{name}: {e}");
        assert!(e.contains(name), "{e}");
        for rt in [OnnxRuntime::Ort, OnnxRuntime::Tract] {
            assert!(
                onnx_export::load(&data, rt, DeviceSpec::Cpu).is_err(),
                "{name} {rt:?} should be rejected"
            );
        }
    }
    let f = read_npz(&fixture("nets/vp_ddpmpp_r8_uncond/forward.npz"));
    for rt in [OnnxRuntime::Ort, OnnxRuntime::Tract] {
        let mut g = onnx_export::load(&bytes, rt, DeviceSpec::Cpu).unwrap();
        // missing input
        let e = format!("{:#}", g.run(&[named("x", arr(&f, "x"))]).unwrap_err());
        assert!(e.contains("missing graph input \"sigma\""), "{e}");
        // unknown input
        let e = format!(
            "{:#}",
            g.run(&[
                named("x", arr(&f, "x")),
                named("sigma", arr(&f, "sigma")),
                named("y", arr(&f, "x"))
            ])
            .unwrap_err()
        );
        assert!(e.contains("not an input"), "{e}");
        // wrong shape
        let bad = NamedArray {
            name: "x".into(),
            shape: vec![3, 3, 4, 4],
            data: vec![0.0; 3 * 3 * 16],
        };
        let e = format!(
            "{:#}",
            g.run(&[bad, named("sigma", arr(&f, "sigma"))]).unwrap_err()
        );
        println!("{rt:?} wrong shape: {e}");
    }
    // CUDA requested where there is none: a loud error, no CPU fallback
    let e = onnx_export::load(&bytes, OnnxRuntime::Ort, DeviceSpec::Cuda(0))
        .err()
        .map(|e| format!("{e:#}"));
    println!("ort --device cuda: {e:?}");
    assert!(e.is_some_and(|e| e.contains("CUDA")));
}
