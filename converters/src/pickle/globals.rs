//! The allow-list: the only globals whose calls are interpreted, and how.
//!
//! | global | result |
//! |---|---|
//! | `collections.OrderedDict` | ordered [`Obj::Dict`] |
//! | `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` | [`Obj::Tensor`] (strided view, offset/strides in elements) |
//! | `torch._utils._rebuild_parameter[_with_state]` | the tensor, marked as parameter |
//! | `torch.storage._load_from_bytes` | [`Obj::Storage`] decoded from a legacy torch.save payload |
//! | `torch_utils.persistence._reconstruct_persistent_obj` | [`Obj::Persistent`] (class name + `__dict__`) |
//! | `numpy.core.multiarray.scalar`, `numpy._core.multiarray.scalar` | a number read from the raw bytes |
//! | `numpy.dtype` | [`Obj::NumpyDtype`] (byte order from `BUILD`) |
//! | `_codecs.encode(str, 'latin1')` | bytes |
//! | `__builtin__.set` / `builtins.set` / `frozenset` | [`Obj::Set`] |
//! | `torch.Size` | tuple |
//!
//! numpy arrays (`numpy.core.multiarray._reconstruct` + `BUILD`, protocol 5's
//! `numpy.core.numeric._frombuffer`; also under `numpy._core`) stay generic [`Obj::Call`]
//! nodes; [`ndarray`] reads one as data, checking its declared size against its bytes.
//!
//! Storage classes (`torch.FloatStorage`, …) appear only inside persistent ids. `ModuleDict`,
//! `copyreg._reconstructor` and `builtins.object` stay generic [`Obj::Call`] nodes whose state
//! the EDM walker reads. Everything else is opaque; globals that are code-execution
//! primitives (`os.system`, `builtins.eval`, `subprocess.Popen`, …) are additionally flagged
//! as dangerous, and loaders refuse files that call them.

use std::collections::BTreeMap;

use super::{Arena, Bytes, CallKind, Obj, TensorRef, Value};
use crate::dtype::DType;

/// How a referenced global is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalClass {
    /// On the allow-list: interpreted as data.
    Interpreted,
    /// Known harmless container / module class whose state is read generically.
    Generic,
    /// Unknown: kept as an opaque node, never called.
    Opaque,
    /// A code-execution primitive; loaders refuse files that call it.
    Dangerous,
}

/// Per-global usage record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GlobalUse {
    /// How many times it was referenced.
    pub references: usize,
    /// How many times it was called (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`).
    pub calls: usize,
    /// Its class.
    pub class: GlobalClass,
}

/// What the VM saw, for `inspect` and the refusal policy.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// First protocol announced.
    pub protocol: Option<u8>,
    /// Opcodes executed.
    pub opcodes: u64,
    /// Globals by `module.name`.
    pub globals: BTreeMap<String, GlobalUse>,
    /// Nesting of `_load_from_bytes` payloads being decoded.
    pub payload_depth: u32,
}

impl Trace {
    pub(crate) fn note_global(&mut self, module: &str, name: &str) {
        let class = classify(module, name);
        let e = self
            .globals
            .entry(format!("{module}.{name}"))
            .or_insert(GlobalUse {
                references: 0,
                calls: 0,
                class,
            });
        e.references += 1;
    }

    fn note_call(&mut self, full: &str) {
        if let Some(e) = self.globals.get_mut(full) {
            e.calls += 1;
        }
    }

    /// Globals of class [`GlobalClass::Dangerous`] that the stream referenced.
    pub fn dangerous(&self) -> Vec<&str> {
        self.globals
            .iter()
            .filter(|(_, u)| u.class == GlobalClass::Dangerous)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Fails if the stream references a code-execution primitive.
    pub fn refuse_dangerous(&self) -> crate::Result<()> {
        let d = self.dangerous();
        if d.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Refused(format!(
                "pickle references code-execution global(s) {} — nothing was executed; \
                 this is not a plain checkpoint (use `tiw inspect` to see it)",
                d.join(", ")
            )))
        }
    }
}

const INTERPRETED: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch.storage._load_from_bytes",
    "torch_utils.persistence._reconstruct_persistent_obj",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "_codecs.encode",
    "__builtin__.set",
    "builtins.set",
    "__builtin__.frozenset",
    "builtins.frozenset",
    "torch.Size",
];

const GENERIC: &[&str] = &[
    "numpy.ndarray",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.Sequential",
    "copyreg._reconstructor",
    "builtins.object",
    "__builtin__.object",
];

const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "sys",
    "shutil",
    "socket",
    "importlib",
    "runpy",
    "pickle",
    "_pickle",
    "marshal",
    "code",
    "codeop",
    "ctypes",
    "pty",
    "webbrowser",
    "pdb",
    "commands",
    "multiprocessing",
    "asyncio",
    "threading",
    "signal",
    "operator",
    "functools",
    "types",
    "inspect",
    "pathlib",
    "tempfile",
    "urllib",
    "http",
    "ftplib",
    "smtplib",
    "telnetlib",
    "shelve",
    "dill",
    "cloudpickle",
    "torch.hub",
    "torch.jit",
    "torch.serialization",
];

const DANGEROUS_NAMES: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "system",
    "popen",
    "getattr",
    "setattr",
    "delattr",
    "__import__",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
    "apply",
    "load",
    "loads",
];

/// Classifies `module.name`.
pub fn classify(module: &str, name: &str) -> GlobalClass {
    let full = format!("{module}.{name}");
    if INTERPRETED.contains(&full.as_str())
        || DType::from_torch_storage_name(name).is_some() && module == "torch"
    {
        return GlobalClass::Interpreted;
    }
    if GENERIC.contains(&full.as_str()) {
        return GlobalClass::Generic;
    }
    let root = module.split('.').next().unwrap_or(module);
    let builtin = matches!(root, "builtins" | "__builtin__");
    if DANGEROUS_MODULES.contains(&root)
        || DANGEROUS_MODULES
            .iter()
            .any(|m| module == *m || module.starts_with(&format!("{m}.")))
        || DANGEROUS_NAMES.contains(&name)
        || name.starts_with("__")
        || (builtin
            && !matches!(
                name,
                "set"
                    | "frozenset"
                    | "object"
                    | "slice"
                    | "complex"
                    | "bytearray"
                    | "list"
                    | "dict"
                    | "tuple"
                    | "int"
                    | "float"
                    | "str"
                    | "bytes"
                    | "bool"
                    | "range"
            ))
    {
        return GlobalClass::Dangerous;
    }
    GlobalClass::Opaque
}

/// Interprets `func(*args)` if `func` is allow-listed; otherwise builds an opaque node.
pub(crate) fn call(
    arena: &mut Arena,
    buf: &[u8],
    trace: &mut Trace,
    func: Value,
    args: Value,
    kind: CallKind,
) -> Result<Value, String> {
    let name = arena.global_name(func);
    if let Some(n) = &name {
        trace.note_call(n);
    }
    let interpreted = match name.as_deref() {
        Some(n) if kind == CallKind::Reduce => interpret(arena, buf, trace, n, args)?,
        _ => None,
    };
    Ok(match interpreted {
        Some(v) => v,
        None => arena.push(Obj::Call {
            func,
            args,
            kind,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        }),
    })
}

fn args_of<'a>(arena: &'a Arena, args: Value, what: &str) -> Result<&'a [Value], String> {
    match arena.obj(args) {
        Some(Obj::Tuple(t)) => Ok(t),
        _ => Err(format!("{what}: arguments are not a tuple")),
    }
}

fn int_arg(v: Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(i),
        Value::Bool(b) => Ok(b as i64),
        _ => Err(format!("{what}: expected an int")),
    }
}

fn int_tuple(arena: &Arena, v: Value, what: &str) -> Result<Vec<i64>, String> {
    let seq = arena
        .as_seq(v)
        .ok_or_else(|| format!("{what}: expected a tuple of ints"))?;
    if seq.len() > 64 {
        return Err(format!("{what}: {} dimensions (more than 64)", seq.len()));
    }
    seq.iter().map(|x| int_arg(*x, what)).collect()
}

fn interpret(
    arena: &mut Arena,
    buf: &[u8],
    trace: &mut Trace,
    name: &str,
    args: Value,
) -> Result<Option<Value>, String> {
    let v = match name {
        "collections.OrderedDict" => {
            let a = args_of(arena, args, name)?;
            let mut items = Vec::new();
            if let Some(src) = a.first() {
                for pair in arena.as_seq(*src).ok_or("OrderedDict: argument is not a list")? {
                    match arena.as_seq(*pair) {
                        Some([k, v]) => items.push((*k, *v)),
                        _ => return Err("OrderedDict: item is not a pair".into()),
                    }
                }
            }
            arena.push(Obj::Dict {
                items,
                ordered: true,
                state: None,
            })
        }
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            rebuild_tensor(arena, name, args)?
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            rebuild_parameter(arena, name, args)?
        }
        "torch.storage._load_from_bytes" => {
            let a = args_of(arena, args, name)?;
            let (start, len) = match a.first().and_then(|b| arena.obj(*b)) {
                Some(Obj::Bytes(Bytes::Span { start, len })) => (*start, *len),
                Some(Obj::Bytes(Bytes::Owned(_))) => {
                    return Err("_load_from_bytes of bytes built by _codecs.encode is not supported".into())
                }
                _ => return Err("_load_from_bytes: argument is not bytes".into()),
            };
            if trace.payload_depth > 0 {
                return Err("_load_from_bytes nested inside another storage payload".into());
            }
            trace.payload_depth += 1;
            let r = crate::torch_legacy::load_storage_payload(buf, start, len, arena, trace);
            trace.payload_depth -= 1;
            r.map_err(|e| format!("storage payload at byte {start} ({len} bytes): {e}"))?
        }
        "torch_utils.persistence._reconstruct_persistent_obj" => persistent_obj(arena, args)?,
        "numpy.dtype" => {
            let a = args_of(arena, args, name)?;
            let code = a
                .first()
                .and_then(|v| arena.as_str(*v))
                .ok_or("numpy.dtype: first argument is not a str")?
                .to_string();
            arena.push(Obj::NumpyDtype { code, byteorder: '=' })
        }
        "numpy.core.multiarray.scalar" | "numpy._core.multiarray.scalar" => {
            let a = args_of(arena, args, name)?;
            let (Some(&dt), Some(&raw)) = (a.first(), a.get(1)) else {
                return Err("numpy scalar: needs (dtype, bytes)".into());
            };
            let (code, order) = match arena.obj(dt) {
                Some(Obj::NumpyDtype { code, byteorder }) => (code.clone(), *byteorder),
                _ => return Err("numpy scalar: first argument is not a numpy.dtype".into()),
            };
            let bytes = match arena.obj(raw) {
                Some(Obj::Bytes(Bytes::Span { start, len })) => buf[*start..*start + *len].to_vec(),
                Some(Obj::Bytes(Bytes::Owned(v))) => v.clone(),
                _ => return Err("numpy scalar: second argument is not bytes".into()),
            };
            numpy_scalar(&code, order, &bytes)?
        }
        "_codecs.encode" => codecs_encode(arena, name, args)?,
        "__builtin__.set" | "builtins.set" | "__builtin__.frozenset" | "builtins.frozenset" => {
            let a = args_of(arena, args, name)?;
            let items = match a.first() {
                None => Vec::new(),
                Some(v) => arena.as_seq(*v).ok_or("set: argument is not a list")?.to_vec(),
            };
            arena.push(Obj::Set(items))
        }
        "torch.Size" => {
            let a = args_of(arena, args, name)?;
            let items = match a.first() {
                None => Vec::new(),
                Some(v) => arena
                    .as_seq(*v)
                    .ok_or("torch.Size: argument is not a tuple")?
                    .to_vec(),
            };
            arena.push(Obj::Tuple(items))
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// `torch._utils._rebuild_tensor[_v2](storage, offset, size, stride, …)`.
fn rebuild_tensor(arena: &mut Arena, name: &str, args: Value) -> Result<Value, String> {
    let a = args_of(arena, args, name)?;
    if a.len() < 4 {
        return Err(format!("{name}: needs at least 4 arguments, got {}", a.len()));
    }
    let storage = match a[0] {
        Value::Ref(id) if matches!(arena.get(id), Obj::Storage(_)) => id,
        _ => {
            return Err(format!(
                "{name}: first argument is not a storage ({})",
                arena.describe(a[0])
            ))
        }
    };
    let offset = int_arg(a[1], "tensor storage offset")?;
    let shape = int_tuple(arena, a[2], "tensor size")?;
    let stride = int_tuple(arena, a[3], "tensor stride")?;
    if offset < 0 || shape.iter().any(|&s| s < 0) {
        return Err(format!("{name}: negative offset or size"));
    }
    if shape.len() != stride.len() {
        return Err(format!(
            "{name}: size has {} dims but stride has {}",
            shape.len(),
            stride.len()
        ));
    }
    let requires_grad = matches!(a.get(4), Some(Value::Bool(true)));
    Ok(arena.push(Obj::Tensor(TensorRef {
        storage,
        offset: offset as u64,
        shape: shape.into_iter().map(|s| s as u64).collect(),
        stride,
        requires_grad,
        is_parameter: false,
    })))
}

/// `torch._utils._rebuild_parameter[_with_state](tensor, requires_grad, …)`.
fn rebuild_parameter(arena: &mut Arena, name: &str, args: Value) -> Result<Value, String> {
    let a = args_of(arena, args, name)?;
    let (Some(&t), rg) = (a.first(), a.get(1).copied()) else {
        return Err(format!("{name}: missing tensor argument"));
    };
    let mut tensor = match arena.obj(t) {
        Some(Obj::Tensor(t)) => t.clone(),
        _ => {
            return Err(format!(
                "{name}: argument is not a tensor ({})",
                arena.describe(t)
            ))
        }
    };
    tensor.is_parameter = true;
    tensor.requires_grad = matches!(rg, Some(Value::Bool(true)));
    Ok(arena.push(Obj::Tensor(tensor)))
}

/// `torch_utils.persistence._reconstruct_persistent_obj(meta)`.
fn persistent_obj(arena: &mut Arena, args: Value) -> Result<Value, String> {
    let a = args_of(arena, args, "torch_utils.persistence._reconstruct_persistent_obj")?;
    let meta = *a.first().ok_or("_reconstruct_persistent_obj: missing meta")?;
    if arena.as_dict(meta).is_none() {
        return Err("_reconstruct_persistent_obj: meta is not a dict".into());
    }
    let class_name = arena
        .dict_get(meta, "class_name")
        .and_then(|v| arena.as_str(v))
        .ok_or("persistent object meta has no class_name")?
        .to_string();
    let version = match arena.dict_get(meta, "version") {
        Some(Value::Int(i)) => i,
        _ => -1,
    };
    let module_src = arena.dict_get(meta, "module_src").unwrap_or(Value::None);
    let state = arena.dict_get(meta, "state").unwrap_or(Value::None);
    Ok(arena.push(Obj::Persistent {
        class_name,
        version,
        module_src,
        state,
    }))
}

/// `_codecs.encode(str, encoding)` for latin-1 and UTF-8 (how protocol ≤ 2 pickles bytes).
fn codecs_encode(arena: &mut Arena, name: &str, args: Value) -> Result<Value, String> {
    let a = args_of(arena, args, name)?;
    let s = a
        .first()
        .and_then(|v| arena.as_str(*v))
        .ok_or("_codecs.encode: first argument is not a str")?;
    let enc = a.get(1).and_then(|v| arena.as_str(*v)).unwrap_or("utf-8");
    let bytes = match enc {
        "latin1" | "latin-1" | "iso-8859-1" => s
            .chars()
            .map(|c| u8::try_from(c as u32).map_err(|_| "_codecs.encode: char outside latin-1"))
            .collect::<Result<Vec<u8>, _>>()?,
        "utf-8" | "utf8" => s.as_bytes().to_vec(),
        other => return Err(format!("_codecs.encode: unsupported encoding {other:?}")),
    };
    Ok(arena.push(Obj::Bytes(Bytes::Owned(bytes))))
}

/// A numpy array read from a pickle by [`ndarray`].
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    /// Type code without byte order: `u1`, `i8`, `f4`, `b1`, ….
    pub code: String,
    /// Byte order: `<`, `>`, `|` or `=` (native).
    pub byteorder: char,
    /// Shape.
    pub shape: Vec<usize>,
    /// Whether the bytes are in Fortran (column-major) order.
    pub fortran: bool,
    /// The element bytes: exactly `prod(shape) × itemsize`.
    pub data: Vec<u8>,
}

impl NdArray {
    /// Bytes per element.
    pub fn itemsize(&self) -> usize {
        itemsize(&self.code).unwrap_or(0)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements of an integer (or bool) array as i64, in storage order.
    pub fn to_i64(&self) -> Result<Vec<i64>, String> {
        let n = self.itemsize();
        if !matches!(self.code.as_bytes().first(), Some(b'i' | b'u' | b'b')) || n == 0 {
            return Err(format!(
                "numpy array of dtype {} is not an integer array",
                self.code
            ));
        }
        self.data
            .chunks_exact(n)
            .map(|raw| numpy_scalar(&self.code, self.byteorder, raw))
            .map(|v| match v? {
                Value::Int(i) => Ok(i),
                Value::Bool(b) => Ok(b as i64),
                _ => Err("numpy integer array holds a non-integer".to_string()),
            })
            .collect()
    }
}

/// Bytes per element of a numeric numpy type code.
fn itemsize(code: &str) -> Option<usize> {
    Some(match code {
        "b1" | "i1" | "u1" => 1,
        "i2" | "u2" | "f2" => 2,
        "i4" | "u4" | "f4" => 4,
        "i8" | "u8" | "f8" => 8,
        _ => return None,
    })
}

/// Reads the numpy array `v` as data (nothing is called):
///
/// * `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')` then `BUILD` with
///   `(version, shape, dtype, is_fortran, raw)` (or the 4-item form without `version`), where
///   `raw` is bytes (protocol 3+, or `_codecs.encode` in Python 3's protocol 2) or a latin-1
///   `str` (a Python 2 pickle such as the CIFAR-10 batches, read with `encoding='latin1'`);
/// * protocol 5's `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` with an
///   in-band buffer.
///
/// Only numeric dtypes are accepted (object arrays, whose state is a list of Python objects,
/// are refused), at most 32 dimensions, and `prod(shape) × itemsize` (overflow-checked) must
/// equal the number of bytes present.
pub fn ndarray(arena: &Arena, buf: &[u8], v: Value) -> Result<NdArray, String> {
    let Some(Obj::Call {
        func,
        args,
        kind: CallKind::Reduce,
        state,
        ..
    }) = arena.obj(v)
    else {
        return Err(format!("not a numpy array ({})", arena.describe(v)));
    };
    let fname = arena.global_name(*func).unwrap_or_default();
    let (shape, dtype, fortran, raw) = match fname.as_str() {
        "numpy.core.multiarray._reconstruct" | "numpy._core.multiarray._reconstruct" => {
            let a = args_of(arena, *args, &fname)?;
            let cls = a.first().and_then(|c| arena.global_name(*c));
            if !matches!(cls.as_deref(), Some("numpy.ndarray")) {
                return Err(format!("{fname}: class is not numpy.ndarray"));
            }
            let st = (*state)
                .and_then(|s| arena.as_seq(s))
                .ok_or("numpy array without a state tuple")?;
            let st = match st.len() {
                5 => &st[1..],
                4 => st,
                n => return Err(format!("numpy array state has {n} items (expected 4 or 5)")),
            };
            let fortran = matches!(st[2], Value::Bool(true) | Value::Int(1));
            (st[0], st[1], fortran, st[3])
        }
        "numpy.core.numeric._frombuffer" | "numpy._core.numeric._frombuffer" => {
            let a = args_of(arena, *args, &fname)?;
            let [raw, dtype, shape, order] = a else {
                return Err(format!("{fname}: needs (buffer, dtype, shape, order)"));
            };
            let fortran = arena.as_str(*order) == Some("F");
            (*shape, *dtype, fortran, *raw)
        }
        _ => return Err(format!("not a numpy array ({})", arena.describe(v))),
    };
    let (code, byteorder) = match arena.obj(dtype) {
        Some(Obj::NumpyDtype { code, byteorder }) => {
            let c = code.trim_start_matches(['<', '>', '=', '|']);
            let order = match code.chars().next() {
                Some(o @ ('<' | '>' | '|')) => o,
                _ => *byteorder,
            };
            (c.to_string(), order)
        }
        _ => return Err("numpy array: dtype is not a numpy.dtype".into()),
    };
    let size = itemsize(&code).ok_or_else(|| format!("numpy array of dtype {code:?} is not supported"))?;
    let dims = int_tuple(arena, shape, "numpy array shape")?;
    if dims.len() > 32 {
        return Err(format!("numpy array with {} dimensions", dims.len()));
    }
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| "numpy array with a negative dimension".to_string()))
        .collect::<Result<Vec<usize>, String>>()?;
    let want = shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d))
        .ok_or("numpy array shape overflows")?;
    let data = match arena.obj(raw) {
        Some(Obj::Bytes(Bytes::Span { start, len })) => {
            if *len != want {
                return Err(format!(
                    "numpy array holds {len} bytes, its shape {shape:?} needs {want}"
                ));
            }
            start
                .checked_add(*len)
                .and_then(|end| buf.get(*start..end))
                .ok_or("numpy array bytes outside the stream")?
                .to_vec()
        }
        Some(Obj::Bytes(Bytes::Owned(b))) => {
            if b.len() != want {
                return Err(format!(
                    "numpy array holds {} bytes, its shape {shape:?} needs {want}",
                    b.len()
                ));
            }
            b.clone()
        }
        Some(Obj::Str(s)) => {
            let mut b = Vec::with_capacity(want);
            for ch in s.chars() {
                if b.len() == want {
                    return Err(format!(
                        "numpy array holds more than the {want} bytes its shape {shape:?} needs"
                    ));
                }
                b.push(u8::try_from(ch as u32).map_err(|_| "numpy array data: str outside latin-1")?);
            }
            if b.len() != want {
                return Err(format!(
                    "numpy array holds {} bytes, its shape {shape:?} needs {want}",
                    b.len()
                ));
            }
            b
        }
        _ => return Err("numpy array data is not bytes (object arrays are not supported)".into()),
    };
    Ok(NdArray {
        code,
        byteorder,
        shape,
        fortran,
        data,
    })
}

fn numpy_scalar(code: &str, order: char, raw: &[u8]) -> Result<Value, String> {
    let code = code.trim_start_matches(['<', '>', '=', '|']);
    let big = order == '>';
    let need = |n: usize| -> Result<[u8; 8], String> {
        if raw.len() != n {
            return Err(format!("numpy scalar {code}: {} bytes, expected {n}", raw.len()));
        }
        let mut b = [0u8; 8];
        if big {
            for (i, x) in raw.iter().rev().enumerate() {
                b[i] = *x;
            }
        } else {
            b[..n].copy_from_slice(raw);
        }
        Ok(b)
    };
    Ok(match code {
        "f8" => Value::Float(f64::from_le_bytes(need(8)?)),
        "f4" => Value::Float(f32::from_le_bytes(need(4)?[..4].try_into().unwrap()) as f64),
        "f2" => {
            let b = need(2)?;
            Value::Float(f16_to_f64(u16::from_le_bytes([b[0], b[1]])))
        }
        "i8" => Value::Int(i64::from_le_bytes(need(8)?)),
        "i4" => Value::Int(i32::from_le_bytes(need(4)?[..4].try_into().unwrap()) as i64),
        "i2" => Value::Int(i16::from_le_bytes(need(2)?[..2].try_into().unwrap()) as i64),
        "i1" => Value::Int(need(1)?[0] as i8 as i64),
        "u1" => Value::Int(need(1)?[0] as i64),
        "u2" => Value::Int(u16::from_le_bytes(need(2)?[..2].try_into().unwrap()) as i64),
        "u4" => Value::Int(u32::from_le_bytes(need(4)?[..4].try_into().unwrap()) as i64),
        "u8" => {
            let v = u64::from_le_bytes(need(8)?);
            Value::Int(i64::try_from(v).map_err(|_| "numpy u8 scalar beyond i64")?)
        }
        "b1" => Value::Bool(need(1)?[0] != 0),
        other => return Err(format!("numpy scalar of dtype {other:?} is not supported")),
    })
}

/// IEEE half to f64.
pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 => {
            if frac == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// Applies `BUILD` (set state) to `target`.
pub(crate) fn build(arena: &mut Arena, target: Value, state: Value) -> Result<(), String> {
    let byteorder = arena
        .as_seq(state)
        .and_then(|s| s.get(1).copied())
        .and_then(|v| arena.as_str(v))
        .and_then(|s| s.chars().next());
    let Value::Ref(id) = target else {
        return Err("BUILD on a non-object".into());
    };
    match arena.get_mut(id) {
        Obj::Call { state: s, .. } | Obj::Dict { state: s, .. } => *s = Some(state),
        Obj::NumpyDtype { byteorder: b, .. } => {
            if let Some(c) = byteorder {
                *b = c;
            }
        }
        Obj::Tensor(_) | Obj::Persistent { .. } | Obj::Set(_) => {}
        other => {
            let kind = match other {
                Obj::Str(_) => "str",
                Obj::Bytes(_) => "bytes",
                Obj::Tuple(_) => "tuple",
                Obj::List(_) => "list",
                Obj::Global { .. } => "global",
                _ => "value",
            };
            return Err(format!("BUILD on a {kind}"));
        }
    }
    Ok(())
}
