//! A data-only pickle virtual machine (protocols 0–5).
//!
//! Bytes go in, a [`Value`] tree comes out; nothing is ever imported or called. Mutable
//! containers (lists, dicts, objects) live in an [`Arena`] and are referred to by
//! [`ObjId`], so memo references and in-place mutation (`APPEND`, `SETITEMS`, `BUILD`) behave
//! as in Python without reference counting, and cyclic or exponentially shared structures
//! cannot make the VM recurse. A fixed allow-list of globals is interpreted (see
//! [`globals`]); every other global stays an opaque, printable [`Obj::Global`] and every
//! call of it an opaque [`Obj::Call`].

pub mod globals;
mod vm;

pub use vm::{run as run_vm, Opcode, PersistentLoader, VmOutput};

use crate::dtype::DType;

/// Index of an object in the [`Arena`].
pub type ObjId = u32;

/// A small pickle value; containers and strings are [`Value::Ref`]s into the [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An int that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// Anything else.
    Ref(ObjId),
}

/// A byte string: either a range of the file being read (no copy) or owned bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Bytes {
    /// `len` bytes at absolute offset `start` of the root buffer.
    Span {
        /// Absolute offset in the root buffer.
        start: usize,
        /// Length in bytes.
        len: usize,
    },
    /// Bytes created by the VM (e.g. `_codecs.encode`).
    Owned(Vec<u8>),
}

/// How an opaque object came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `REDUCE`: `callable(*args)`.
    Reduce,
    /// `NEWOBJ` / `NEWOBJ_EX`: `cls.__new__(cls, *args)`.
    NewObj,
    /// `INST` / `OBJ` (protocol 0/1).
    Inst,
}

/// A storage (flat typed buffer) referenced by tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    /// Element type (from the storage class).
    pub dtype: DType,
    /// Number of elements as declared by the persistent id.
    pub numel: u64,
    /// Storage key (zip member name under `data/`, or a legacy key).
    pub key: String,
    /// Device location recorded at save time (`cpu`, `cuda:0`, ...); always loaded to host.
    pub location: String,
    /// Absolute byte range of the data in the root buffer, once known.
    pub data: Option<(usize, usize)>,
}

/// A strided view into a storage, as built by `torch._utils._rebuild_tensor_v2`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The [`Obj::Storage`] it views.
    pub storage: ObjId,
    /// Offset into the storage, in elements.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<i64>,
    /// `requires_grad` flag recorded in the file.
    pub requires_grad: bool,
    /// Whether it was wrapped by `_rebuild_parameter`.
    pub is_parameter: bool,
}

/// An arena object.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    /// A str.
    Str(String),
    /// A bytes / bytearray object.
    Bytes(Bytes),
    /// An int too large for i64 (kept if it fits in i128, otherwise only its size).
    BigInt(Option<i128>, usize),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict or `collections.OrderedDict`, in insertion order.
    Dict {
        /// Key/value pairs in insertion order.
        items: Vec<(Value, Value)>,
        /// Whether it came from `collections.OrderedDict`.
        ordered: bool,
        /// State attached by `BUILD` (e.g. a state_dict's `_metadata`).
        state: Option<Value>,
    },
    /// A set or frozenset.
    Set(Vec<Value>),
    /// A reference to a global (`module.name`), never imported.
    Global {
        /// Module path.
        module: String,
        /// Attribute name.
        name: String,
    },
    /// An opaque call of a non-interpreted global; nothing was executed.
    Call {
        /// The callable (usually a [`Obj::Global`]).
        func: Value,
        /// The argument tuple.
        args: Value,
        /// How it was invoked.
        kind: CallKind,
        /// State attached by `BUILD`.
        state: Option<Value>,
        /// Items appended by `APPEND(S)`.
        list_items: Vec<Value>,
        /// Items set by `SETITEM(S)`.
        dict_items: Vec<(Value, Value)>,
    },
    /// A typed storage.
    Storage(Storage),
    /// A tensor view.
    Tensor(TensorRef),
    /// An EDM `torch_utils.persistence` object (`_reconstruct_persistent_obj(meta)`).
    Persistent {
        /// `meta['class_name']`.
        class_name: String,
        /// `meta['version']`.
        version: i64,
        /// `meta['module_src']` (the Python source text; never executed).
        module_src: Value,
        /// `meta['state']`: the object's `__dict__`.
        state: Value,
    },
    /// `numpy.dtype(code, align, copy)` with the byte order set by `BUILD`.
    NumpyDtype {
        /// Type code such as `f8`.
        code: String,
        /// Byte order char (`<`, `>`, `|`, `=`).
        byteorder: char,
    },
}

/// Storage of all non-immediate pickle objects.
#[derive(Debug, Default, Clone)]
pub struct Arena {
    objs: Vec<Obj>,
}

impl Arena {
    /// Adds an object and returns its reference.
    pub fn push(&mut self, obj: Obj) -> Value {
        let id = self.objs.len() as ObjId;
        self.objs.push(obj);
        Value::Ref(id)
    }

    /// The object with this id.
    pub fn get(&self, id: ObjId) -> &Obj {
        &self.objs[id as usize]
    }

    /// Mutable access to the object with this id.
    pub fn get_mut(&mut self, id: ObjId) -> &mut Obj {
        &mut self.objs[id as usize]
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objs.len()
    }

    /// Whether the arena is empty.
    pub fn is_empty(&self) -> bool {
        self.objs.is_empty()
    }

    /// The object a value refers to, if it is a reference.
    pub fn obj(&self, v: Value) -> Option<&Obj> {
        match v {
            Value::Ref(id) => Some(self.get(id)),
            _ => None,
        }
    }

    /// The string a value refers to.
    pub fn as_str(&self, v: Value) -> Option<&str> {
        match self.obj(v) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn as_seq(&self, v: Value) -> Option<&[Value]> {
        match self.obj(v) {
            Some(Obj::Tuple(x) | Obj::List(x) | Obj::Set(x)) => Some(x),
            _ => None,
        }
    }

    /// The items of a dict (plain or ordered).
    pub fn as_dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match self.obj(v) {
            Some(Obj::Dict { items, .. }) => Some(items),
            _ => None,
        }
    }

    /// Looks up a str key in a dict; the last occurrence wins, as in Python.
    pub fn dict_get(&self, dict: Value, key: &str) -> Option<Value> {
        self.as_dict(dict)?
            .iter()
            .rev()
            .find(|(k, _)| self.as_str(*k) == Some(key))
            .map(|(_, v)| *v)
    }

    /// `module.name` of a global, if `v` is one.
    pub fn global_name(&self, v: Value) -> Option<String> {
        match self.obj(v) {
            Some(Obj::Global { module, name }) => Some(format!("{module}.{name}")),
            _ => None,
        }
    }

    /// A short human description of a value (type and a few details).
    pub fn describe(&self, v: Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => if b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(f),
            Value::Ref(id) => match self.get(id) {
                Obj::Str(s) => {
                    let short: String = s.chars().take(60).collect();
                    if short.len() < s.len() {
                        format!("{short:?}… ({} chars)", s.chars().count())
                    } else {
                        format!("{short:?}")
                    }
                }
                Obj::Bytes(b) => format!("bytes[{}]", bytes_len(b)),
                Obj::BigInt(Some(i), _) => i.to_string(),
                Obj::BigInt(None, n) => format!("int of {n} bytes"),
                Obj::Tuple(x) => format!("tuple[{}]", x.len()),
                Obj::List(x) => format!("list[{}]", x.len()),
                Obj::Dict { items, ordered, .. } => {
                    format!(
                        "{}[{}]",
                        if *ordered { "OrderedDict" } else { "dict" },
                        items.len()
                    )
                }
                Obj::Set(x) => format!("set[{}]", x.len()),
                Obj::Global { module, name } => format!("global {module}.{name}"),
                Obj::Call { func, .. } => format!(
                    "opaque object of {}",
                    self.global_name(*func).unwrap_or_else(|| "?".into())
                ),
                Obj::Storage(s) => format!("{}Storage[{}]", s.dtype, s.numel),
                Obj::Tensor(t) => format!("tensor{:?}", t.shape),
                Obj::Persistent { class_name, .. } => format!("persistent {class_name}"),
                Obj::NumpyDtype { code, byteorder } => format!("numpy.dtype({byteorder}{code})"),
            },
        }
    }
}

/// Length of a byte string.
pub fn bytes_len(b: &Bytes) -> usize {
    match b {
        Bytes::Span { len, .. } => *len,
        Bytes::Owned(v) => v.len(),
    }
}

/// Formats a float the way Python's `repr` does for the common cases (`inf`, `0.5`, `1.0`).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else if f == f.trunc() && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}
