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
    if a.file.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        return inspect_onnx(&a);
    }
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

fn dims(v: &tract_onnx::pb::ValueInfoProto) -> String {
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto};
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let d: Vec<String> = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Value::DimValue(n)) => n.to_string(),
                            Some(Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("[{}]", d.join(", "))
        }
        _ => "?".into(),
    }
}

fn inspect_onnx(a: &Args) -> anyhow::Result<()> {
    let (bytes, m) = tiw::onnx_export::read_model(&a.file)?;
    let g = m.graph.as_ref().expect("checked");
    let mut hist = std::collections::BTreeMap::<&str, usize>::new();
    for n in &g.node {
        *hist.entry(n.op_type.as_str()).or_default() += 1;
    }
    let params: i64 = g.initializer.iter().filter(|t| !t.name.starts_with("const_") && !t.name.starts_with("shape_")).map(|t| t.dims.iter().product::<i64>()).sum();
    let opset = m.opset_import.iter().find(|o| o.domain.is_empty()).map(|o| o.version).unwrap_or(0);
    let io = |v: &[tract_onnx::pb::ValueInfoProto]| -> Vec<(String, String)> { v.iter().map(|x| (x.name.clone(), dims(x))).collect() };
    let (inputs, outputs) = (io(&g.input), io(&g.output));
    if a.json {
        use tiw_converters::Json;
        let pairs = |v: &[(String, String)]| Json::Array(v.iter().map(|(n, d)| Json::Object(vec![("name".into(), Json::Str(n.clone())), ("shape".into(), Json::Str(d.clone()))])).collect());
        let j = Json::Object(vec![
            ("path".into(), Json::Str(a.file.display().to_string())),
            ("file_bytes".into(), Json::Int(bytes.len() as i64)),
            ("format".into(), Json::Str("onnx".into())),
            ("opset".into(), Json::Int(opset)),
            ("producer".into(), Json::Str(format!("{} {}", m.producer_name, m.producer_version))),
            ("inputs".into(), pairs(&inputs)),
            ("outputs".into(), pairs(&outputs)),
            ("ops".into(), Json::Object(hist.iter().map(|(k, v)| (k.to_string(), Json::Int(*v as i64))).collect())),
            ("nodes".into(), Json::Int(g.node.len() as i64)),
            ("parameters".into(), Json::Int(params)),
            ("metadata".into(), Json::Object(m.metadata_props.iter().map(|p| (p.key.clone(), Json::Str(p.value.clone()))).collect())),
        ]);
        println!("{}", j.to_text_pretty());
        return Ok(());
    }
    println!("file:      {} ({})", a.file.display(), human(bytes.len()));
    println!("format:    ONNX, opset {opset}, IR {}, producer {} {}", m.ir_version, m.producer_name, m.producer_version);
    for (n, d) in &inputs {
        println!("input:     {n} {d}");
    }
    for (n, d) in &outputs {
        println!("output:    {n} {d}");
    }
    println!("nodes:     {} ({})", g.node.len(), hist.iter().map(|(k, v)| format!("{k}×{v}")).collect::<Vec<_>>().join(", "));
    println!("parameters: {params} in {} initializers", g.initializer.len());
    for p in &m.metadata_props {
        let v: String = p.value.chars().take(200).collect();
        println!("metadata {}: {v}{}", p.key, if p.value.len() > 200 { "…" } else { "" });
    }
    Ok(())
}
