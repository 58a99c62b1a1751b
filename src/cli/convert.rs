//! `tiw convert IN OUT`.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tiw_converters::{convert, Selection, What};

use tiw::onnx_export::{self, ExportOpts, WhatGraph};

/// Arguments of `tiw convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input checkpoint (.pkl EDM snapshot, .pt zip/legacy, training-state .pt, .safetensors).
    input: PathBuf,
    /// Output file; its extension selects the format: .safetensors or .pt.
    output: PathBuf,
    /// For EDM snapshots: which top-level module to export (ema, or e.g. augment_pipe).
    #[arg(long)]
    key: Option<String>,
    /// What to write. For training states: net (default), optimizer (Adam state) or all.
    /// For .onnx output: denoiser (default for EDM networks), extractor, discriminator (the
    /// default for ADM .pt files, by their input channels) or discriminator-pipeline.
    #[arg(long, value_enum)]
    what: Option<WhatArg>,
    /// For .onnx output: ONNX opset (17–21).
    #[arg(long, default_value_t = 17)]
    opset: i64,
    /// For `--what discriminator-pipeline`: the feature extractor (IN is the discriminator).
    #[arg(long)]
    extractor: Option<PathBuf>,
    /// For ADM extractors with an ambiguous layout: the image resolution.
    #[arg(long)]
    img_resolution: Option<usize>,
    /// Do not show a progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WhatArg {
    Net,
    Optimizer,
    All,
    Denoiser,
    Extractor,
    Discriminator,
    DiscriminatorPipeline,
}

/// Files above this size get a progress bar.
const PROGRESS_MIN_BYTES: u64 = 100 << 20;

/// Runs `tiw convert`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let is_onnx = a.output.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if is_onnx {
        let t0 = std::time::Instant::now();
        let graph = match a.what {
            None => None,
            Some(WhatArg::Denoiser) => Some(WhatGraph::Denoiser),
            Some(WhatArg::Extractor) => Some(WhatGraph::Extractor),
            Some(WhatArg::Discriminator) => Some(WhatGraph::Discriminator),
            Some(WhatArg::DiscriminatorPipeline) => Some(WhatGraph::DiscriminatorPipeline),
            Some(w) => anyhow::bail!("--what {w:?} applies to .safetensors/.pt output; for .onnx use denoiser, extractor, discriminator or discriminator-pipeline"),
        };
        let opts = ExportOpts { what: graph, opset: a.opset, extractor: a.extractor.clone(), img_resolution: a.img_resolution };
        let (model, g) = onnx_export::export(&a.input, &opts)?;
        let bytes = tiw_models::onnx_ops::encode(&model);
        onnx_export::write_model(&bytes, &a.output)?;
        if !a.quiet {
            eprintln!(
                "wrote {} ({} graph, opset {}, {} parameters, {} bytes) in {:.2} s",
                a.output.display(),
                g.name(),
                a.opset,
                tiw_models::onnx_ops::parameter_count(&model),
                bytes.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    let what = match a.what {
        None | Some(WhatArg::Net) => What::Net,
        Some(WhatArg::Optimizer) => What::Optimizer,
        Some(WhatArg::All) => What::All,
        Some(w) => anyhow::bail!("--what {w:?} applies to .onnx output"),
    };
    let sel = Selection {
        key: a.key.clone(),
        what,
    };
    let size = std::fs::metadata(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?
        .len();
    let bar = if !a.quiet && size >= PROGRESS_MIN_BYTES {
        let b = ProgressBar::new(size);
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        b.set_message("converting");
        Some(b)
    } else {
        None
    };
    let progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let t0 = std::time::Instant::now();
    let r = convert::convert_file(&a.input, &a.output, &sel, &progress)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if !a.quiet {
        eprintln!(
            "wrote {} ({}: {} tensors, {} elements, {} bytes) in {:.2} s; source sha256 {}",
            a.output.display(),
            r.what,
            r.tensors,
            r.numel,
            r.bytes,
            t0.elapsed().as_secs_f64(),
            r.source_sha256
        );
    }
    Ok(())
}
