//! Placeholder; replaced by the conversion benchmark.
fn main() {}
