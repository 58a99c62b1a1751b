//! A structured description of a checkpoint file, for `tiw inspect`.

use std::collections::BTreeMap;

use crate::checkpoint::{Checkpoint, Kind, Selection, What};
use crate::pickle::{globals::GlobalClass, Obj};
use crate::pyjson::Json;

/// One row of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorRow {
    /// Name.
    pub name: String,
    /// dtype name (torch spelling).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Bytes.
    pub bytes: usize,
}

/// What `inspect` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// File path as given.
    pub path: String,
    /// File size in bytes.
    pub file_bytes: usize,
    /// Container format name.
    pub format: String,
    /// Pickle protocol (pickled formats).
    pub protocol: Option<u8>,
    /// What the object is.
    pub kind: String,
    /// Zip members (zip format).
    pub zip_members: Option<usize>,
    /// Top-level keys with a short description of each value.
    pub top_level: Vec<(String, String)>,
    /// Globals: name → (class, references, calls).
    pub globals: Vec<(String, GlobalClass, usize, usize)>,
    /// Persistent classes → count.
    pub persistent_classes: BTreeMap<String, usize>,
    /// Recovered configuration.
    pub config: Option<Json>,
    /// safetensors `__metadata__`.
    pub metadata: BTreeMap<String, String>,
    /// Tensor table (empty if extraction failed).
    pub tensors: Vec<TensorRow>,
    /// Why no tensor table could be produced.
    pub extract_error: Option<String>,
}

impl Report {
    /// Total number of tensors.
    pub fn num_tensors(&self) -> usize {
        self.tensors.len()
    }
    /// Total number of elements.
    pub fn num_elements(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }
    /// Total bytes.
    pub fn total_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.bytes).sum()
    }
    /// Globals flagged dangerous.
    pub fn dangerous_globals(&self) -> Vec<&str> {
        self.globals
            .iter()
            .filter(|g| g.1 == GlobalClass::Dangerous)
            .map(|g| g.0.as_str())
            .collect()
    }

    /// The report as JSON (non-finite floats in the config become strings, so the output
    /// is strict JSON).
    pub fn to_json(&self) -> Json {
        let s = |x: &str| Json::Str(x.to_string());
        let mut m = vec![
            ("path".to_string(), s(&self.path)),
            ("file_bytes".into(), Json::Int(self.file_bytes as i64)),
            ("format".into(), s(&self.format)),
            (
                "protocol".into(),
                self.protocol.map(|p| Json::Int(p as i64)).unwrap_or(Json::Null),
            ),
            ("kind".into(), s(&self.kind)),
        ];
        if let Some(z) = self.zip_members {
            m.push(("zip_members".into(), Json::Int(z as i64)));
        }
        m.push((
            "top_level".into(),
            Json::Object(self.top_level.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
        ));
        m.push((
            "globals".into(),
            Json::Array(
                self.globals
                    .iter()
                    .map(|(n, c, r, k)| {
                        Json::Object(vec![
                            ("name".into(), s(n)),
                            ("class".into(), s(class_name(*c))),
                            (
                                "opaque".into(),
                                Json::Bool(matches!(c, GlobalClass::Opaque | GlobalClass::Dangerous)),
                            ),
                            ("references".into(), Json::Int(*r as i64)),
                            ("calls".into(), Json::Int(*k as i64)),
                        ])
                    })
                    .collect(),
            ),
        ));
        m.push((
            "persistent_classes".into(),
            Json::Object(
                self.persistent_classes
                    .iter()
                    .map(|(k, v)| (k.clone(), Json::Int(*v as i64)))
                    .collect(),
            ),
        ));
        m.push((
            "config".into(),
            self.config.as_ref().map(strict).unwrap_or(Json::Null),
        ));
        if !self.metadata.is_empty() {
            m.push((
                "metadata".into(),
                Json::Object(self.metadata.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
            ));
        }
        m.push((
            "tensors".into(),
            Json::Array(
                self.tensors
                    .iter()
                    .map(|t| {
                        Json::Object(vec![
                            ("name".into(), s(&t.name)),
                            ("dtype".into(), s(&t.dtype)),
                            (
                                "shape".into(),
                                Json::Array(t.shape.iter().map(|d| Json::Int(*d as i64)).collect()),
                            ),
                            ("bytes".into(), Json::Int(t.bytes as i64)),
                        ])
                    })
                    .collect(),
            ),
        ));
        m.push((
            "totals".into(),
            Json::Object(vec![
                ("tensors".into(), Json::Int(self.num_tensors() as i64)),
                ("elements".into(), Json::Int(self.num_elements() as i64)),
                ("bytes".into(), Json::Int(self.total_bytes() as i64)),
            ]),
        ));
        m.push((
            "extract_error".into(),
            self.extract_error.as_deref().map(s).unwrap_or(Json::Null),
        ));
        Json::Object(m)
    }
}

/// Lower-case name of a global class.
pub fn class_name(c: GlobalClass) -> &'static str {
    match c {
        GlobalClass::Interpreted => "interpreted",
        GlobalClass::Generic => "generic",
        GlobalClass::Opaque => "opaque",
        GlobalClass::Dangerous => "dangerous",
    }
}

fn strict(j: &Json) -> Json {
    match j {
        Json::Float(f) if !f.is_finite() => Json::Str(crate::pickle::format_float(*f)),
        Json::Array(a) => Json::Array(a.iter().map(strict).collect()),
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), strict(v))).collect()),
        other => other.clone(),
    }
}

/// Builds the report of an opened checkpoint. Never fails: extraction problems are
/// reported in [`Report::extract_error`].
pub fn report(ck: &Checkpoint) -> Report {
    let a = &ck.arena;
    let kind = ck.kind();
    let top_level = match a.as_dict(ck.root) {
        Some(items) => crate::edm_pkl::dedup_items(a, items)
            .into_iter()
            .map(|(k, v)| (k, a.describe(v)))
            .take(200)
            .collect(),
        None if kind == Kind::Safetensors => Vec::new(),
        None => vec![("<root>".to_string(), a.describe(ck.root))],
    };
    let mut persistent_classes = BTreeMap::new();
    for i in 0..a.len() {
        if let Obj::Persistent { class_name, .. } = a.get(i as u32) {
            *persistent_classes.entry(class_name.clone()).or_insert(0) += 1;
        }
    }
    let sel = Selection {
        key: None,
        what: if kind == Kind::TrainingState {
            What::All
        } else {
            What::Net
        },
    };
    let (tensors, config, extract_error) = match ck.extract(&sel) {
        Ok(ex) => (
            ex.store
                .entries()
                .iter()
                .map(|e| TensorRow {
                    name: e.name.clone(),
                    dtype: e.dtype.torch_name().to_string(),
                    shape: e.shape.clone(),
                    bytes: e.nbytes(),
                })
                .collect(),
            ex.config,
            None,
        ),
        Err(e) => (Vec::new(), None, Some(e.to_string())),
    };
    Report {
        path: ck.path.display().to_string(),
        file_bytes: ck.buf.len(),
        format: ck.format.name().to_string(),
        protocol: ck.trace.protocol,
        kind: kind.tag().to_string(),
        zip_members: ck.zip.as_ref().map(|z| z.names.len()),
        top_level,
        globals: ck
            .trace
            .globals
            .iter()
            .map(|(k, u)| (k.clone(), u.class, u.references, u.calls))
            .collect(),
        persistent_classes,
        config,
        metadata: ck.safetensors.as_ref().map(|s| s.1.clone()).unwrap_or_default(),
        tensors,
        extract_error,
    }
}
