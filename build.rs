//! Embeds an rpath to libtorch's lib dir (learned from torch-sys, which has `links = "tch"`)
//! so that `target/*/tiw` and the test binaries run without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    record_ort_dylib();
}

/// Records the ONNX Runtime library of the build's setup (`ORT_DYLIB_PATH`, exported by
/// scripts/env.sh) as the compile-time default `TIW_ORT_DYLIB_DEFAULT` (read with
/// `option_env!`), so the binaries find it without the setup shell, as libtorch through the
/// rpath. `ORT_DYLIB_PATH` at run time still overrides it.
fn record_ort_dylib() {
    println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        println!("cargo:rustc-env=TIW_ORT_DYLIB_DEFAULT={p}");
    }
}
