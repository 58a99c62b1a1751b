//! `tiw convert IN OUT` / `tiw export`: .safetensors and .pt via [`crate::file_cli`], ONNX
//! export here.

pub use crate::file_cli::ConvertArgs as Args;
use crate::file_cli::{PrecisionArg, WhatArg};
use tiw::onnx_export::{self, ExportOpts, WhatGraph};
use tiw_models::export::Precision;

/// Runs `tiw convert`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if crate::file_cli::is_onnx(&a.output) {
        let t0 = std::time::Instant::now();
        let graph = match a.what {
            None => None,
            Some(WhatArg::Denoiser) => Some(WhatGraph::Denoiser),
            Some(WhatArg::Extractor) => Some(WhatGraph::Extractor),
            Some(WhatArg::Discriminator) => Some(WhatGraph::Discriminator),
            Some(WhatArg::DiscriminatorPipeline) => Some(WhatGraph::DiscriminatorPipeline),
            Some(w) => anyhow::bail!("--what {w:?} applies to .safetensors/.pt output; for .onnx use denoiser, extractor, discriminator or discriminator-pipeline"),
        };
        let opts = ExportOpts {
            what: graph,
            opset: a.opset,
            extractor: a.extractor.clone(),
            img_resolution: a.img_resolution,
        };
        let precision = match a.precision {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Fp16 => Precision::Fp16,
        };
        let (model, g) = onnx_export::export_with_precision(&a.input, &opts, precision)?;
        let written = onnx_export::write_onnx(&model, &a.output)?;
        if !a.quiet {
            eprintln!(
                "wrote {} ({} graph, opset {}, {}, {} parameters, {} bytes) in {:.2} s",
                a.output.display(),
                g.name(),
                a.opset,
                precision.name(),
                model.parameter_count(),
                written,
                t0.elapsed().as_secs_f64()
            );
        }
        return Ok(());
    }
    crate::file_cli::convert(&a)
}
