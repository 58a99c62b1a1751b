//! `tiw`: the command-line front end.

mod cli;
mod file_cli;
mod launch;

use clap::Parser;

fn main() {
    // Die quietly on a closed pipe (`tiw doctor | head`), like other Unix tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // libtorch's tensors reuse freed heap memory instead of fresh, kernel-zeroed pages.
    tiw::malloc_tuning::keep_freed_memory();
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
