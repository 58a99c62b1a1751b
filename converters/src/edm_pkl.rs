//! EDM persistence objects (`torch_utils.persistence`) and `torch.nn.Module` state, walked
//! without executing anything.
//!
//! A module's pickled `__dict__` holds `_parameters` (name → tensor or None), `_buffers`
//! (name → tensor or None), `_non_persistent_buffers_set` and `_modules` (name → child or
//! None). PyTorch's `state_dict()` lists a module's own parameters, then its persistent
//! non-None buffers, then each child's entries under `<child>.`; [`module_tensors`]
//! reproduces exactly that order and those names.

use crate::pickle::{Arena, Obj, Value};
use crate::pyjson::Json;
use crate::{Error, Result};

/// Maximum module nesting depth accepted.
const MAX_DEPTH: usize = 64;

/// Nodes one JSON conversion (or one configuration made of several) may produce.
pub const JSON_BUDGET: usize = 100_000;

/// Work allowed for walking a module tree (or an optimizer state) of `arena`: shared
/// submodules make the number of paths exponential in the file size, so the walk is
/// bounded by a multiple of the number of decoded objects.
pub fn work_budget(arena: &Arena) -> usize {
    arena.len().saturating_mul(16).saturating_add(1 << 20)
}

/// A tensor found in a module tree.
#[derive(Debug, Clone)]
pub struct ModuleTensor {
    /// Dotted state_dict name.
    pub name: String,
    /// The tensor value in the arena.
    pub value: Value,
    /// Parameter (true) or buffer (false).
    pub is_parameter: bool,
}

/// The `__dict__` of a module-like object: a persistent object's `state`, or the `BUILD`
/// state of a plain object (e.g. `ModuleDict`).
pub fn object_state(arena: &Arena, v: Value) -> Option<Value> {
    match arena.obj(v)? {
        Obj::Persistent { state, .. } => Some(*state),
        Obj::Call { state: Some(s), .. } => {
            // `BUILD` may carry `(dict_state, slot_state)`.
            if arena.as_dict(*s).is_some() {
                Some(*s)
            } else {
                arena
                    .as_seq(*s)
                    .and_then(|t| t.first().copied())
                    .filter(|d| arena.as_dict(*d).is_some())
            }
        }
        _ => None,
    }
}

/// Class name of a module-like object (`EDMPrecond`, `ModuleDict`, ...).
pub fn class_name(arena: &Arena, v: Value) -> Option<String> {
    match arena.obj(v)? {
        Obj::Persistent { class_name, .. } => Some(class_name.clone()),
        Obj::Call { func, .. } => arena
            .global_name(*func)
            .map(|g| g.rsplit('.').next().unwrap_or(&g).to_string()),
        _ => None,
    }
}

/// Dict items with Python semantics for duplicate keys: first position, last value.
pub fn dedup_items(arena: &Arena, items: &[(Value, Value)]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::with_capacity(items.len());
    let mut pos: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (k, v) in items {
        let key = match (arena.as_str(*k), k) {
            (Some(s), _) => s.to_string(),
            (None, Value::Int(i)) => i.to_string(),
            _ => arena.describe(*k),
        };
        match pos.get(&key) {
            Some(&i) => out[i].1 = *v,
            None => {
                pos.insert(key.clone(), out.len());
                out.push((key, *v));
            }
        }
    }
    out
}

/// Lists the state_dict tensors of the module `v`, names prefixed by `prefix`.
pub fn module_tensors(arena: &Arena, v: Value, prefix: &str) -> Result<Vec<ModuleTensor>> {
    let mut out = Vec::new();
    let mut work = work_budget(arena);
    walk(arena, v, prefix, 0, &mut out, &mut work)?;
    Ok(out)
}

fn walk(
    arena: &Arena,
    v: Value,
    prefix: &str,
    depth: usize,
    out: &mut Vec<ModuleTensor>,
    work: &mut usize,
) -> Result<()> {
    let here = if prefix.is_empty() {
        "<root>"
    } else {
        prefix.trim_end_matches('.')
    };
    if depth > MAX_DEPTH {
        return Err(Error::format(format!(
            "module tree deeper than {MAX_DEPTH} levels at {here}"
        )));
    }
    let state = object_state(arena, v).ok_or_else(|| {
        Error::format(format!(
            "{here} is {} where a module was expected",
            arena.describe(v)
        ))
    })?;
    let dict_of = |key: &str| -> Result<Vec<(String, Value)>> {
        match arena.dict_get(state, key) {
            None | Some(Value::None) => Ok(Vec::new()),
            Some(d) => arena
                .as_dict(d)
                .map(|items| dedup_items(arena, items))
                .ok_or_else(|| {
                    Error::format(format!("{here}.{key} is {} (expected a dict)", arena.describe(d)))
                }),
        }
    };
    let params = dict_of("_parameters")?;
    let buffers = dict_of("_buffers")?;
    let modules = dict_of("_modules")?;
    let names: usize = params
        .iter()
        .chain(&buffers)
        .chain(&modules)
        .map(|(n, _)| n.len())
        .sum();
    let non_persistent_set = arena
        .dict_get(state, "_non_persistent_buffers_set")
        .and_then(|s| arena.as_seq(s))
        .unwrap_or(&[]);
    let entries = params.len() + buffers.len() + modules.len() + non_persistent_set.len();
    let cost = entries
        .saturating_mul(prefix.len() + 1)
        .saturating_add(names)
        .saturating_add(arena.as_dict(state).map_or(0, <[_]>::len) + 1);
    *work = work.checked_sub(cost).ok_or_else(|| {
        Error::format(format!(
            "module tree too large for the file at {here} (shared submodules repeated exponentially?)"
        ))
    })?;
    for (name, t) in params {
        if t != Value::None {
            out.push(ModuleTensor {
                name: format!("{prefix}{name}"),
                value: t,
                is_parameter: true,
            });
        }
    }
    let non_persistent: std::collections::HashSet<&str> = non_persistent_set
        .iter()
        .filter_map(|x| arena.as_str(*x))
        .collect();
    for (name, t) in buffers {
        if t != Value::None && !non_persistent.contains(name.as_str()) {
            out.push(ModuleTensor {
                name: format!("{prefix}{name}"),
                value: t,
                is_parameter: false,
            });
        }
    }
    for (name, child) in modules {
        if child != Value::None {
            walk(arena, child, &format!("{prefix}{name}."), depth + 1, out, work)?;
        }
    }
    Ok(())
}

/// Converts a pickle value to JSON (numbers, strings, lists, tuples, str-keyed dicts; numpy
/// scalars are already numbers). Other objects become descriptive strings. Bounded in depth
/// (32) and size ([`JSON_BUDGET`] nodes), so hostile sharing cannot blow it up.
pub fn to_json(arena: &Arena, v: Value) -> Json {
    let mut budget = JSON_BUDGET;
    to_json_budget(arena, v, &mut budget)
}

/// [`to_json`] drawing from a node budget shared by several conversions (the parts of one
/// configuration), so that many references to one large value cannot multiply the output.
pub fn to_json_budget(arena: &Arena, v: Value, budget: &mut usize) -> Json {
    json_rec(arena, v, 0, budget)
}

/// Charges the text of dict keys (one node per 16 bytes) to a JSON budget.
fn charge_keys(items: &[(String, Value)], budget: &mut usize) {
    let bytes: usize = items.iter().map(|(k, _)| k.len()).sum();
    *budget = budget.saturating_sub(items.len() + bytes / 16);
}

fn json_rec(arena: &Arena, v: Value, depth: usize, budget: &mut usize) -> Json {
    // Every node costs budget, truncated ones included, and containers stop at an empty
    // budget: otherwise a value shared many times just below the depth limit multiplies.
    if *budget == 0 {
        return Json::Str("<truncated>".into());
    }
    *budget -= 1;
    if depth > 32 {
        return Json::Str("<truncated>".into());
    }
    let truncated = |budget: &usize| *budget == 0;
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(b),
        Value::Int(i) => Json::Int(i),
        Value::Float(f) => Json::Float(f),
        Value::Ref(_) => match arena.obj(v).unwrap() {
            Obj::Str(s) => {
                // strings cost one node per 16 bytes, so a long one shared many times is
                // copied a bounded number of times
                if s.len() / 16 > *budget {
                    *budget = 0;
                    return Json::Str("<truncated>".into());
                }
                *budget -= s.len() / 16;
                Json::Str(s.clone())
            }
            Obj::Tuple(x) | Obj::List(x) | Obj::Set(x) => {
                let mut out = Vec::new();
                for e in x {
                    if truncated(budget) {
                        out.push(Json::Str("<truncated>".into()));
                        break;
                    }
                    out.push(json_rec(arena, *e, depth + 1, budget));
                }
                Json::Array(out)
            }
            Obj::Dict { items, .. } => {
                let mut out = Vec::new();
                let items = dedup_items(arena, items);
                charge_keys(&items, budget);
                for (k, e) in items {
                    if truncated(budget) {
                        out.push(("<truncated>".to_string(), Json::Null));
                        break;
                    }
                    out.push((k, json_rec(arena, e, depth + 1, budget)));
                }
                Json::Object(out)
            }
            Obj::BigInt(Some(i), _) => Json::Float(*i as f64),
            _ => Json::Str(format!("<{}>", arena.describe(v))),
        },
    }
}

/// Constructor configuration of a persistent object: `class_name`, `init_args`,
/// `init_kwargs`, the plain (public, scalar) attributes, and the same for a child `model`.
pub fn persistent_config(arena: &Arena, v: Value) -> Option<Json> {
    let mut budget = JSON_BUDGET;
    persistent_config_rec(arena, v, 0, &mut budget)
}

/// [`persistent_config`] with one JSON budget for the whole nesting; `model` children are
/// followed at most [`MAX_DEPTH`] levels (a file can make an object its own `model`).
fn persistent_config_rec(arena: &Arena, v: Value, depth: usize, budget: &mut usize) -> Option<Json> {
    if depth > MAX_DEPTH || *budget == 0 {
        return None;
    }
    let Obj::Persistent {
        class_name, version, ..
    } = arena.obj(v)?
    else {
        return None;
    };
    let state = object_state(arena, v)?;
    let mut m = vec![
        ("class_name".to_string(), Json::Str(class_name.clone())),
        ("persistence_version".to_string(), Json::Int(*version)),
    ];
    if let Some(a) = arena.dict_get(state, "_init_args") {
        m.push(("init_args".into(), to_json_budget(arena, a, budget)));
    }
    if let Some(k) = arena.dict_get(state, "_init_kwargs") {
        m.push(("init_kwargs".into(), to_json_budget(arena, k, budget)));
    }
    let mut attrs = Vec::new();
    let items = dedup_items(arena, arena.as_dict(state).unwrap_or(&[]));
    charge_keys(&items, budget);
    for (k, val) in items {
        if k.starts_with('_') || k == "training" {
            continue;
        }
        if matches!(val, Value::Ref(_)) && arena.as_str(val).is_none() && arena.as_seq(val).is_none() {
            continue;
        }
        attrs.push((k, to_json_budget(arena, val, budget)));
    }
    m.push(("attributes".into(), Json::Object(attrs)));
    if let Some(model) = arena
        .dict_get(state, "_modules")
        .and_then(|mods| arena.dict_get(mods, "model"))
    {
        if let Some(c) = persistent_config_rec(arena, model, depth + 1, budget) {
            m.push(("model".into(), c));
        }
    }
    Some(Json::Object(m))
}
