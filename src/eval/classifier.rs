//! An image classifier (ONNX, or TorchScript on libtorch) over an image set, for
//! `tiw eval proportions`.
//!
//! Graph contract: one input `[N, C, H, W]` f32 (any name; `N` dynamic or a multiple of the
//! batch), with `C`, `H`, `W` those of the images (1 = gray or 3 = RGB, no resizing is done);
//! the first output `[N, K]` (or `[N, K, 1, 1]`) holds logits or probabilities, and the
//! predicted class is its arg-max (the first on ties). Pixels `v ∈ {0..255}` are fed as
//! `v/255` ([`InputRange::Unit`], the default: torchvision's `ToTensor`), `v/127.5 − 1`
//! ([`InputRange::Signed`], EDM's and the demo probe's range) or `v` ([`InputRange::Byte`]);
//! a classifier that normalises differently should do so inside the graph.
//! Runtimes: tract (pure Rust, CPU) or ONNX Runtime (CPU or CUDA), [`crate::runtime`]; or,
//! for a TorchScript file you trust, libtorch ([`super::torchscript`]).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::data::images::ImageSet;
use crate::device::DeviceSpec;
use crate::runtime::ort_rt::OrtGraph;
use crate::runtime::tract_rt::TractGraph;
use crate::runtime::{NamedArray, OnnxGraph};

use super::torchscript::TorchScriptGraph;

/// Value range of the classifier's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputRange {
    /// `v / 255` ∈ [0, 1].
    Unit,
    /// `v / 127.5 − 1` ∈ [−1, 1].
    Signed,
    /// `v` ∈ [0, 255].
    Byte,
}

impl InputRange {
    /// The input value of pixel `v`.
    pub fn map(self, v: u8) -> f32 {
        match self {
            InputRange::Unit => v as f32 / 255.0,
            InputRange::Signed => v as f32 / 127.5 - 1.0,
            InputRange::Byte => v as f32,
        }
    }
}

/// Which runtime runs the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClassifierRuntime {
    /// tract (pure Rust, CPU), an `.onnx` file.
    Tract,
    /// ONNX Runtime (CPU or CUDA execution provider), an `.onnx` file.
    Ort,
    /// libtorch (CPU or CUDA), a TorchScript file (`torch.jit.save`): runs code from the
    /// file, so only for files you trust ([`super::torchscript`]).
    Torchscript,
}

/// A loaded classifier (an ONNX graph on tract or ONNX Runtime, or a TorchScript module).
pub struct Classifier {
    graph: Box<dyn OnnxGraph>,
    input: String,
}

impl Classifier {
    /// Loads an `.onnx` classifier on tract or ONNX Runtime, or a TorchScript file on
    /// libtorch (`runtime`); a file of the other kind is rejected with a message saying so.
    pub fn load(path: &Path, runtime: ClassifierRuntime, device: DeviceSpec) -> Result<Self> {
        let is_onnx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let in_context = |e: anyhow::Error| e.context(path.display().to_string());
        let graph: Box<dyn OnnxGraph> = match runtime {
            ClassifierRuntime::Torchscript if is_onnx => bail!(
                "{}: an ONNX classifier runs with --runtime tract or ort; --runtime torchscript takes a \
                 TorchScript file (torch.jit.save)",
                path.display()
            ),
            ClassifierRuntime::Torchscript => {
                Box::new(TorchScriptGraph::load(path, crate::device::select(device)?)?)
            }
            _ if !is_onnx => bail!(
                "{}: only ONNX classifiers (.onnx) are supported by --runtime tract and ort; export a PyTorch \
                 classifier with torch.onnx.export (input [N,C,H,W] f32, output [N,K] logits), or run a \
                 TorchScript file (torch.jit.save) you trust with --runtime torchscript (libtorch then runs code \
                 from the file)",
                path.display()
            ),
            ClassifierRuntime::Tract => {
                let (bytes, _) = crate::onnx_export::read_model(path)?;
                Box::new(TractGraph::new(&bytes).map_err(in_context)?)
            }
            ClassifierRuntime::Ort => {
                let (bytes, _) = crate::onnx_export::read_model(path)?;
                Box::new(OrtGraph::new(&bytes, device).map_err(in_context)?)
            }
        };
        let names = graph.input_names();
        let [input] = names.as_slice() else {
            bail!(
                "{}: a classifier has one input [N,C,H,W]; this graph has {} ({})",
                path.display(),
                names.len(),
                names.join(", ")
            );
        };
        Ok(Classifier {
            input: input.clone(),
            graph,
        })
    }

    /// Runtime description.
    pub fn describe(&self) -> String {
        self.graph.describe()
    }

    /// Predicted classes of `n` images `x [n, c, h, w]`, and the number of classes `K`.
    pub fn predict(&mut self, x: Vec<f32>, shape: [usize; 4]) -> Result<(Vec<u32>, usize)> {
        let n = shape[0];
        let mut outs = self.graph.run(&[NamedArray {
            name: self.input.clone(),
            shape: shape.to_vec(),
            data: x,
        }])?;
        if outs.is_empty() {
            bail!("the classifier has no output");
        }
        let o = outs.swap_remove(0);
        let k = match o.shape.as_slice() {
            [m, k] | [m, k, 1, 1] if *m == n && *k >= 1 => *k,
            s => bail!("classifier output has shape {s:?}; expected [{n}, K] logits"),
        };
        let labels = o
            .data
            .chunks_exact(k)
            .map(|row| {
                let mut best = 0;
                for (j, &v) in row.iter().enumerate() {
                    if v > row[best] || row[best].is_nan() {
                        best = j;
                    }
                }
                best as u32
            })
            .collect();
        Ok((labels, k))
    }
}

/// Classifies every image of `set` in batches of `batch`: the predicted labels (in set
/// order) and `K`. Every image must have the size and channel count of the first.
pub fn classify_set(
    set: &ImageSet,
    clf: &mut Classifier,
    range: InputRange,
    batch: usize,
) -> Result<(Vec<u32>, usize)> {
    let mut reader = set.reader()?;
    let (mut labels, mut classes) = (Vec::with_capacity(set.len()), None);
    let mut dims = None;
    for start in (0..set.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(set.len());
        let mut x = Vec::new();
        for i in start..end {
            let img = reader.load(i)?;
            let d = (img.channels, img.height, img.width);
            if *dims.get_or_insert(d) != d {
                bail!(
                    "{}: image {} is {}×{}×{} but the first is {:?} (C×H×W); the classifier needs one size",
                    set.path().display(),
                    set.name(i),
                    d.0,
                    d.1,
                    d.2,
                    dims.unwrap()
                );
            }
            let plane = img.height * img.width;
            let off = x.len();
            x.resize(off + img.channels * plane, 0.0);
            for (p, px) in img.data.chunks_exact(img.channels).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    x[off + c * plane + p] = range.map(v);
                }
            }
        }
        let (c, h, w) = dims.expect("at least one image");
        let (l, k) = clf
            .predict(x, [end - start, c, h, w])
            .with_context(|| format!("classifying images {start}..{end} of {}", set.path().display()))?;
        if *classes.get_or_insert(k) != k {
            bail!(
                "the classifier gave {k} classes for one batch and {} for another",
                classes.unwrap()
            );
        }
        labels.extend(l);
    }
    Ok((labels, classes.unwrap_or(0)))
}
