//! `tiw inspect FILE [--json]`: checkpoints via [`crate::file_cli`], ONNX models here.

use crate::file_cli::human;
pub use crate::file_cli::InspectArgs as Args;

/// Runs `tiw inspect`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if crate::file_cli::is_onnx(&a.file) {
        return inspect_onnx(&a);
    }
    crate::file_cli::inspect(&a)
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
    let params: i64 = g
        .initializer
        .iter()
        .filter(|t| !t.name.starts_with("const_") && !t.name.starts_with("shape_"))
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty())
        .map(|o| o.version)
        .unwrap_or(0);
    let io = |v: &[tract_onnx::pb::ValueInfoProto]| -> Vec<(String, String)> {
        v.iter().map(|x| (x.name.clone(), dims(x))).collect()
    };
    let (inputs, outputs) = (io(&g.input), io(&g.output));
    if a.json {
        use tiw_converters::Json;
        let pairs = |v: &[(String, String)]| {
            Json::Array(
                v.iter()
                    .map(|(n, d)| {
                        Json::Object(vec![
                            ("name".into(), Json::Str(n.clone())),
                            ("shape".into(), Json::Str(d.clone())),
                        ])
                    })
                    .collect(),
            )
        };
        let j = Json::Object(vec![
            ("path".into(), Json::Str(a.file.display().to_string())),
            ("file_bytes".into(), Json::Int(bytes.len() as i64)),
            ("format".into(), Json::Str("onnx".into())),
            ("opset".into(), Json::Int(opset)),
            (
                "producer".into(),
                Json::Str(format!("{} {}", m.producer_name, m.producer_version)),
            ),
            ("inputs".into(), pairs(&inputs)),
            ("outputs".into(), pairs(&outputs)),
            (
                "ops".into(),
                Json::Object(
                    hist.iter()
                        .map(|(k, v)| (k.to_string(), Json::Int(*v as i64)))
                        .collect(),
                ),
            ),
            ("nodes".into(), Json::Int(g.node.len() as i64)),
            ("parameters".into(), Json::Int(params)),
            (
                "metadata".into(),
                Json::Object(
                    m.metadata_props
                        .iter()
                        .map(|p| (p.key.clone(), Json::Str(p.value.clone())))
                        .collect(),
                ),
            ),
        ]);
        println!("{}", j.to_text_pretty());
        return Ok(());
    }
    println!("file:      {} ({})", a.file.display(), human(bytes.len()));
    println!(
        "format:    ONNX, opset {opset}, IR {}, producer {} {}",
        m.ir_version, m.producer_name, m.producer_version
    );
    for (n, d) in &inputs {
        println!("input:     {n} {d}");
    }
    for (n, d) in &outputs {
        println!("output:    {n} {d}");
    }
    println!(
        "nodes:     {} ({})",
        g.node.len(),
        hist.iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("parameters: {params} in {} initializers", g.initializer.len());
    for p in &m.metadata_props {
        let v: String = p.value.chars().take(200).collect();
        println!(
            "metadata {}: {v}{}",
            p.key,
            if p.value.len() > 200 { "…" } else { "" }
        );
    }
    Ok(())
}
