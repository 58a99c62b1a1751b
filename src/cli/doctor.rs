//! `tiw doctor`: what the runtimes see on this machine.

use tiw::device::DeviceSpec;
use tiw::runtime::ort_rt::{self, DylibSource};

/// A one-node graph (`y = relu(x)`, x `[N]`) to try execution providers with.
fn probe_graph() -> anyhow::Result<Vec<u8>> {
    use tiw_models::backend::Ops;
    use tiw_models::onnx_ops::{Dim, OnnxOps};
    let o = OnnxOps::new(17)?;
    let x = o.input("x", &[Dim::Sym("N".into())]);
    let y = o.relu(&x)?;
    Ok(o.finish(&[("y", &y, vec![Dim::Sym("N".into())])], &[])
        .to_bytes()?)
}

/// `f()` or "not found" when it fails or panics (libtorch queries throw on CPU-only builds).
fn query(f: impl FnOnce() -> i64 + std::panic::UnwindSafe) -> String {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    match r {
        Ok(v) if v > 0 => v.to_string(),
        _ => "not found".into(),
    }
}

/// Prints libtorch / CUDA / cuDNN / ONNX Runtime facts: versions found and the ONNX Runtime
/// execution providers that actually create a session here.
pub fn run() -> anyhow::Result<()> {
    println!("tiw {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads: {}", tch::get_num_threads());
    // libtorch registers CUDA only once libtorch_cuda.so is loaded (what --device cuda does)
    match tiw::device::load_cuda_backend() {
        Ok(()) => {
            let n = tch::Cuda::device_count();
            println!("libtorch CUDA backend: loaded; {n} CUDA device(s) visible");
            println!("  CUDA runtime (libtorch): {}", query(tch::utils::version_cudart));
            let cudnn = if tch::Cuda::cudnn_is_available() {
                query(tch::utils::version_cudnn)
            } else {
                "not found".into()
            };
            println!("  cuDNN (libtorch): {cudnn}");
        }
        Err(e) => {
            println!("libtorch CUDA backend: not loadable ({e}); --device cuda will fail");
            println!("  CUDA runtime (libtorch): not found");
            println!("  cuDNN (libtorch): not found");
        }
    }
    match ort_rt::BUILD_DYLIB {
        Some(p) => println!("ONNX Runtime build-time default: {p}"),
        None => println!("ONNX Runtime build-time default: none"),
    }
    match ort_rt::dylib_path() {
        Ok((p, src)) => {
            let how = match src {
                DylibSource::Env => "ORT_DYLIB_PATH",
                DylibSource::Build => "build-time default",
            };
            println!("ONNX Runtime library: {} (from {how})", p.display());
        }
        Err(e) => println!("ONNX Runtime library: {e:#}"),
    }
    let graph = probe_graph()?;
    let mut loadable = Vec::new();
    for (name, dev) in [("CPU", DeviceSpec::Cpu), ("CUDA", DeviceSpec::Cuda(0))] {
        match ort_rt::OrtGraph::new(&graph, dev) {
            Ok(_) => {
                println!("  ort execution provider {name}: loadable");
                loadable.push(name);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                let first = msg.lines().next().unwrap_or("");
                println!("  ort execution provider {name}: not loadable ({first})");
            }
        }
    }
    println!(
        "ort execution providers loadable: {}",
        if loadable.is_empty() {
            "none".to_string()
        } else {
            loadable.join(", ")
        }
    );
    Ok(())
}
