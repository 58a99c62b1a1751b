//! Opening any supported checkpoint file and extracting a state_dict + configuration.
//!
//! Formats are recognised by content, not extension: torch.save zip, torch.save legacy,
//! plain pickle (EDM `network-snapshot-*.pkl`), safetensors. What the object *is* (plain
//! state_dict, EDM snapshot, EDM training state) is recognised from its structure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::edm_pkl::{self, dedup_items, module_tensors, persistent_config, to_json, to_json_budget};
use crate::pickle::{self, globals::Trace, Arena, Obj, Value};
use crate::pyjson::Json;
use crate::store::{Buffer, TensorStore};
use crate::torch_zip::ZipIndex;
use crate::{dtype::DType, torch_legacy, torch_zip, Error, Result};

/// Container format of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `torch.save` zip archive.
    TorchZip,
    /// `torch.save` legacy (non-zip) stream.
    TorchLegacy,
    /// A plain pickle stream (EDM snapshots).
    Pickle,
    /// safetensors.
    Safetensors,
}

impl Format {
    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            Format::TorchZip => "torch.save zip",
            Format::TorchLegacy => "torch.save legacy",
            Format::Pickle => "pickle",
            Format::Safetensors => "safetensors",
        }
    }
}

/// What the stored object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dict name → tensor.
    StateDict,
    /// An EDM `network-snapshot-*.pkl` dict (`ema`, `loss_fn`, `augment_pipe`, `dataset_kwargs`).
    EdmSnapshot,
    /// An EDM `training-state-*.pt` dict (`net`, `optimizer_state`).
    TrainingState,
    /// A module object pickled on its own.
    Module,
    /// A safetensors file.
    Safetensors,
    /// Anything else.
    Unknown,
}

impl Kind {
    /// Short tag used in metadata.
    pub fn tag(self) -> &'static str {
        match self {
            Kind::StateDict => "state-dict",
            Kind::EdmSnapshot => "edm-snapshot",
            Kind::TrainingState => "training-state",
            Kind::Module => "module",
            Kind::Safetensors => "safetensors",
            Kind::Unknown => "unknown",
        }
    }
}

/// Which part of a training state to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum What {
    /// The network's state_dict.
    #[default]
    Net,
    /// The Adam state (`optimizer.exp_avg.<param>`, ...).
    Optimizer,
    /// Both.
    All,
}

/// What to extract from a file.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Top-level module of an EDM snapshot (default `ema`).
    pub key: Option<String>,
    /// Part of a training state (default the net).
    pub what: What,
}

/// An opened checkpoint: the bytes (memory-mapped) and the decoded object graph.
pub struct Checkpoint {
    /// The file it came from.
    pub path: PathBuf,
    /// Its bytes.
    pub buf: Arc<Buffer>,
    /// Container format.
    pub format: Format,
    /// Decoded pickle objects (empty for safetensors).
    pub arena: Arena,
    /// Root object (`None` for safetensors).
    pub root: Value,
    /// What the pickle VM saw.
    pub trace: Trace,
    /// Zip member table (zip format).
    pub zip: Option<ZipIndex>,
    /// Tensors and metadata (safetensors).
    pub safetensors: Option<(TensorStore, BTreeMap<String, String>)>,
}

/// The result of [`Checkpoint::extract`].
#[derive(Debug, Clone)]
pub struct Extracted {
    /// Tensors in state_dict order.
    pub store: TensorStore,
    /// Recovered configuration (constructor kwargs etc.), if any.
    pub config: Option<Json>,
    /// `kind[:key]` tag describing what was extracted.
    pub what: String,
}

/// Opens and decodes `path` (memory-mapped; tensor data is not read).
pub fn open(path: &Path) -> Result<Checkpoint> {
    let buf = Arc::new(Buffer::open(path)?);
    from_buffer(path, buf).map_err(|e| e.in_file(path))
}

/// The legacy-format prefix: PROTO 2, LONG1 of 10 bytes holding the magic number.
const LEGACY_PREFIX: [u8; 14] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
];

/// Detects the container format of `buf`.
pub fn detect(buf: &[u8]) -> Result<Format> {
    if buf.is_empty() {
        return Err(Error::format("empty file"));
    }
    // PROTO 2 + LONG1 of 10 bytes: a legacy file, even if the magic number itself is wrong
    // (the legacy reader then says so, instead of this being read as a plain pickle of an int)
    if buf.starts_with(&LEGACY_PREFIX[..4]) {
        return Ok(Format::TorchLegacy);
    }
    if torch_zip::looks_like_zip(buf) {
        return Ok(Format::TorchZip);
    }
    if buf.len() >= 9 && buf[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if buf[0] == 0x80 || matches!(buf[0], b'(' | b'}' | b']' | b'c') {
        return Ok(Format::Pickle);
    }
    Err(Error::format(format!(
        "unrecognised format (first bytes {:02x?}); expected a torch.save zip or legacy file, a pickle, or safetensors",
        &buf[..buf.len().min(8)]
    )))
}

/// Decodes a checkpoint held in `buf`; `path` is only used for messages.
pub fn from_buffer(path: &Path, buf: Arc<Buffer>) -> Result<Checkpoint> {
    let format = detect(&buf)?;
    let mut arena = Arena::default();
    let mut trace = Trace::default();
    let mut zip = None;
    let mut safetensors = None;
    let root = match format {
        Format::TorchZip => {
            let z = torch_zip::load(&buf, &mut arena, &mut trace)?;
            zip = Some(z.index);
            z.root
        }
        Format::TorchLegacy => {
            torch_legacy::load_legacy(&buf, 0, buf.len(), &mut arena, &mut trace, "legacy torch.save")?.root
        }
        Format::Pickle => pickle::run_vm(&buf, 0, buf.len(), "pickle", &mut arena, None, &mut trace)?.value,
        Format::Safetensors => {
            safetensors = Some(crate::safetensors_io::read(buf.clone())?);
            Value::None
        }
    };
    Ok(Checkpoint {
        path: path.to_path_buf(),
        buf,
        format,
        arena,
        root,
        trace,
        zip,
        safetensors,
    })
}

impl Checkpoint {
    /// What the stored object is.
    pub fn kind(&self) -> Kind {
        if self.safetensors.is_some() {
            return Kind::Safetensors;
        }
        let a = &self.arena;
        if matches!(a.obj(self.root), Some(Obj::Persistent { .. })) {
            return Kind::Module;
        }
        let Some(items) = a.as_dict(self.root) else {
            return Kind::Unknown;
        };
        let has = |k: &str| a.dict_get(self.root, k).is_some();
        if has("net") && has("optimizer_state") {
            return Kind::TrainingState;
        }
        if has("ema") && edm_pkl::object_state(a, a.dict_get(self.root, "ema").unwrap()).is_some() {
            return Kind::EdmSnapshot;
        }
        if items
            .iter()
            .all(|(_, v)| matches!(a.obj(*v), Some(Obj::Tensor(_))))
        {
            return Kind::StateDict;
        }
        Kind::Unknown
    }

    /// Top-level keys of a dict root.
    pub fn top_keys(&self) -> Vec<String> {
        self.arena
            .as_dict(self.root)
            .map(|items| {
                dedup_items(&self.arena, items)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Extracts tensors (state_dict names and order) and the configuration.
    ///
    /// Refuses files whose pickle references code-execution globals.
    pub fn extract(&self, sel: &Selection) -> Result<Extracted> {
        self.extract_inner(sel).map_err(|e| e.in_file(&self.path))
    }

    fn extract_inner(&self, sel: &Selection) -> Result<Extracted> {
        self.trace.refuse_dangerous()?;
        let a = &self.arena;
        let kind = self.kind();
        let mut store = TensorStore::new(self.buf.clone());
        let push_all = |store: &mut TensorStore, list: Vec<edm_pkl::ModuleTensor>| -> Result<()> {
            for t in list {
                store.push_pickled(a, t.name, t.value, t.is_parameter)?;
            }
            Ok(())
        };
        if sel.key.is_some() && kind != Kind::EdmSnapshot {
            return Err(Error::format(format!(
                "--key applies to EDM snapshots; this file is a {}",
                kind.tag()
            )));
        }
        let (config, what) = match kind {
            Kind::Safetensors => {
                let (st, meta) = self.safetensors.as_ref().unwrap();
                let config = match meta.get("tiw.config") {
                    Some(t) => {
                        Some(Json::parse(t).map_err(|e| Error::format(format!("tiw.config metadata: {e}")))?)
                    }
                    None => None,
                };
                return Ok(Extracted {
                    store: st.clone(),
                    config,
                    what: meta
                        .get("tiw.kind")
                        .cloned()
                        .unwrap_or_else(|| "safetensors".into()),
                });
            }
            Kind::StateDict => {
                for (name, v) in dedup_items(a, a.as_dict(self.root).unwrap()) {
                    store.push_pickled(a, name, v, true)?;
                }
                (None, "state-dict".to_string())
            }
            Kind::Module => {
                push_all(&mut store, module_tensors(a, self.root, "")?)?;
                (persistent_config(a, self.root), "module".to_string())
            }
            Kind::EdmSnapshot => {
                let key = sel.key.clone().unwrap_or_else(|| "ema".into());
                let m = a.dict_get(self.root, &key).ok_or_else(|| {
                    Error::format(format!(
                        "snapshot has no top-level {key:?} (keys: {})",
                        self.top_keys().join(", ")
                    ))
                })?;
                if m == Value::None {
                    return Err(Error::format(format!("snapshot entry {key:?} is None")));
                }
                push_all(&mut store, module_tensors(a, m, "")?)?;
                (Some(self.snapshot_config(&key, m)), format!("edm-snapshot:{key}"))
            }
            Kind::TrainingState => {
                let net = a.dict_get(self.root, "net").unwrap();
                let tensors = module_tensors(a, net, "")?;
                let params: Vec<String> = tensors
                    .iter()
                    .filter(|t| t.is_parameter)
                    .map(|t| t.name.clone())
                    .collect();
                let mut cfg = match persistent_config(a, net) {
                    Some(Json::Object(m)) => m,
                    _ => Vec::new(),
                };
                if matches!(sel.what, What::Net | What::All) {
                    push_all(&mut store, tensors)?;
                }
                let opt = a.dict_get(self.root, "optimizer_state").unwrap();
                let (ost, ocfg) = self.optimizer(opt, &params)?;
                if matches!(sel.what, What::Optimizer | What::All) {
                    for t in ost {
                        store.push_pickled(a, t.name, t.value, false)?;
                    }
                }
                cfg.insert(0, ("source_format".into(), Json::Str("training-state".into())));
                cfg.push(("optimizer".into(), ocfg));
                let w = match sel.what {
                    What::Net => "net",
                    What::Optimizer => "optimizer",
                    What::All => "all",
                };
                (Some(Json::Object(cfg)), format!("training-state:{w}"))
            }
            Kind::Unknown => {
                return Err(Error::format(format!(
                    "no state_dict found: the top-level object is {}{}",
                    a.describe(self.root),
                    if self.top_keys().is_empty() {
                        String::new()
                    } else {
                        format!(" with keys {}", self.top_keys().join(", "))
                    }
                )))
            }
        };
        Ok(Extracted { store, config, what })
    }

    fn snapshot_config(&self, key: &str, module: Value) -> Json {
        let a = &self.arena;
        let mut m = vec![
            ("source_format".to_string(), Json::Str("edm-snapshot".into())),
            ("module".to_string(), Json::Str(key.into())),
        ];
        if let Some(Json::Object(c)) = persistent_config(a, module) {
            m.extend(c);
        }
        for other in ["loss_fn", "augment_pipe"] {
            if other == key {
                continue;
            }
            if let Some(v) = a.dict_get(self.root, other) {
                let j = match persistent_config(a, v) {
                    Some(c) => c,
                    None => to_json(a, v),
                };
                m.push((other.into(), j));
            }
        }
        if let Some(v) = a.dict_get(self.root, "dataset_kwargs") {
            m.push(("dataset_kwargs".into(), to_json(a, v)));
        }
        Json::Object(m)
    }

    /// Maps an Adam `optimizer.state_dict()` to named tensors and a JSON summary.
    fn optimizer(&self, opt: Value, params: &[String]) -> Result<(Vec<edm_pkl::ModuleTensor>, Json)> {
        let a = &self.arena;
        let mut out = Vec::new();
        let mut scalars = Vec::new();
        // Entries may share one fields dict and the groups one large value: bound the work
        // and the JSON by the file, not by the number of paths.
        let mut work = edm_pkl::work_budget(a);
        let mut jb = edm_pkl::JSON_BUDGET;
        let state = a.dict_get(opt, "state").unwrap_or(Value::None);
        let items = a
            .as_dict(state)
            .ok_or_else(|| Error::format("optimizer_state['state'] is not a dict"))?;
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in items {
            let Value::Int(idx) = *k else {
                return Err(Error::format(format!(
                    "optimizer state key {} is not an int",
                    a.describe(*k)
                )));
            };
            let pname = usize::try_from(idx)
                .ok()
                .and_then(|i| params.get(i))
                .ok_or_else(|| {
                    Error::format(format!(
                        "optimizer state refers to parameter index {idx} but the net has {} parameters",
                        params.len()
                    ))
                })?;
            if !seen.insert(idx) {
                return Err(Error::format(format!(
                    "optimizer state lists parameter {idx} twice"
                )));
            }
            let fields = a
                .as_dict(*v)
                .ok_or_else(|| Error::format(format!("optimizer state of {pname} is not a dict")))?;
            let fields = dedup_items(a, fields);
            let cost: usize = fields.iter().map(|(f, _)| f.len() + pname.len() + 16).sum();
            work = work.checked_sub(cost).ok_or_else(|| {
                Error::format("optimizer state too large for the file (entries sharing one large dict?)")
            })?;
            for (field, val) in fields {
                if matches!(a.obj(val), Some(Obj::Tensor(_))) {
                    out.push(edm_pkl::ModuleTensor {
                        name: format!("optimizer.{field}.{pname}"),
                        value: val,
                        is_parameter: false,
                    });
                } else {
                    scalars.push((format!("{field}.{pname}"), to_json_budget(a, val, &mut jb)));
                }
            }
        }
        let mut groups = Vec::new();
        for g in a
            .dict_get(opt, "param_groups")
            .and_then(|g| a.as_seq(g))
            .unwrap_or(&[])
        {
            groups.push(match to_json_budget(a, *g, &mut jb) {
                Json::Object(m) => {
                    let mut fields = Vec::with_capacity(m.len());
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("params", Json::Array(p)) => {
                                let mut names = Vec::with_capacity(p.len());
                                for i in p {
                                    match i.as_i64().and_then(|i| params.get(i as usize)) {
                                        // names cost JSON budget too (they may be long)
                                        Some(n) if n.len() / 16 <= jb => {
                                            jb -= n.len() / 16;
                                            names.push(Json::Str(n.clone()));
                                        }
                                        _ => names.push(i),
                                    }
                                }
                                fields.push(("params".to_string(), Json::Array(names)));
                            }
                            (_, v) => fields.push((k, v)),
                        }
                    }
                    Json::Object(fields)
                }
                other => other,
            });
        }
        let mut cfg = vec![
            ("param_groups".to_string(), Json::Array(groups)),
            ("num_param_states".to_string(), Json::Int(seen.len() as i64)),
        ];
        if !scalars.is_empty() {
            cfg.push(("scalar_state".into(), Json::Object(scalars)));
        }
        Ok((out, Json::Object(cfg)))
    }
}

/// Builds a store of owned f32 tensors (handy for tests and benchmarks).
pub fn owned_f32_store(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<TensorStore> {
    TensorStore::from_owned(
        tensors
            .into_iter()
            .map(|(n, s, v)| (n, DType::F32, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
            .collect(),
    )
}
