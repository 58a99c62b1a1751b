//! `tiw convert IN OUT`.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tiw_converters::{convert, Selection, What};

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
    /// For training states: the network, the optimizer (Adam) state, or both.
    #[arg(long, value_enum, default_value_t = WhatArg::Net)]
    what: WhatArg,
    /// Do not show a progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WhatArg {
    Net,
    Optimizer,
    All,
}

/// Files above this size get a progress bar.
const PROGRESS_MIN_BYTES: u64 = 100 << 20;

/// Runs `tiw convert`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let sel = Selection {
        key: a.key.clone(),
        what: match a.what {
            WhatArg::Net => What::Net,
            WhatArg::Optimizer => What::Optimizer,
            WhatArg::All => What::All,
        },
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
