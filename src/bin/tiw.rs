//! The `tiw` command. File-format commands (`inspect`, `convert`/`export` to .safetensors or
//! .pt) run here without loading libtorch, which keeps them fast and small; every other
//! command (and any ONNX input/output) is handed to `tiw-full` in the same folder by `exec`
//! (same process id, arguments, standard streams and exit status). `tiw launch` (the
//! multi-process launcher) also runs here.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use clap::{Parser, Subcommand};

// Compiled into both binaries; this one must not reference libtorch.
#[path = "../file_cli.rs"]
mod file_cli;

#[path = "../launch.rs"]
mod launch;

use file_cli::{ConvertArgs, InspectArgs};

#[derive(Parser)]
#[command(name = "tiw", bin_name = "tiw", version)]
struct Lean {
    #[command(subcommand)]
    command: LeanCommand,
}

#[derive(Subcommand)]
enum LeanCommand {
    Inspect(InspectArgs),
    #[command(visible_alias = "export")]
    Convert(ConvertArgs),
    /// Start this node's ranks of a data-parallel run (like torchrun): `tiw launch
    /// --nproc-per-node N -- train ...`.
    Launch(launch::LaunchArgs),
}

fn handled_here(args: &[OsString]) -> bool {
    let cmd = args.get(1).and_then(|a| a.to_str());
    let file_cmd = matches!(cmd, Some("inspect" | "convert" | "export"));
    let onnx = args
        .iter()
        .skip(2)
        .any(|a| file_cli::is_onnx(std::path::Path::new(a)));
    let help = args.iter().any(|a| a == "--help" || a == "-h");
    cmd == Some("launch") || (file_cmd && !onnx && !help)
}

fn main() {
    // Die quietly on a closed pipe (`tiw inspect x | head`), like other Unix tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    if handled_here(&args) {
        let r = match Lean::parse().command {
            LeanCommand::Inspect(a) => file_cli::inspect(&a),
            LeanCommand::Convert(a) => file_cli::convert(&a),
            LeanCommand::Launch(a) => match launch::launch(&a) {
                Ok(code) => std::process::exit(code),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = r {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let full = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("tiw-full")))
        .filter(|p| p.exists());
    let Some(full) = full else {
        eprintln!("error: tiw-full is not installed next to tiw (build every binary of the package: `cargo build --bins`)");
        std::process::exit(1);
    };
    // argv[0] = "tiw": what the user typed (clap names the command from it in help and usage)
    let err = std::process::Command::new(&full)
        .arg0("tiw")
        .args(&args[1..])
        .exec();
    eprintln!("error: cannot run {}: {err}", full.display());
    std::process::exit(1);
}
