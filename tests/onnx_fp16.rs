//! `tiw export --precision fp16`: every fixture net exports to a graph with f16 weights and
//! compute inside the network (f32 inputs/outputs, preconditioning, embeddings, GroupNorm
//! statistics, softmax), passes `onnx.checker` (full check), says `tiw.precision = fp16` in
//! its metadata, runs on tract (and on ONNX Runtime's CPU EP where it has the f16 kernels),
//! and stays within the fp16 tolerance of the official f32 outputs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::tolerances::TOL_FP16_ONNX_VS_FIXTURE;
use common::{arr, fixture, read_npz, NpzArray};
use tiw::device::DeviceSpec;
use tiw::onnx_export::{self, ExportOpts, OnnxRuntime};
use tiw::parity::norm_err;
use tiw::runtime::NamedArray;
use tiw_models::export::Precision;

const NETS: [&str; 6] = [
    "edm_adm_r16_uncond",
    "edm_ddpmpp_r16_uncond",
    "edm_ddpmpp_r8_cond10",
    "edm_ncsnpp_r16_uncond",
    "ve_ncsnpp_r8_uncond",
    "vp_ddpmpp_r8_uncond",
];

fn named(name: &str, a: &NpzArray) -> NamedArray {
    NamedArray {
        name: name.into(),
        shape: a.shape.clone(),
        data: a.to_f32(),
    }
}

fn onnx_check(files: &[PathBuf]) {
    let py = std::env::var("TIW_PY").expect("TIW_PY is not set: run the tests through `make test`");
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

#[test]
fn fp16_exports_are_valid_and_close_to_f32_on_every_fixture_net() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ExportOpts {
        what: None,
        opset: 17,
        extractor: None,
        img_resolution: None,
    };
    let mut files = Vec::new();
    let mut worst = (0f64, String::new());
    for net in NETS {
        let src = fixture(&format!("nets/{net}/network-snapshot-000000.pkl"));
        let (m16, _) = onnx_export::export_with_precision(&src, &opts, Precision::Fp16).unwrap();
        let path = dir.path().join(format!("{net}.fp16.onnx"));
        onnx_export::write_onnx(&m16, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes,
            m16.to_bytes().unwrap(),
            "{net}: streamed vs in-memory encoding"
        );
        let proto = m16.into_proto().unwrap();
        assert_eq!(
            tiw_models::onnx_ops::encode(&proto),
            bytes,
            "{net}: prost's encoding"
        );
        let meta = |k: &str| {
            proto
                .metadata_props
                .iter()
                .find(|p| p.key == k)
                .map(|p| p.value.clone())
        };
        assert_eq!(meta("tiw.precision").as_deref(), Some("fp16"), "{net}");
        let graph = proto.graph.as_ref().unwrap();
        let (h, f): (Vec<_>, Vec<_>) = graph.initializer.iter().partition(|t| t.data_type == 10);
        let numel = |v: &Vec<&tract_onnx::pb::TensorProto>| {
            v.iter().map(|t| t.dims.iter().product::<i64>()).sum::<i64>()
        };
        let (f32_bytes, _) = onnx_export::export(&src, &opts).unwrap();
        let size32 = f32_bytes.to_bytes().unwrap().len();
        println!(
            "{net}: {} f16 initializers ({} values), {} f32 ({} values); file {} bytes (fp32: {size32})",
            h.len(),
            numel(&h),
            f.len(),
            numel(&f),
            bytes.len()
        );
        // the f32 ones: embedding MLP, per-block affine (emb path), GroupNorm affine, constants
        assert!(
            numel(&h) > 4 * numel(&f),
            "{net}: the weights are not stored as f16"
        );
        files.push(path);

        let fx = read_npz(&fixture(&format!("nets/{net}/forward.npz")));
        let has = |k: &str| fx.iter().any(|a| a.name == k);
        let mut ins = vec![named("x", arr(&fx, "x")), named("sigma", arr(&fx, "sigma"))];
        if has("class_labels") {
            ins.push(named("class_labels", arr(&fx, "class_labels")));
        }
        let mut reference = arr(&fx, "D");
        if has("augment_labels") {
            ins.push(named("augment_labels", arr(&fx, "augment_labels")));
            reference = arr(&fx, "D_augment");
        }
        let want = reference.to_f32();
        for rt in [OnnxRuntime::Tract, OnnxRuntime::Ort] {
            let run = onnx_export::load(&bytes, rt, DeviceSpec::Cpu).and_then(|mut g| g.run(&ins));
            match (rt, run) {
                (_, Ok(out)) => {
                    let e = norm_err(&out[0].data, &want);
                    println!(
                        "  {rt:?} CPU: D vs f32 fixture {e:.2e} (tolerance {TOL_FP16_ONNX_VS_FIXTURE:.0e})"
                    );
                    assert!(e <= TOL_FP16_ONNX_VS_FIXTURE, "{net} {rt:?}: {e:.3e}");
                    assert!(e > 1e-6, "{net} {rt:?}: {e:.1e}: not computed in f16?");
                    if e > worst.0 {
                        worst = (e, format!("{net} {rt:?}"));
                    }
                }
                // ONNX Runtime's CPU EP has no f16 kernels for some of these ops on x86-64:
                // reported, not required (the fp16 graph targets the CUDA EP)
                (OnnxRuntime::Ort, Err(e)) => {
                    let msg = format!("{e:#}");
                    println!("  Ort CPU: not runnable: {}", msg.lines().next().unwrap_or(""));
                    assert!(
                        msg.contains("implementation") || msg.contains("kernel"),
                        "{net}: {msg}"
                    );
                }
                (_, Err(e)) => panic!("{net} {rt:?}: {e:#}"),
            }
        }
    }
    onnx_check(&files);
    println!(
        "worst fp16 vs f32 fixtures: {:.2e} ({}), tolerance {TOL_FP16_ONNX_VS_FIXTURE:.0e}",
        worst.0, worst.1
    );
}

#[test]
fn fp16_applies_to_denoisers_only() {
    let opts = ExportOpts {
        what: None,
        opset: 17,
        extractor: None,
        img_resolution: None,
    };
    let err = match onnx_export::export_with_precision(
        &fixture("classifier/feature_extractor.pt"),
        &opts,
        Precision::Fp16,
    ) {
        Ok(_) => panic!("an fp16 extractor export must be refused"),
        Err(e) => e,
    };
    assert!(
        format!("{err:#}").contains("--precision fp16 applies to EDM denoisers"),
        "{err:#}"
    );
    let (m, _) = onnx_export::export(
        &fixture("nets/vp_ddpmpp_r8_uncond/network-snapshot-000000.pkl"),
        &opts,
    )
    .unwrap();
    let p = m.into_proto().unwrap();
    let v = p
        .metadata_props
        .iter()
        .find(|x| x.key == "tiw.precision")
        .map(|x| x.value.as_str());
    assert_eq!(v, Some("fp32"));
}
