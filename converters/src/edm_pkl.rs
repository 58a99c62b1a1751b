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
    walk(arena, v, prefix, 0, &mut out)?;
    Ok(out)
}

fn walk(arena: &Arena, v: Value, prefix: &str, depth: usize, out: &mut Vec<ModuleTensor>) -> Result<()> {
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
    for (name, t) in dict_of("_parameters")? {
        if t != Value::None {
            out.push(ModuleTensor {
                name: format!("{prefix}{name}"),
                value: t,
                is_parameter: true,
            });
        }
    }
    let non_persistent: Vec<String> = arena
        .dict_get(state, "_non_persistent_buffers_set")
        .and_then(|s| arena.as_seq(s))
        .map(|s| {
            s.iter()
                .filter_map(|x| arena.as_str(*x).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (name, t) in dict_of("_buffers")? {
        if t != Value::None && !non_persistent.contains(&name) {
            out.push(ModuleTensor {
                name: format!("{prefix}{name}"),
                value: t,
                is_parameter: false,
            });
        }
    }
    for (name, child) in dict_of("_modules")? {
        if child != Value::None {
            walk(arena, child, &format!("{prefix}{name}."), depth + 1, out)?;
        }
    }
    Ok(())
}

/// Converts a pickle value to JSON (numbers, strings, lists, tuples, str-keyed dicts; numpy
/// scalars are already numbers). Other objects become descriptive strings. Bounded in depth
/// (32) and size (100k nodes), so hostile sharing cannot blow it up.
pub fn to_json(arena: &Arena, v: Value) -> Json {
    let mut budget = 100_000usize;
    json_rec(arena, v, 0, &mut budget)
}

fn json_rec(arena: &Arena, v: Value, depth: usize, budget: &mut usize) -> Json {
    if *budget == 0 || depth > 32 {
        return Json::Str("<truncated>".into());
    }
    *budget -= 1;
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(b),
        Value::Int(i) => Json::Int(i),
        Value::Float(f) => Json::Float(f),
        Value::Ref(_) => match arena.obj(v).unwrap() {
            Obj::Str(s) => Json::Str(s.clone()),
            Obj::Tuple(x) | Obj::List(x) | Obj::Set(x) => {
                Json::Array(x.iter().map(|e| json_rec(arena, *e, depth + 1, budget)).collect())
            }
            Obj::Dict { items, .. } => Json::Object(
                dedup_items(arena, items)
                    .into_iter()
                    .map(|(k, e)| (k, json_rec(arena, e, depth + 1, budget)))
                    .collect(),
            ),
            Obj::BigInt(Some(i), _) => Json::Float(*i as f64),
            _ => Json::Str(format!("<{}>", arena.describe(v))),
        },
    }
}

/// Constructor configuration of a persistent object: `class_name`, `init_args`,
/// `init_kwargs`, the plain (public, scalar) attributes, and the same for a child `model`.
pub fn persistent_config(arena: &Arena, v: Value) -> Option<Json> {
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
        m.push(("init_args".into(), to_json(arena, a)));
    }
    if let Some(k) = arena.dict_get(state, "_init_kwargs") {
        m.push(("init_kwargs".into(), to_json(arena, k)));
    }
    let mut attrs = Vec::new();
    for (k, val) in dedup_items(arena, arena.as_dict(state).unwrap_or(&[])) {
        if k.starts_with('_') || k == "training" {
            continue;
        }
        if matches!(val, Value::Ref(_)) && arena.as_str(val).is_none() && arena.as_seq(val).is_none() {
            continue;
        }
        attrs.push((k, to_json(arena, val)));
    }
    m.push(("attributes".into(), Json::Object(attrs)));
    if let Some(model) = arena
        .dict_get(state, "_modules")
        .and_then(|mods| arena.dict_get(mods, "model"))
    {
        if let Some(c) = persistent_config(arena, model) {
            m.push(("model".into(), c));
        }
    }
    Some(Json::Object(m))
}
