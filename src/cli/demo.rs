//! `tiw demo`: the CPU end-to-end debiasing experiment (see `tiw::demo::run`).

use std::path::PathBuf;

use anyhow::Result;
use tiw::demo::run::{DemoOptions, SampleRuntime};
use tiw::device::DeviceSpec;

/// Arguments of `tiw demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output folder (data, networks, runs, report.md / report.json / PNGs).
    #[arg(long, default_value = "demo-out")]
    outdir: PathBuf,
    /// The ≤ 2-minute pipeline check: smaller sets and budgets (numbers are not meaningful).
    #[arg(long)]
    quick: bool,
    /// Device for training: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Seed of everything (data, initialisation, batch order, draws).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Runtime that samples the trained models.
    #[arg(long, value_enum, default_value = "ort")]
    runtime: SampleRuntime,
    /// Threads for libtorch on the CPU (default: all cores).
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bars (stage lines only).
    #[arg(long)]
    quiet: bool,
}

/// Runs `tiw demo`.
pub fn run(a: Args) -> Result<()> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let json = tiw::demo::run::run(&DemoOptions {
        outdir: a.outdir,
        quick: a.quick,
        device: a.device,
        seed: a.seed,
        runtime: a.runtime,
        progress: !a.quiet,
    })?;
    println!("{}", json.display());
    Ok(())
}
