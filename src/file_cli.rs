//! The file-format commands `tiw inspect` and `tiw convert` to .safetensors / .pt. They
//! need no tensor library, so the `tiw` launcher runs them without loading libtorch (fast
//! start, small memory); ONNX inputs and outputs are handled by the full binary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tiw_converters::inspect::{class_name, report, Report};
use tiw_converters::{convert as conv, Selection, What};

/// Whether `p` names an ONNX file.
pub fn is_onnx(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Arguments of `tiw inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Checkpoint to describe (.pkl, .pt, .pth, .safetensors).
    pub file: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Maximum tensor rows in the text table (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_rows: usize,
}

/// `tiw inspect` of a checkpoint (not ONNX).
pub fn inspect(a: &InspectArgs) -> anyhow::Result<()> {
    let ck = tiw_converters::open(&a.file)?;
    let r = report(&ck);
    if a.json {
        println!("{}", r.to_json().to_text_pretty());
    } else {
        print_text(&r, a.max_rows);
    }
    Ok(())
}

/// Byte count for humans (KiB, MiB, ...).
pub fn human(n: usize) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut i = 0;
    while x >= 1024.0 && i < U.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", U[i])
    }
}

fn print_text(r: &Report, max_rows: usize) {
    println!("file:      {} ({})", r.path, human(r.file_bytes));
    let proto = r
        .protocol
        .map(|p| format!(", pickle protocol {p}"))
        .unwrap_or_default();
    let zip = r
        .zip_members
        .map(|z| format!(", {z} zip members"))
        .unwrap_or_default();
    println!("format:    {}{proto}{zip}", r.format);
    println!("contents:  {}", r.kind);
    if !r.top_level.is_empty() {
        println!("top level:");
        for (k, v) in &r.top_level {
            println!("  {k}: {v}");
        }
    }
    if !r.globals.is_empty() {
        println!("globals referenced (never imported or called):");
        for (name, class, refs, calls) in &r.globals {
            let flag = match class_name(*class) {
                "dangerous" => "  <-- OPAQUE, CODE-EXECUTION PRIMITIVE",
                "opaque" => "  <-- opaque",
                _ => "",
            };
            println!(
                "  {name} [{}] refs {refs}, calls {calls}{flag}",
                class_name(*class)
            );
        }
    }
    if !r.persistent_classes.is_empty() {
        let list: Vec<String> = r
            .persistent_classes
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect();
        println!("persistent classes: {}", list.join(", "));
    }
    if let Some(c) = &r.config {
        println!("configuration:");
        for line in c.to_text_pretty().lines() {
            println!("  {line}");
        }
    }
    for (k, v) in &r.metadata {
        if k != "tiw.config" && k != "tiw.names" {
            println!("metadata {k}: {v}");
        }
    }
    if let Some(e) = &r.extract_error {
        println!("tensors:   not extracted: {e}");
        return;
    }
    let w = r.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    println!("{:<w$}  {:<8}  {:<20}  {:>10}", "name", "dtype", "shape", "bytes");
    let rows = if max_rows == 0 {
        r.tensors.len()
    } else {
        max_rows.min(r.tensors.len())
    };
    for t in &r.tensors[..rows] {
        println!(
            "{:<w$}  {:<8}  {:<20}  {:>10}",
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            t.bytes
        );
    }
    if rows < r.tensors.len() {
        println!("… {} more", r.tensors.len() - rows);
    }
    println!(
        "totals:    {} tensors, {} elements, {} ({})",
        r.num_tensors(),
        r.num_elements(),
        human(r.total_bytes()),
        r.total_bytes()
    );
}

/// Arguments of `tiw convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Input checkpoint (.pkl EDM snapshot, .pt zip/legacy, training-state .pt, .safetensors).
    pub input: PathBuf,
    /// Output file; its extension selects the format: .safetensors or .pt.
    pub output: PathBuf,
    /// For EDM snapshots: which top-level module to export (ema, or e.g. augment_pipe).
    #[arg(long)]
    pub key: Option<String>,
    /// What to write. For training states: net (default), optimizer (Adam state) or all.
    /// For .onnx output: denoiser (default for EDM networks), extractor, discriminator (the
    /// default for ADM .pt files, by their input channels) or discriminator-pipeline.
    #[arg(long, value_enum)]
    pub what: Option<WhatArg>,
    /// For .onnx output: ONNX opset (17–21).
    #[arg(long, default_value_t = 17)]
    pub opset: i64,
    /// For .onnx denoisers: fp32, or fp16 (f16 weights and compute inside the network as
    /// EDM's use_fp16 on CUDA; f32 inputs/outputs, preconditioning, embeddings, GroupNorm
    /// statistics and softmax).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// For `--what discriminator-pipeline`: the feature extractor (IN is the discriminator).
    #[arg(long)]
    pub extractor: Option<PathBuf>,
    /// For ADM extractors with an ambiguous layout: the image resolution.
    #[arg(long)]
    pub img_resolution: Option<usize>,
    /// Do not show a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `--precision` values of `tiw export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[allow(missing_docs)]
pub enum PrecisionArg {
    Fp32,
    Fp16,
}

/// `--what` values of `tiw convert` (per output format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[allow(missing_docs)]
pub enum WhatArg {
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

/// `tiw convert` to .safetensors / .pt.
pub fn convert(a: &ConvertArgs) -> anyhow::Result<()> {
    let what = match a.what {
        None | Some(WhatArg::Net) => What::Net,
        Some(WhatArg::Optimizer) => What::Optimizer,
        Some(WhatArg::All) => What::All,
        Some(w) => anyhow::bail!("--what {w:?} applies to .onnx output"),
    };
    if a.precision != PrecisionArg::Fp32 {
        anyhow::bail!("--precision applies to .onnx output");
    }
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
    let r = conv::convert_file(&a.input, &a.output, &sel, &progress)?;
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
