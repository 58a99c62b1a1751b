//! Runs `benches/pytorch_baseline.py` (PyTorch eager on this machine, same run) as a child
//! process with `$TIW_TORCH_PY` — the full-torch venv `scripts/env.sh` keeps when
//! `TIW_TORCH_CHECK=1` (`make test` and `make bench` set it). Returns the JSON it wrote, or
//! `None` with the reason printed when the baseline cannot run (no such venv, a failure): the
//! benchmarks then report their numbers against the issues' anchors only.

// Each bench uses a subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The baseline script, next to this file's bench targets.
pub fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pytorch_baseline.py")
}

/// `python pytorch_baseline.py --threads T ARGS… --out OUT` → the parsed `OUT`.
pub fn run(threads: i32, args: &[&str], out: &Path) -> Option<Value> {
    let Some(py) = std::env::var_os("TIW_TORCH_PY") else {
        eprintln!(
            "  PyTorch baseline skipped: TIW_TORCH_PY is not set (run through `make bench`, which \
             sets TIW_TORCH_CHECK=1 so that scripts/env.sh provides a full-torch venv)"
        );
        return None;
    };
    let status = Command::new(&py)
        .arg(script())
        .arg("--threads")
        .arg(threads.to_string())
        .args(args)
        .arg("--out")
        .arg(out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("  PyTorch baseline failed ({s}); reported without it");
            return None;
        }
        Err(e) => {
            eprintln!(
                "  PyTorch baseline: cannot start {}: {e}",
                Path::new(&py).display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(out).ok()?;
    serde_json::from_str(&text).ok()
}

/// The smallest number of a JSON array of numbers.
pub fn best(v: &Value) -> Option<f64> {
    v.as_array()?
        .iter()
        .filter_map(Value::as_f64)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))))
}

/// The median of a JSON array of numbers.
pub fn median(v: &Value) -> Option<f64> {
    let mut xs: Vec<f64> = v.as_array()?.iter().filter_map(Value::as_f64).collect();
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[xs.len() / 2])
}
