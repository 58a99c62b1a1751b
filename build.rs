//! 1. Embeds an rpath to libtorch's lib dir (learned from torch-sys, which has
//!    `links = "tch"`) so that `target/*/tiw` and the test binaries run without
//!    LD_LIBRARY_PATH.
//! 2. Compiles the c10d shim (`csrc/c10d_shim.cpp`, PyTorch's distributed engine behind
//!    `src/dist/`) against that same libtorch. With the cargo feature `nccl` it also builds
//!    the ProcessGroupNCCL path, which needs the CUDA runtime and NCCL headers (see
//!    `nccl_include_dirs`).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=TIW_NCCL_INCLUDE");
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/c10d_shim.h");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report libtorch's lib dir"),
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    build_shim(&lib);
    record_ort_dylib();
}

fn build_shim(lib: &Path) {
    let torch = lib.parent().expect("libtorch lib dir has a parent");
    // The PyPI wheels are built with the C++11 ABI (torch-sys's default too).
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let nccl = std::env::var_os("CARGO_FEATURE_NCCL").is_some();
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        // The wheels ship no gloo headers; ProcessGroupGloo.hpp includes them.
        .include("third_party/gloo-headers")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        // Without it ProcessGroupGloo.hpp compiles to nothing.
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .flag_if_supported("-Wno-c++20-extensions")
        .file("csrc/c10d_shim.cpp");
    if nccl {
        b.define("TIW_SHIM_WITH_NCCL", None).define("USE_C10D_NCCL", None);
        for dir in nccl_include_dirs(torch) {
            b.include(dir);
        }
    }
    b.compile("tiw_c10d_shim");
    // The static shim comes before torch-sys's libraries on the link line; the c10d
    // symbols live in libtorch_cpu (Gloo, TCPStore) and libtorch_cuda (NCCL).
    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// Include dirs for the NCCL build: `TIW_NCCL_INCLUDE` (':'-separated) if set, else the
/// nvidia wheels next to torch in the same site-packages (`nvidia/cu13/include` holds the
/// CUDA runtime, cuBLAS/cuSPARSE/cuSOLVER, crt and cccl headers once `nvidia-cuda-crt` and
/// `nvidia-cuda-cccl` are installed; `nvidia/nccl/include` holds nccl.h).
fn nccl_include_dirs(torch: &Path) -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("TIW_NCCL_INCLUDE") {
        return std::env::split_paths(&list).collect();
    }
    let nvidia = torch.parent().map(|sp| sp.join("nvidia"));
    let dirs: Vec<PathBuf> = nvidia
        .iter()
        .flat_map(|n| [n.join("cu13/include"), n.join("nccl/include")])
        .filter(|d| d.is_dir())
        .collect();
    let has = |f: &str| dirs.iter().any(|d| d.join(f).is_file());
    if !has("nccl.h") || !has("cuda_runtime_api.h") || !has("crt/host_config.h") {
        panic!(
            "feature `nccl`: CUDA/NCCL headers not found next to {} (need nccl.h, \
             cuda_runtime_api.h and crt/host_config.h: use the full torch GPU wheel set plus \
             `pip install nvidia-cuda-crt nvidia-cuda-cccl`, or set TIW_NCCL_INCLUDE)",
            torch.display()
        );
    }
    dirs
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
