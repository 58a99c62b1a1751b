//! `tiw inspect FILE [--json]`.

use std::path::PathBuf;

use tiw_converters::inspect::{class_name, report, Report};

/// Arguments of `tiw inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checkpoint to describe (.pkl, .pt, .pth, .safetensors).
    file: PathBuf,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Maximum tensor rows in the text table (0 = all).
    #[arg(long, default_value_t = 0)]
    max_rows: usize,
}

/// Runs `tiw inspect`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let ck = tiw_converters::open(&a.file)?;
    let r = report(&ck);
    if a.json {
        println!("{}", r.to_json().to_text_pretty());
    } else {
        print_text(&r, a.max_rows);
    }
    Ok(())
}

fn human(n: usize) -> String {
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
