//! `tiw`: the command-line front end.

mod cli;
mod device;
mod npz;
mod onnx_export;
mod runtime;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
