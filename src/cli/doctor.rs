//! `tiw doctor`: what the runtimes see on this machine.

/// Prints libtorch / CUDA / ONNX Runtime facts.
pub fn run() -> anyhow::Result<()> {
    println!("tiw {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads: {}", tch::get_num_threads());
    // libtorch registers CUDA only once libtorch_cuda.so is loaded (what --device cuda does)
    match tiw::device::load_cuda_backend() {
        Ok(()) => {
            let n = tch::Cuda::device_count();
            println!("libtorch CUDA backend: loaded; {n} CUDA device(s) visible");
        }
        Err(e) => println!("libtorch CUDA backend: not loadable ({e}); --device cuda will fail"),
    }
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(p) => println!(
            "ONNX Runtime library: {p} ({})",
            if std::path::Path::new(&p).exists() {
                "present"
            } else {
                "MISSING"
            }
        ),
        Err(_) => println!("ONNX Runtime library: ORT_DYLIB_PATH not set (run `. scripts/env.sh`)"),
    }
    Ok(())
}
