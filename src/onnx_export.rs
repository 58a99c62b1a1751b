//! Exporting checkpoints to ONNX (in memory or to a file) and loading ONNX graphs into a
//! runtime.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tiw_converters::convert::sha256_file;
use tiw_models::config::NetConfig;
use tiw_models::export::{self, Graph, Precision};
use tiw_models::onnx_model::OnnxModel;
use tract_onnx::pb::ModelProto;

use crate::device::DeviceSpec;
use crate::runtime::OnnxGraph;

/// `--what` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum WhatGraph {
    /// Preconditioned EDM denoiser (x, sigma[, class_labels][, augment_labels] → D).
    Denoiser,
    /// ADM feature extractor (x, t → features).
    Extractor,
    /// Discriminator (features, t[, condition] → logits).
    Discriminator,
    /// sigmoid(discriminator(extractor(x_vp, t), t)); needs --extractor.
    DiscriminatorPipeline,
}

/// Options of an export.
#[derive(Debug, Clone)]
pub struct ExportOpts {
    /// Which graph (None = decided from the file's contents).
    pub what: Option<WhatGraph>,
    /// ONNX opset.
    pub opset: i64,
    /// Feature extractor for the discriminator pipeline.
    pub extractor: Option<PathBuf>,
    /// Extractor image resolution when its layout is ambiguous.
    pub img_resolution: Option<usize>,
}

fn source_meta(path: &Path) -> Result<Vec<(String, String)>> {
    let sha = sha256_file(path)?;
    Ok(vec![
        (
            "tiw.source".into(),
            path.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        ("tiw.source_sha256".into(), sha),
        (
            "tiw.exporter".into(),
            format!("tiw {}", env!("CARGO_PKG_VERSION")),
        ),
    ])
}

/// Exports `input` to an ONNX model in f32. The network's tensors stay in `input` until the
/// model is written ([`write_onnx`], [`OnnxModel::to_bytes`]).
pub fn export(input: &Path, opts: &ExportOpts) -> Result<(OnnxModel, Graph)> {
    export_with_precision(input, opts, Precision::Fp32)
}

/// [`export`] at `precision`; f16 applies to denoisers only (an error for the ADM graphs).
pub fn export_with_precision(
    input: &Path,
    opts: &ExportOpts,
    precision: Precision,
) -> Result<(OnnxModel, Graph)> {
    let (store, config) = tiw_models::load::read(input)?;
    let what = match opts.what {
        Some(w) => w,
        None if config.is_some() => WhatGraph::Denoiser,
        None => {
            // a state dict: 3 input channels = feature extractor, else a discriminator
            match store.get("input_blocks.0.0.weight").map(|e| e.shape[1]) {
                Some(3) => WhatGraph::Extractor,
                Some(_) => WhatGraph::Discriminator,
                None => bail!(
                    "{}: neither an EDM network nor an ADM encoder; pass --what",
                    input.display()
                ),
            }
        }
    };
    let meta = source_meta(input)?;
    let model = match what {
        WhatGraph::Denoiser => {
            let config = config.ok_or_else(|| anyhow!("{}: no network configuration in this file (use the EDM .pkl or a .safetensors made by `tiw convert`)", input.display()))?;
            let cfg = NetConfig::from_json(&config).with_context(|| format!("{}", input.display()))?;
            export::denoiser_with_precision(&store, &cfg, Some(&config), opts.opset, precision, &meta)?
        }
        _ if precision != Precision::Fp32 => bail!(
            "{}: --precision {} applies to EDM denoisers; the ADM graphs export in fp32",
            input.display(),
            precision.name()
        ),
        WhatGraph::Extractor => export::extractor(&store, opts.img_resolution, opts.opset, &meta)?,
        WhatGraph::Discriminator => export::discriminator(&store, opts.opset, &meta)?,
        WhatGraph::DiscriminatorPipeline => {
            let fe = opts
                .extractor
                .as_ref()
                .context("--what discriminator-pipeline needs --extractor FE.pt (IN is the discriminator)")?;
            let (fe_store, _) = tiw_models::load::read(fe)?;
            export::discriminator_pipeline(&fe_store, &store, opts.img_resolution, opts.opset, &meta)?
        }
    };
    let g = match what {
        WhatGraph::Denoiser => Graph::Denoiser,
        WhatGraph::Extractor => Graph::Extractor,
        WhatGraph::Discriminator => Graph::Discriminator,
        WhatGraph::DiscriminatorPipeline => Graph::DiscriminatorPipeline,
    };
    Ok((model, g))
}

/// Writes a recorded model to `out` atomically, streaming its tensors from the checkpoint
/// (about one tensor in memory at a time); returns the number of bytes written.
pub fn write_onnx(model: &OnnxModel, out: &Path) -> Result<u64> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    model
        .write_to(&mut w)
        .with_context(|| format!("cannot write {}", out.display()))?;
    let tmp = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let len = tmp.as_file().metadata().map(|m| m.len()).unwrap_or(0);
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(len)
}

/// Writes model bytes atomically.
pub fn write_model(bytes: &[u8], out: &Path) -> Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// The runtime of [`load`]: [`crate::runtime::Runtime`] (`Ort` or `Tract`; `Tch` is an error).
pub type OnnxRuntime = crate::runtime::Runtime;

/// Loads model bytes into a runtime ([`crate::runtime::load_onnx`]).
pub fn load(bytes: &[u8], rt: OnnxRuntime, device: DeviceSpec) -> Result<Box<dyn OnnxGraph>> {
    crate::runtime::load_onnx(bytes, crate::runtime::Backend::new(rt, device))
}

/// Decodes an `.onnx` file (bounded: protobuf decoding of the file's bytes).
pub fn read_model(path: &Path) -> Result<(Vec<u8>, ModelProto)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let m: ModelProto = prost::Message::decode(bytes.as_slice())
        .map_err(|e| anyhow!("{}: not a valid ONNX model: {e}", path.display()))?;
    if m.graph.is_none() {
        bail!("{}: ONNX model without a graph", path.display());
    }
    Ok((bytes, m))
}
