//! `tiw doctor`: what the runtimes see on this machine.

/// Prints libtorch / CUDA / ONNX Runtime facts.
pub fn run() -> anyhow::Result<()> {
    println!("tiw {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch threads: {}", tch::get_num_threads());
    let cuda = tch::utils::has_cuda();
    println!(
        "libtorch CUDA support loaded: {}",
        if cuda { "yes" } else { "no" }
    );
    if cuda {
        println!("CUDA devices: {}", tch::Cuda::device_count());
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
