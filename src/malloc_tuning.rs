//! glibc `malloc` settings for libtorch's workload.
//!
//! libtorch's CPU tensors come from the C allocator (`posix_memalign`). With glibc's defaults,
//! blocks above the (adaptive) mmap threshold are fresh `mmap`s that `free` returns to the
//! kernel at once, and the top of the heap is trimmed when more than 128 KiB…64 MiB is free.
//! A training step allocates and frees hundreds of MB of activations and gradients every
//! iteration, so each step page-faults the same memory back in and the kernel zeroes it again
//! (`clear_page` was 18 % of the cycles of a TIW-EDM step at batch 8 on CPU). Keeping freed
//! memory in the heap for reuse removes that: `cargo bench --bench train` (which runs each
//! loss with and without these settings in the same run) measured the TIW step 8.86 → 5.46 s
//! and the EDM step 4.38 → 4.34 s, with the same peak RSS, before fused attention removed the
//! largest temporaries; with channels-last training convolutions the settings save 0–1.6 s
//! per step (docs/BENCHMARKS.md).
//! The cost is that memory freed after a peak is not given back to the system until the
//! process exits, which is what a training or sampling run wants.

/// Largest block served from the heap instead of a private `mmap` (bytes; glibc's `mallopt`
/// takes an `int`).
pub const MMAP_THRESHOLD: i32 = 1 << 30;

/// Free memory at the top of the heap kept instead of being trimmed (bytes).
pub const TRIM_THRESHOLD: i32 = i32::MAX;

/// Sets `M_MMAP_THRESHOLD` = [`MMAP_THRESHOLD`] and `M_TRIM_THRESHOLD` = [`TRIM_THRESHOLD`]
/// with glibc's `mallopt`, unless the user already tunes malloc (`GLIBC_TUNABLES` naming
/// `glibc.malloc`, or `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` set) or
/// `TIW_MALLOC=default`. Call it once, early, before other threads allocate. Returns whether
/// the settings were applied (false on other C libraries).
pub fn keep_freed_memory() -> bool {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("TIW_MALLOC") == "default"
        || env("GLIBC_TUNABLES").contains("glibc.malloc")
        || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
        || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some()
    {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
