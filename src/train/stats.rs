//! Training statistics in EDM's `stats.jsonl` layout: one JSON object per tick,
//! `{"<name>": {"num": n, "mean": m, "std": s}, …, "timestamp": unix seconds}`, where
//! `num/mean/std` summarise the scalars reported since the previous tick.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Running count, sum and sum of squares of one statistic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Moments {
    /// Number of scalars.
    pub num: f64,
    /// Σx.
    pub sum: f64,
    /// Σx².
    pub sum_sq: f64,
}

impl Moments {
    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.num > 0.0 {
            self.sum / self.num
        } else {
            0.0
        }
    }
    /// Population standard deviation, as `training_stats` computes it.
    pub fn std(&self) -> f64 {
        if self.num > 0.0 {
            (self.sum_sq / self.num - self.mean().powi(2)).max(0.0).sqrt()
        } else {
            0.0
        }
    }
}

/// Statistics collected between two ticks.
#[derive(Debug, Default)]
pub struct TickStats {
    values: BTreeMap<String, Moments>,
}

impl TickStats {
    /// Adds `num` scalars with the given sum and sum of squares to `name`.
    pub fn report_moments(&mut self, name: &str, num: f64, sum: f64, sum_sq: f64) {
        let m = self.values.entry(name.to_string()).or_default();
        m.num += num;
        m.sum += sum;
        m.sum_sq += sum_sq;
    }

    /// Adds one scalar.
    pub fn report(&mut self, name: &str, x: f64) {
        self.report_moments(name, 1.0, x, x * x);
    }

    /// The moments of `name` so far.
    pub fn get(&self, name: &str) -> Option<Moments> {
        self.values.get(name).copied()
    }

    /// Replaces the moments of `name` (e.g. by their sum over ranks).
    pub fn set(&mut self, name: &str, m: Moments) {
        self.values.insert(name.to_string(), m);
    }

    /// Forgets everything reported (ranks that do not write `stats.jsonl`).
    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// Appends one line to `path` and clears the statistics.
    pub fn flush_to(&mut self, path: &Path) -> Result<()> {
        let mut obj = serde_json::Map::new();
        for (k, m) in &self.values {
            obj.insert(
                k.clone(),
                serde_json::json!({"num": m.num, "mean": m.mean(), "std": m.std()}),
            );
        }
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        obj.insert("timestamp".into(), serde_json::json!(ts));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", serde_json::Value::Object(obj))
            .with_context(|| format!("writing {}", path.display()))?;
        self.values.clear();
        Ok(())
    }
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`, …) in bytes (Linux only).
pub fn proc_status_bytes(field: &str) -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Resident set size of this process in GB (0 where `/proc` is unavailable).
pub fn cpu_mem_gb() -> f64 {
    proc_status_bytes("VmRSS").map(|b| b / 1e9).unwrap_or(0.0)
}
