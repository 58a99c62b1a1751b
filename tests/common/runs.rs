//! The tiny training runs the CLI tests share, as argument builders: the network, batch and
//! schedule every test starts from live here once; a test states only what it changes
//! (`set`, `without`, `steps`) and its output place.

use std::path::Path;

use super::{fixture, s};

/// Command-line flags in order, each with its value (`None`: a bare flag).
#[derive(Debug, Clone)]
struct Flags(Vec<(String, Option<String>)>);

impl Flags {
    fn new(pairs: &[(&str, &str)]) -> Self {
        Flags(
            pairs
                .iter()
                .map(|(f, v)| (f.to_string(), Some(v.to_string())))
                .collect(),
        )
    }

    /// Replaces the value of `flag` in place, or appends it.
    fn set(&mut self, flag: &str, value: Option<String>) {
        match self.0.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value,
            None => self.0.push((flag.to_string(), value)),
        }
    }

    /// Removes `flag`, which must be there (a misspelled flag is a test bug).
    fn remove(&mut self, flag: &str) {
        let before = self.0.len();
        self.0.retain(|(f, _)| f != flag);
        assert!(self.0.len() < before, "no flag {flag} to remove");
    }

    /// `command` then every flag and value.
    fn args(&self, command: &str) -> Vec<String> {
        let mut out = vec![command.to_string()];
        for (f, v) in &self.0 {
            out.push(f.clone());
            out.extend(v.clone());
        }
        out
    }
}

/// One tiny run's arguments: the command and its flags.
#[derive(Debug, Clone)]
pub struct TinyRun {
    command: &'static str,
    flags: Flags,
}

impl TinyRun {
    /// `tiw train` on the 8×8 fixture dataset (20 images) writing its run directory under
    /// `outdir`: EDM preconditioning, a 16-channel DDPM++ with two levels of one block and no
    /// attention; batch 4 in rounds of 2 on one thread; ticks of 8 images (2 steps) with a
    /// snapshot and a training state every tick; 13 steps (`--duration 0.000052` Mimg);
    /// augmentation 0.5, dropout 0.1, seed 3; quiet.
    pub fn train(outdir: &Path) -> Self {
        let mut flags = Flags::new(&[
            ("--data", &s(&fixture("dataset/dataset.zip"))),
            ("--outdir", &s(outdir)),
            ("--precond", "edm"),
            ("--cbase", "16"),
            ("--cres", "1,2"),
            ("--num-blocks", "1"),
            ("--attn", "none"),
            ("--batch", "4"),
            ("--batch-gpu", "2"),
            ("--duration", "0.000052"),
            ("--tick", "0.008"),
            ("--snap", "1"),
            ("--dump", "1"),
            ("--lr-rampup", "0.02"),
            ("--ema", "0.00002"),
            ("--ema-rampup", "0.5"),
            ("--augment", "0.5"),
            ("--dropout", "0.1"),
            ("--seed", "3"),
            ("--threads", "1"),
        ]);
        flags.set("--quiet", None);
        TinyRun {
            command: "train",
            flags,
        }
    }

    /// [`TinyRun::train`] writing into exactly `run_dir` (`--run-dir`; `--outdir` unused).
    pub fn train_in_run_dir(run_dir: &Path) -> Self {
        TinyRun::train(Path::new("unused")).set("--run-dir", &s(run_dir))
    }

    /// `tiw train-classifier` on the fixture's reference and biased npz sets with the 16×16
    /// fixture extractor: batch 4 with 2 reference rows per biased row, `iters` iterations, a
    /// checkpoint every 10, saved into `savedir`.
    pub fn classifier(savedir: &Path, iters: u64) -> Self {
        let flags = Flags::new(&[
            ("--ref", &s(&fixture("dataset/real_data.npz"))),
            ("--bias", &s(&fixture("dataset/fake_data.npz"))),
            ("--extractor", &s(&fixture("classifier/feature_extractor.pt"))),
            ("--savedir", &s(savedir)),
            ("--img-resolution", "16"),
            ("--batch-size", "4"),
            ("--real-mul", "2"),
            ("--iter", &iters.to_string()),
            ("--save-every", "10"),
        ]);
        TinyRun {
            command: "train-classifier",
            flags,
        }
    }

    /// Exactly `n` training steps of 4 images (`--duration` = 4n images).
    pub fn steps(self, n: usize) -> Self {
        self.set("--duration", &format!("{}", n as f64 * 4.0 / 1e6))
    }

    /// `flag value`, replacing the default value (or appended when there is none).
    pub fn set(mut self, flag: &str, value: &str) -> Self {
        self.flags.set(flag, Some(value.to_string()));
        self
    }

    /// Leaves `flag` out (the command's own default then applies).
    pub fn without(mut self, flag: &str) -> Self {
        self.flags.remove(flag);
        self
    }

    /// The arguments, the command first, then `extra` verbatim.
    pub fn args_with(&self, extra: &[&str]) -> Vec<String> {
        let mut v = self.flags.args(self.command);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    }

    /// The arguments, the command first.
    pub fn args(&self) -> Vec<String> {
        self.args_with(&[])
    }
}
