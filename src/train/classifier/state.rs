//! The resumable state of a discriminator run (`training-state.safetensors`, written
//! atomically) and the `stats.jsonl` log.
//!
//! Tensors: `disc.<name>` (weights), `adam.exp_avg.<name>`, `adam.exp_avg_sq.<name>`.
//! Metadata `tiw.train_state` (JSON): `next_iter`, `seed`, `batch_size`, `real_mul`,
//! `adam_steps` (per parameter, 0 = no state), `real_sampler` / `fake_sampler`
//! (`[epoch generator state, position]`), `mix` (in-batch permutation generator), `running`
//! (statistics since the last reset).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Tensor};
use tiw_converters::{Buffer, DType, TensorStore};

use super::data::{EpochSampler, SplitMix};
use super::{state_store, Batches, ClassifierOpts};
use crate::train::step::Adam;

/// File name of the state inside the save folder.
pub const FILE: &str = "training-state.safetensors";

/// Running BCE / accuracy since the last reset.
#[derive(Debug, Clone, Default)]
pub struct Running {
    /// Σ per-iteration mean BCE.
    pub loss_sum: f64,
    /// Iterations.
    pub count: u64,
    /// Correct predictions.
    pub correct: u64,
    /// Predictions.
    pub seen: u64,
}

impl Running {
    /// Adds one iteration.
    pub fn add(&mut self, loss: f64, correct: i64, seen: i64) {
        self.loss_sum += loss;
        self.count += 1;
        self.correct += correct.max(0) as u64;
        self.seen += seen.max(0) as u64;
    }
    /// Mean BCE.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }
    /// Accuracy.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }
}

/// Appends `{"iter", "bce", "accuracy", "iterations"}` to `dir/stats.jsonl`.
pub fn append_stats(dir: &Path, iter: u64, r: &Running) -> Result<()> {
    let path = dir.join("stats.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let line = json!({"iter": iter, "bce": r.mean_loss(), "accuracy": r.accuracy(), "iterations": r.count});
    writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Scalars of the state.
#[derive(Debug, Clone)]
pub struct Meta {
    /// First iteration still to run.
    pub next_iter: u64,
    /// Seed of the run.
    pub seed: u64,
    /// Batch size of the run.
    pub batch_size: usize,
    /// real_mul of the run.
    pub real_mul: usize,
    adam_steps: Vec<u64>,
    real: (u64, usize),
    fake: (u64, usize),
    mix: u64,
    running: Running,
}

/// A training state read back.
pub struct TrainState {
    /// Discriminator weights (state_dict names).
    pub weights: TensorStore,
    moments: TensorStore,
    /// Scalars.
    pub meta: Meta,
}

fn f32_tensor(store: &TensorStore, name: &str, path: &Path) -> Result<Tensor> {
    let e = store
        .get(name)
        .with_context(|| format!("{}: no tensor {name}", path.display()))?;
    let v = tiw_models::vb::to_f32(e.dtype, &store.bytes(e))?;
    let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_slice(&v)?.f_view(shape.as_slice())?)
}

impl TrainState {
    /// Writes the state (temp file + rename).
    pub fn write(
        path: &Path,
        named: &[(String, Tensor)],
        adam: &Adam,
        batches: &Batches,
        running: &Running,
        next_iter: u64,
        opts: &ClassifierOpts,
    ) -> Result<()> {
        let mut all: Vec<(String, Tensor)> = named
            .iter()
            .map(|(n, t)| (format!("disc.{n}"), t.shallow_clone()))
            .collect();
        let mut steps = Vec::new();
        for ((n, _), st) in named.iter().zip(&adam.state) {
            match st {
                Some((m, v, s)) => {
                    all.push((format!("adam.exp_avg.{n}"), m.shallow_clone()));
                    all.push((format!("adam.exp_avg_sq.{n}"), v.shallow_clone()));
                    steps.push(*s);
                }
                None => steps.push(0),
            }
        }
        let store = state_store(&all)?;
        let meta = json!({
            "next_iter": next_iter,
            "seed": opts.seed,
            "batch_size": opts.batch_size,
            "real_mul": opts.real_mul,
            "adam_steps": steps,
            "real_sampler": [batches.real_sampler.state().0, batches.real_sampler.state().1],
            "fake_sampler": [batches.fake_sampler.state().0, batches.fake_sampler.state().1],
            "mix": batches.mix.0,
            "running": [running.loss_sum, running.count, running.correct, running.seen],
        });
        let mut m = std::collections::HashMap::new();
        m.insert("tiw.kind".to_string(), "discriminator-training-state".to_string());
        m.insert("tiw.train_state".to_string(), meta.to_string());
        crate::train::checkpoint::write_store_guarded(&store, m, path)
    }

    /// Reads a state written by [`TrainState::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let buf = Buffer::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let (store, meta) = tiw_converters::safetensors_io::read(Arc::new(buf))
            .with_context(|| format!("{}: not a training state", path.display()))?;
        let text = meta
            .get("tiw.train_state")
            .with_context(|| format!("{}: no tiw.train_state metadata", path.display()))?;
        let j: Value =
            serde_json::from_str(text).with_context(|| format!("{}: bad tiw.train_state", path.display()))?;
        let bad = || anyhow::anyhow!("{}: incomplete tiw.train_state", path.display());
        let u = |k: &str| j.get(k).and_then(Value::as_u64).ok_or_else(bad);
        let pair = |k: &str| -> Result<(u64, usize)> {
            let a = j.get(k).and_then(Value::as_array).ok_or_else(bad)?;
            match (
                a.first().and_then(Value::as_u64),
                a.get(1).and_then(Value::as_u64),
            ) {
                (Some(x), Some(y)) => Ok((x, y as usize)),
                _ => Err(bad()),
            }
        };
        let steps = j
            .get("adam_steps")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
            .iter()
            .map(|v| v.as_u64().ok_or_else(bad))
            .collect::<Result<Vec<_>>>()?;
        let r = j.get("running").and_then(Value::as_array).ok_or_else(bad)?;
        if r.len() != 4 {
            return Err(bad());
        }
        let running = Running {
            loss_sum: r[0].as_f64().ok_or_else(bad)?,
            count: r[1].as_u64().ok_or_else(bad)?,
            correct: r[2].as_u64().ok_or_else(bad)?,
            seen: r[3].as_u64().ok_or_else(bad)?,
        };
        let meta = Meta {
            next_iter: u("next_iter")?,
            seed: u("seed")?,
            batch_size: u("batch_size")? as usize,
            real_mul: u("real_mul")? as usize,
            adam_steps: steps,
            real: pair("real_sampler")?,
            fake: pair("fake_sampler")?,
            mix: u("mix")?,
            running,
        };
        if store.entries().iter().any(|e| e.dtype != DType::F32) {
            bail!("{}: training-state tensors must be f32", path.display());
        }
        let weights = store.filter_map(|e| e.name.strip_prefix("disc.").map(str::to_string))?;
        let moments = store.filter_map(|e| e.name.starts_with("adam.").then(|| e.name.clone()))?;
        Ok(TrainState {
            weights,
            moments,
            meta,
        })
    }

    /// Restores the optimiser, samplers and statistics (weights are loaded by the caller).
    pub fn apply(
        &self,
        adam: &mut Adam,
        named: &[(String, Tensor)],
        batches: &mut Batches,
        running: &mut Running,
        dev: Device,
    ) -> Result<()> {
        // Adam entries are in the state_dict order of the parameters (the file's own order
        // is not significant).
        if self.weights.len() != named.len() || self.meta.adam_steps.len() != named.len() {
            bail!(
                "training state: {} tensors / {} Adam entries for {} parameters",
                self.weights.len(),
                self.meta.adam_steps.len(),
                named.len()
            );
        }
        let params: Vec<&Tensor> = named.iter().map(|(_, t)| t).collect();
        let p = Path::new(FILE);
        for (k, ((name, _), &steps)) in named.iter().zip(&self.meta.adam_steps).enumerate() {
            adam.state[k] = if steps == 0 {
                None
            } else {
                let m = f32_tensor(&self.moments, &format!("adam.exp_avg.{name}"), p)?.f_to_device(dev)?;
                let v = f32_tensor(&self.moments, &format!("adam.exp_avg_sq.{name}"), p)?.f_to_device(dev)?;
                if m.size() != params[k].size() || v.size() != params[k].size() {
                    bail!("training state: Adam moments of {name} have the wrong shape");
                }
                Some((m, v, steps))
            };
        }
        let (rn, fnn, b) = (
            batches.real_len(),
            batches.fake_sampler_len(),
            self.meta.batch_size,
        );
        if self.meta.real.1 > rn || self.meta.fake.1 > fnn {
            bail!("training state: data positions beyond the data sets (were the files changed?)");
        }
        batches.real_sampler = EpochSampler::restore(rn, b, self.meta.real.0, self.meta.real.1);
        batches.fake_sampler = EpochSampler::restore(fnn, b, self.meta.fake.0, self.meta.fake.1);
        batches.mix = SplitMix(self.meta.mix);
        *running = self.meta.running.clone();
        Ok(())
    }
}
