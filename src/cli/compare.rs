//! `tiw compare A.npz B.npz`: per-key parity table (B is the reference).

use std::path::PathBuf;

use anyhow::{bail, Result};

use tiw::npz;

/// Arguments of `tiw compare`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Arrays to check (e.g. ours).
    a: PathBuf,
    /// Reference arrays (e.g. PyTorch's).
    b: PathBuf,
    /// Relative tolerance, applied to max|B| of each key.
    #[arg(long, default_value_t = 1e-5)]
    rtol: f64,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 0.0)]
    atol: f64,
    /// Only these keys (comma-separated); each must exist in both files.
    #[arg(long, value_delimiter = ',')]
    keys: Vec<String>,
}

/// Runs `tiw compare`; exits with status 1 if any key fails.
pub fn run(a: Args) -> Result<()> {
    let xa = npz::read(&a.a)?;
    let xb = npz::read(&a.b)?;
    let keys: Vec<String> = if a.keys.is_empty() {
        xa.iter()
            .filter(|x| xb.iter().any(|y| y.name == x.name))
            .map(|x| x.name.clone())
            .collect()
    } else {
        a.keys.clone()
    };
    if keys.is_empty() {
        bail!("{} and {} share no keys", a.a.display(), a.b.display());
    }
    let w = keys.iter().map(|k| k.len()).max().unwrap_or(3).max(3);
    println!(
        "{:<w$}  {:<18} {:>12} {:>12}  result",
        "key", "shape", "max abs err", "norm. err"
    );
    let mut failed = 0;
    for k in &keys {
        let (ea, eb) = (npz::get(&xa, k, &a.a)?, npz::get(&xb, k, &a.b)?);
        let shape = format!("{:?}", eb.shape);
        if ea.shape != eb.shape {
            println!(
                "{k:<w$}  {shape:<18} {:>12} {:>12}  FAIL (shape {:?})",
                "-", "-", ea.shape
            );
            failed += 1;
            continue;
        }
        let (va, vb) = (ea.to_f64(), eb.to_f64());
        let scale = vb.iter().fold(0f64, |m, x| m.max(x.abs()));
        let mut max_abs = 0f64;
        let mut nan_mismatch = false;
        for (x, y) in va.iter().zip(&vb) {
            if x.is_nan() || y.is_nan() {
                nan_mismatch |= x.is_nan() != y.is_nan();
                continue;
            }
            if x.is_infinite() || y.is_infinite() {
                nan_mismatch |= x != y;
                continue;
            }
            max_abs = max_abs.max((x - y).abs());
        }
        let norm = if scale > 0.0 { max_abs / scale } else { max_abs };
        let ok = !nan_mismatch && max_abs <= a.atol + a.rtol * scale;
        if !ok {
            failed += 1;
        }
        println!(
            "{k:<w$}  {shape:<18} {max_abs:>12.3e} {norm:>12.3e}  {}",
            if ok {
                "pass"
            } else if nan_mismatch {
                "FAIL (nan/inf)"
            } else {
                "FAIL"
            }
        );
    }
    let only_a: Vec<&str> = xa
        .iter()
        .filter(|x| !xb.iter().any(|y| y.name == x.name))
        .map(|x| x.name.as_str())
        .collect();
    if a.keys.is_empty() && !only_a.is_empty() {
        println!("only in {}: {}", a.a.display(), only_a.join(", "));
    }
    println!(
        "{} passed, {} failed (|a-b| <= atol {} + rtol {} * max|b|)",
        keys.len() - failed,
        failed,
        a.atol,
        a.rtol
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
