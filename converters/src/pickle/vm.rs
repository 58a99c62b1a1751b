//! The opcode interpreter. Iterative (no recursion), bounded in memory by a budget
//! proportional to the stream length, and it never calls anything: `REDUCE`/`NEWOBJ`/`INST`
//! either interpret an allow-listed global (see [`super::globals`]) or build an opaque
//! [`Obj::Call`].

use std::collections::HashMap;

use super::globals::{self, Trace};
use super::{Arena, Bytes, CallKind, Obj, Value};
use crate::{Error, Result};

/// Resolves persistent ids (`BINPERSID`), e.g. torch storages.
pub trait PersistentLoader {
    /// Turns the persistent id `pid` into a value (usually an [`Obj::Storage`]).
    fn load(&mut self, arena: &mut Arena, pid: Value) -> std::result::Result<Value, String>;
}

/// Declares [`Opcode`] and its conversion from the stream's byte in one list, so the two
/// cannot disagree.
macro_rules! opcodes {
    ($($(#[$doc:meta])* $name:ident = $byte:literal,)*) => {
        /// The pickle opcodes of protocols 0–5 (names after CPython's `pickletools`, in
        /// CamelCase).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Opcode {
            $($(#[$doc])* $name,)*
        }

        impl Opcode {
            /// The byte that encodes this opcode in a stream.
            pub fn byte(self) -> u8 {
                match self {
                    $(Opcode::$name => $byte,)*
                }
            }
        }

        impl TryFrom<u8> for Opcode {
            /// The byte, when it is no pickle opcode.
            type Error = u8;
            fn try_from(byte: u8) -> std::result::Result<Self, u8> {
                match byte {
                    $($byte => Ok(Opcode::$name),)*
                    other => Err(other),
                }
            }
        }
    };
}

opcodes! {
    // framing and the stack
    /// PROTO n: protocol version (≤ 5).
    Proto = 0x80,
    /// FRAME n: length hint of the next frame (protocol 4+).
    Frame = 0x95,
    /// STOP: the top of the stack is the result.
    Stop = b'.',
    /// MARK: remember the stack height.
    Mark = b'(',
    /// POP.
    Pop = b'0',
    /// POP_MARK: drop everything down to the last mark.
    PopMark = b'1',
    /// DUP.
    Dup = b'2',
    // numbers
    /// NONE.
    None = b'N',
    /// NEWTRUE.
    NewTrue = 0x88,
    /// NEWFALSE.
    NewFalse = 0x89,
    /// BININT: i32 little-endian.
    BinInt = b'J',
    /// BININT1: u8.
    BinInt1 = b'K',
    /// BININT2: u16 little-endian.
    BinInt2 = b'M',
    /// LONG1: two's-complement integer of a u8-counted length.
    Long1 = 0x8a,
    /// LONG4: two's-complement integer of an i32-counted length.
    Long4 = 0x8b,
    /// INT: decimal text line (`01`/`00` are booleans).
    Int = b'I',
    /// LONG: decimal text line with an optional `L`.
    Long = b'L',
    /// BINFLOAT: f64 big-endian.
    BinFloat = b'G',
    /// FLOAT: text line.
    Float = b'F',
    // strings and bytes
    /// BINUNICODE: UTF-8, u32 length.
    BinUnicode = b'X',
    /// SHORT_BINUNICODE: UTF-8, u8 length.
    ShortBinUnicode = 0x8c,
    /// BINUNICODE8: UTF-8, u64 length.
    BinUnicode8 = 0x8d,
    /// UNICODE: raw-unicode-escape text line.
    Unicode = b'V',
    /// STRING: quoted Python literal line.
    String = b'S',
    /// BINSTRING: latin-1, i32 length.
    BinString = b'T',
    /// SHORT_BINSTRING: latin-1, u8 length.
    ShortBinString = b'U',
    /// BINBYTES: u32 length.
    BinBytes = b'B',
    /// SHORT_BINBYTES: u8 length.
    ShortBinBytes = b'C',
    /// BINBYTES8: u64 length.
    BinBytes8 = 0x8e,
    /// BYTEARRAY8: u64 length (read as bytes).
    ByteArray8 = 0x96,
    /// NEXT_BUFFER: out-of-band buffer (refused).
    NextBuffer = 0x97,
    /// READONLY_BUFFER (refused).
    ReadonlyBuffer = 0x98,
    // containers
    /// EMPTY_TUPLE.
    EmptyTuple = b')',
    /// TUPLE: the items above the last mark.
    Tuple = b't',
    /// TUPLE1.
    Tuple1 = 0x85,
    /// TUPLE2.
    Tuple2 = 0x86,
    /// TUPLE3.
    Tuple3 = 0x87,
    /// EMPTY_LIST.
    EmptyList = b']',
    /// LIST: the items above the last mark.
    List = b'l',
    /// APPEND.
    Append = b'a',
    /// APPENDS: the items above the last mark.
    Appends = b'e',
    /// EMPTY_DICT.
    EmptyDict = b'}',
    /// DICT: key/value pairs above the last mark.
    Dict = b'd',
    /// SETITEM.
    SetItem = b's',
    /// SETITEMS: key/value pairs above the last mark.
    SetItems = b'u',
    /// EMPTY_SET.
    EmptySet = 0x8f,
    /// ADDITEMS: the items above the last mark.
    AddItems = 0x90,
    /// FROZENSET: the items above the last mark.
    FrozenSet = 0x91,
    // memo
    /// PUT: decimal index line.
    Put = b'p',
    /// BINPUT: u8 index.
    BinPut = b'q',
    /// LONG_BINPUT: u32 index.
    LongBinPut = b'r',
    /// MEMOIZE: next free index.
    Memoize = 0x94,
    /// GET: decimal index line.
    Get = b'g',
    /// BINGET: u8 index.
    BinGet = b'h',
    /// LONG_BINGET: u32 index.
    LongBinGet = b'j',
    // globals, calls, objects
    /// GLOBAL: module and name lines.
    Global = b'c',
    /// STACK_GLOBAL: module and name from the stack.
    StackGlobal = 0x93,
    /// EXT1: copyreg extension code, u8.
    Ext1 = 0x82,
    /// EXT2: copyreg extension code, u16.
    Ext2 = 0x83,
    /// EXT4: copyreg extension code, u32.
    Ext4 = 0x84,
    /// REDUCE: callable(args).
    Reduce = b'R',
    /// NEWOBJ: cls.__new__(cls, *args).
    NewObj = 0x81,
    /// NEWOBJ_EX: with kwargs (ignored).
    NewObjEx = 0x92,
    /// INST: class from module/name lines, args above the mark.
    Inst = b'i',
    /// OBJ: class and args above the mark.
    Obj = b'o',
    /// BUILD: set state.
    Build = b'b',
    /// BINPERSID: persistent id from the stack.
    BinPersId = b'Q',
    /// PERSID: persistent id text line.
    PersId = b'P',
}

/// Result of running one pickle stream.
#[derive(Debug, Clone, Copy)]
pub struct VmOutput {
    /// The unpickled object.
    pub value: Value,
    /// Absolute offset just after the `STOP` opcode.
    pub end: usize,
    /// Protocol announced by `PROTO` (0 if none).
    pub protocol: u8,
}

/// Bytes of "memory cost" allowed per byte of pickle stream, plus a fixed allowance.
const BUDGET_PER_BYTE: usize = 24;
const BUDGET_FIXED: usize = 16 << 20;
/// Cost of one arena object: the object itself and the stack slot of its reference (charging
/// less let 8 MiB of EMPTY_TUPLE opcodes allocate 512 MiB).
const OBJ_COST: usize = std::mem::size_of::<Obj>() + std::mem::size_of::<Value>();

/// Runs the pickle stream in `buf[start..end]` until `STOP`.
///
/// `stream` names the stream in errors. Spans of `bytes` objects are absolute offsets of
/// `buf`. The VM's allocations are bounded by `24 × (end − start) + 16 MiB` (as accounted;
/// vectors grow by doubling, so the heap can reach up to twice that).
pub fn run<'b>(
    buf: &[u8],
    start: usize,
    end: usize,
    stream: &str,
    arena: &'b mut Arena,
    loader: Option<&'b mut dyn PersistentLoader>,
    trace: &'b mut Trace,
) -> Result<VmOutput> {
    if start > end || end > buf.len() {
        return Err(Error::format(format!(
            "{stream}: pickle range {start}..{end} outside the {} available bytes",
            buf.len()
        )));
    }
    let mut vm = Vm {
        buf,
        pos: start,
        start,
        end,
        stream,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena,
        loader,
        trace,
        budget: BUDGET_PER_BYTE
            .saturating_mul(end - start)
            .saturating_add(BUDGET_FIXED),
        protocol: 0,
        op_start: start,
    };
    vm.run()
}

struct Vm<'a, 'b> {
    buf: &'a [u8],
    pos: usize,
    start: usize,
    end: usize,
    stream: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    arena: &'b mut Arena,
    loader: Option<&'b mut dyn PersistentLoader>,
    trace: &'b mut Trace,
    budget: usize,
    protocol: u8,
    op_start: usize,
}

impl Vm<'_, '_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Pickle {
            stream: self.stream.to_string(),
            offset: self.op_start - self.start,
            msg: msg.into(),
        }
    }

    fn spend(&mut self, cost: usize) -> Result<()> {
        match self.budget.checked_sub(cost) {
            Some(b) => {
                self.budget = b;
                Ok(())
            }
            None => Err(self.err(
                "object graph grows far beyond the stream size (memory budget exhausted; hostile file?)",
            )),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'_ [u8]> {
        if n > self.end - self.pos {
            return Err(self.err(format!(
                "truncated: needs {n} bytes, {} left",
                self.end - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn span(&mut self, n: usize) -> Result<Bytes> {
        let start = self.pos;
        self.take(n)?;
        Ok(Bytes::Span { start, len: n })
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} does not fit in memory")))
    }

    /// Reads up to and excluding `\n`, returning the line (without newline).
    fn line(&mut self) -> Result<&'_ [u8]> {
        let rest = &self.buf[self.pos..self.end];
        let Some(i) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err("truncated: missing newline"));
        };
        let s = &self.buf[self.pos..self.pos + i];
        self.pos += i + 1;
        Ok(s)
    }

    fn line_str(&mut self) -> Result<String> {
        let l = self.line()?.to_vec();
        String::from_utf8(l).map_err(|_| self.err("text argument is not valid UTF-8"))
    }

    fn push(&mut self, v: Value) -> Result<()> {
        self.spend(16)?;
        self.stack.push(v);
        Ok(())
    }

    fn push_obj(&mut self, o: Obj) -> Result<()> {
        self.spend(OBJ_COST)?;
        let v = self.arena.push(o);
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(*self.stack.last().unwrap())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err("no MARK on the stack"));
        };
        Ok(self.stack.split_off(m))
    }

    fn string_obj(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let s = std::str::from_utf8(bytes)
            .map_err(|e| self.err(format!("{what}: invalid UTF-8 ({e})")))?
            .to_string();
        self.spend(s.len())?;
        self.push_obj(Obj::Str(s))
    }

    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let v = self.top()?;
        self.spend(48)?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<()> {
        match self.memo.get(&idx) {
            Some(v) => {
                let v = *v;
                self.push(v)
            }
            None => Err(self.err(format!("memo index {idx} was never stored"))),
        }
    }

    fn int_from_le(&mut self, bytes: &[u8]) -> Result<()> {
        let n = bytes.len();
        if n == 0 {
            return self.push(Value::Int(0));
        }
        let neg = bytes[n - 1] & 0x80 != 0;
        if n <= 16 {
            let mut raw = [if neg { 0xff } else { 0 }; 16];
            raw[..n].copy_from_slice(bytes);
            let v = i128::from_le_bytes(raw);
            if let Ok(i) = i64::try_from(v) {
                self.push(Value::Int(i))
            } else {
                self.push_obj(Obj::BigInt(Some(v), n))
            }
        } else {
            self.push_obj(Obj::BigInt(None, n))
        }
    }

    fn text_int(&mut self, s: &[u8], long: bool) -> Result<()> {
        let mut t = std::str::from_utf8(s)
            .map_err(|_| self.err("INT/LONG argument is not ASCII"))?
            .trim();
        if long {
            t = t.strip_suffix('L').unwrap_or(t);
        }
        if !long && t == "00" {
            return self.push(Value::Bool(false));
        }
        if !long && t == "01" {
            return self.push(Value::Bool(true));
        }
        if let Ok(i) = t.parse::<i64>() {
            return self.push(Value::Int(i));
        }
        if let Ok(i) = t.parse::<i128>() {
            return self.push_obj(Obj::BigInt(Some(i), 16));
        }
        let digits = t.trim_start_matches(['-', '+']);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return self.push_obj(Obj::BigInt(None, digits.len() * 10 / 24 + 1));
        }
        Err(self.err(format!("invalid integer literal {t:?}")))
    }

    fn append_to(&mut self, target: Value, items: Vec<Value>) -> Result<()> {
        self.spend(16 * items.len())?;
        let Value::Ref(id) = target else {
            return Err(self.err("APPEND(S) target is not a list"));
        };
        match self.arena.get_mut(id) {
            Obj::List(l) => l.extend(items),
            Obj::Set(l) => l.extend(items),
            Obj::Call { list_items, .. } => list_items.extend(items),
            _ => return Err(self.err("APPEND(S)/ADDITEMS target is not a list or set")),
        }
        Ok(())
    }

    fn setitems(&mut self, target: Value, kv: Vec<Value>) -> Result<()> {
        if kv.len() % 2 != 0 {
            return Err(self.err("SETITEMS with an odd number of items"));
        }
        self.spend(16 * kv.len())?;
        let Value::Ref(id) = target else {
            return Err(self.err("SETITEM(S) target is not a dict"));
        };
        let pairs = kv.chunks_exact(2).map(|c| (c[0], c[1]));
        match self.arena.get_mut(id) {
            Obj::Dict { items, .. } => items.extend(pairs),
            Obj::Call { dict_items, .. } => dict_items.extend(pairs),
            _ => return Err(self.err("SETITEM(S) target is not a dict")),
        }
        Ok(())
    }

    fn global(&mut self, module: String, name: String) -> Result<()> {
        self.trace.note_global(&module, &name);
        self.spend(module.len() + name.len())?;
        self.push_obj(Obj::Global { module, name })
    }

    fn call(&mut self, func: Value, args: Value, kind: CallKind) -> Result<()> {
        let r = globals::call(self.arena, self.buf, self.trace, func, args, kind).map_err(|m| self.err(m))?;
        self.spend(OBJ_COST)?;
        self.stack.push(r);
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let state = self.pop()?;
        let target = self.top()?;
        globals::build(self.arena, target, state).map_err(|m| self.err(m))
    }

    fn run(&mut self) -> Result<VmOutput> {
        loop {
            self.op_start = self.pos;
            if self.pos >= self.end {
                return Err(self.err("truncated: stream ended before STOP"));
            }
            let byte = self.u8()?;
            self.trace.opcodes += 1;
            let op = Opcode::try_from(byte).map_err(|b| self.err(format!("unknown opcode 0x{b:02x}")))?;
            use Opcode as O;
            match op {
                O::Stop => {
                    let value = self.pop()?;
                    return Ok(VmOutput {
                        value,
                        end: self.pos,
                        protocol: self.protocol,
                    });
                }
                O::Proto | O::Frame | O::Mark | O::Pop | O::PopMark | O::Dup => self.framing(op)?,
                O::Put | O::BinPut | O::LongBinPut | O::Memoize | O::Get | O::BinGet | O::LongBinGet => {
                    self.memo_op(op)?
                }
                O::None
                | O::NewTrue
                | O::NewFalse
                | O::BinInt
                | O::BinInt1
                | O::BinInt2
                | O::Long1
                | O::Long4
                | O::Int
                | O::Long
                | O::BinFloat
                | O::Float => self.number(op)?,
                O::BinUnicode
                | O::ShortBinUnicode
                | O::BinUnicode8
                | O::Unicode
                | O::String
                | O::BinString
                | O::ShortBinString
                | O::BinBytes
                | O::ShortBinBytes
                | O::BinBytes8
                | O::ByteArray8
                | O::NextBuffer
                | O::ReadonlyBuffer => self.text_or_bytes(op)?,
                O::EmptyTuple
                | O::Tuple
                | O::Tuple1
                | O::Tuple2
                | O::Tuple3
                | O::EmptyList
                | O::List
                | O::Append
                | O::Appends
                | O::EmptyDict
                | O::Dict
                | O::SetItem
                | O::SetItems
                | O::EmptySet
                | O::AddItems
                | O::FrozenSet => self.container(op)?,
                O::Global
                | O::StackGlobal
                | O::Ext1
                | O::Ext2
                | O::Ext4
                | O::Reduce
                | O::NewObj
                | O::NewObjEx
                | O::Inst
                | O::Obj
                | O::Build
                | O::BinPersId
                | O::PersId => self.object(op)?,
            }
        }
    }

    /// Protocol header, framing, marks and plain stack manipulation.
    fn framing(&mut self, op: Opcode) -> Result<()> {
        match op {
            Opcode::Proto => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(self.err(format!("unsupported pickle protocol {p}")));
                }
                self.protocol = p;
                if self.trace.protocol.is_none() {
                    self.trace.protocol = Some(p);
                }
            }
            Opcode::Frame => {
                // Only a length hint; check it fits.
                let n = self.u64()?;
                if n > (self.end - self.pos) as u64 {
                    return Err(self.err(format!("FRAME of {n} bytes exceeds the stream")));
                }
            }
            Opcode::Mark => {
                self.spend(8)?;
                self.marks.push(self.stack.len());
            }
            Opcode::Pop => {
                self.pop()?;
            }
            Opcode::PopMark => {
                self.pop_mark()?;
            }
            Opcode::Dup => {
                let v = self.top()?;
                self.push(v)?;
            }
            _ => unreachable!("{op:?} is not a framing opcode"),
        }
        Ok(())
    }

    /// The memo: PUT / GET in their text, 1-byte, 4-byte and implicit (MEMOIZE) forms.
    fn memo_op(&mut self, op: Opcode) -> Result<()> {
        match op {
            Opcode::Put | Opcode::Get => {
                let l = self.line_str()?;
                let what = if op == Opcode::Put { "PUT" } else { "GET" };
                let i = l
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| self.err(format!("invalid {what} index {l:?}")))?;
                if op == Opcode::Put {
                    self.memo_put(i)
                } else {
                    self.memo_get(i)
                }
            }
            Opcode::BinPut => {
                let i = self.u8()? as u64;
                self.memo_put(i)
            }
            Opcode::LongBinPut => {
                let i = self.u32()? as u64;
                self.memo_put(i)
            }
            Opcode::Memoize => {
                let i = self.memo.len() as u64;
                self.memo_put(i)
            }
            Opcode::BinGet => {
                let i = self.u8()? as u64;
                self.memo_get(i)
            }
            Opcode::LongBinGet => {
                let i = self.u32()? as u64;
                self.memo_get(i)
            }
            _ => unreachable!("{op:?} is not a memo opcode"),
        }
    }

    /// None, booleans, integers and floats.
    fn number(&mut self, op: Opcode) -> Result<()> {
        match op {
            Opcode::None => self.push(Value::None),
            Opcode::NewTrue => self.push(Value::Bool(true)),
            Opcode::NewFalse => self.push(Value::Bool(false)),
            Opcode::BinInt => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                self.push(Value::Int(v as i64))
            }
            Opcode::BinInt1 => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64))
            }
            Opcode::BinInt2 => {
                let v = self.u16()?;
                self.push(Value::Int(v as i64))
            }
            Opcode::Long1 => {
                let n = self.u8()? as usize;
                let b = self.take(n)?.to_vec();
                self.int_from_le(&b)
            }
            Opcode::Long4 => {
                let n = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                if n < 0 {
                    return Err(self.err("LONG4 with negative length"));
                }
                let b = self.take(n as usize)?.to_vec();
                self.int_from_le(&b)
            }
            Opcode::Int | Opcode::Long => {
                let l = self.line()?.to_vec();
                self.text_int(&l, op == Opcode::Long)
            }
            Opcode::BinFloat => {
                let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                self.push(Value::Float(v))
            }
            Opcode::Float => {
                let l = self.line_str()?;
                let t = l.trim();
                let v = match t {
                    "inf" => f64::INFINITY,
                    "-inf" => f64::NEG_INFINITY,
                    "nan" => f64::NAN,
                    _ => t
                        .parse::<f64>()
                        .map_err(|_| self.err(format!("invalid float literal {t:?}")))?,
                };
                self.push(Value::Float(v))
            }
            _ => unreachable!("{op:?} is not a number opcode"),
        }
    }

    /// Strings (UTF-8, raw-unicode-escape, Python literals, latin-1) and bytes (kept as spans
    /// of the input). Out-of-band buffers are refused.
    fn text_or_bytes(&mut self, op: Opcode) -> Result<()> {
        match op {
            Opcode::BinUnicode => {
                let n = self.u32()? as usize;
                let b = self.take(n)?.to_vec();
                self.string_obj(&b, "BINUNICODE")
            }
            Opcode::ShortBinUnicode => {
                let n = self.u8()? as usize;
                let b = self.take(n)?.to_vec();
                self.string_obj(&b, "SHORT_BINUNICODE")
            }
            Opcode::BinUnicode8 => {
                let n = self.len_u64()?;
                let b = self.take(n)?.to_vec();
                self.string_obj(&b, "BINUNICODE8")
            }
            Opcode::Unicode | Opcode::String => {
                let l = self.line()?.to_vec();
                let s = if op == Opcode::Unicode {
                    decode_raw_unicode_escape(&l)
                } else {
                    decode_string_literal(&l)
                }
                .map_err(|m| self.err(m))?;
                self.spend(s.len())?;
                self.push_obj(Obj::Str(s))
            }
            Opcode::BinString => {
                let n = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                if n < 0 {
                    return Err(self.err("BINSTRING with negative length"));
                }
                let b = self.take(n as usize)?;
                let s: String = b.iter().map(|&c| c as char).collect();
                self.spend(s.len())?;
                self.push_obj(Obj::Str(s))
            }
            Opcode::ShortBinString => {
                let n = self.u8()? as usize;
                let b = self.take(n)?;
                let s: String = b.iter().map(|&c| c as char).collect();
                self.push_obj(Obj::Str(s))
            }
            Opcode::BinBytes | Opcode::ShortBinBytes | Opcode::BinBytes8 | Opcode::ByteArray8 => {
                let n = match op {
                    Opcode::BinBytes => self.u32()? as usize,
                    Opcode::ShortBinBytes => self.u8()? as usize,
                    _ => self.len_u64()?,
                };
                let b = self.span(n)?;
                self.push_obj(Obj::Bytes(b))
            }
            Opcode::NextBuffer | Opcode::ReadonlyBuffer => {
                Err(self.err("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported"))
            }
            _ => unreachable!("{op:?} is not a string or bytes opcode"),
        }
    }

    /// Tuples, lists, dicts and sets: building them and adding items.
    fn container(&mut self, op: Opcode) -> Result<()> {
        match op {
            Opcode::EmptyTuple => self.push_obj(Obj::Tuple(Vec::new())),
            Opcode::Tuple => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Tuple(items))
            }
            Opcode::Tuple1 | Opcode::Tuple2 | Opcode::Tuple3 => {
                let n = match op {
                    Opcode::Tuple1 => 1,
                    Opcode::Tuple2 => 2,
                    _ => 3,
                };
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() < floor + n {
                    return Err(self.err("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_obj(Obj::Tuple(items))
            }
            Opcode::EmptyList => self.push_obj(Obj::List(Vec::new())),
            Opcode::List => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::List(items))
            }
            Opcode::Append => {
                let v = self.pop()?;
                let t = self.top()?;
                self.append_to(t, vec![v])
            }
            Opcode::Appends | Opcode::AddItems => {
                let items = self.pop_mark()?;
                let t = self.top()?;
                self.append_to(t, items)
            }
            Opcode::EmptyDict => self.push_obj(Obj::Dict {
                items: Vec::new(),
                ordered: false,
                state: None,
            }),
            Opcode::Dict => {
                let kv = self.pop_mark()?;
                if kv.len() % 2 != 0 {
                    return Err(self.err("DICT with an odd number of items"));
                }
                let items = kv.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                self.push_obj(Obj::Dict {
                    items,
                    ordered: false,
                    state: None,
                })
            }
            Opcode::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                let t = self.top()?;
                self.setitems(t, vec![k, v])
            }
            Opcode::SetItems => {
                let kv = self.pop_mark()?;
                let t = self.top()?;
                self.setitems(t, kv)
            }
            Opcode::EmptySet => self.push_obj(Obj::Set(Vec::new())),
            Opcode::FrozenSet => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Set(items))
            }
            _ => unreachable!("{op:?} is not a container opcode"),
        }
    }

    /// Globals, calls (never executed: interpreted when allow-listed, else opaque), BUILD and
    /// persistent ids.
    fn object(&mut self, op: Opcode) -> Result<()> {
        match op {
            Opcode::Global => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                self.global(module, name)
            }
            Opcode::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.arena.as_str(module), self.arena.as_str(name)) else {
                    return Err(self.err("STACK_GLOBAL needs two str arguments"));
                };
                let (m, n) = (m.to_string(), n.to_string());
                self.global(m, n)
            }
            Opcode::Ext1 | Opcode::Ext2 | Opcode::Ext4 => {
                let code = match op {
                    Opcode::Ext1 => self.u8()? as u32,
                    Opcode::Ext2 => self.u16()? as u32,
                    _ => self.u32()?,
                };
                self.global("<copyreg extension>".into(), code.to_string())
            }
            Opcode::Reduce => {
                let args = self.pop()?;
                let func = self.pop()?;
                self.call(func, args, CallKind::Reduce)
            }
            Opcode::NewObj => {
                let args = self.pop()?;
                let cls = self.pop()?;
                self.call(cls, args, CallKind::NewObj)
            }
            Opcode::NewObjEx => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                self.call(cls, args, CallKind::NewObj)
            }
            Opcode::Inst => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let items = self.pop_mark()?;
                self.global(module, name)?;
                let cls = self.stack.pop().unwrap();
                self.spend(OBJ_COST)?;
                let args = self.arena.push(Obj::Tuple(items));
                self.call(cls, args, CallKind::Inst)
            }
            Opcode::Obj => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.err("OBJ without a class"));
                }
                let cls = items.remove(0);
                self.spend(OBJ_COST)?;
                let args = self.arena.push(Obj::Tuple(items));
                self.call(cls, args, CallKind::Inst)
            }
            Opcode::Build => self.build(),
            Opcode::BinPersId => {
                let pid = self.pop()?;
                self.persistent(pid)
            }
            Opcode::PersId => {
                let l = self.line()?.to_vec();
                let s: String = l.iter().map(|&c| c as char).collect();
                self.spend(OBJ_COST + s.len())?;
                let pid = self.arena.push(Obj::Str(s));
                self.persistent(pid)
            }
            _ => unreachable!("{op:?} is not an object opcode"),
        }
    }

    fn persistent(&mut self, pid: Value) -> Result<()> {
        let Some(loader) = self.loader.as_deref_mut() else {
            return Err(self.err("persistent id found but this stream has no storages"));
        };
        let v = loader.load(self.arena, pid).map_err(|m| Error::Pickle {
            stream: self.stream.to_string(),
            offset: self.op_start - self.start,
            msg: m,
        })?;
        self.push(v)
    }
}

/// Decodes a protocol-0 `STRING` argument: a quoted Python literal with escapes.
fn decode_string_literal(l: &[u8]) -> std::result::Result<String, String> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    if l.len() < 2 || l[0] != l[l.len() - 1] || !(l[0] == b'\'' || l[0] == b'"') {
        return Err("STRING argument is not a quoted literal".into());
    }
    let body = &l[1..l.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != b'\\' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let Some(&e) = body.get(i + 1) else {
            return Err("STRING literal ends with a backslash".into());
        };
        i += 2;
        match e {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'\\' => out.push('\\'),
            b'\'' => out.push('\''),
            b'"' => out.push('"'),
            b'x' => {
                let h = body
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("bad \\x escape in STRING literal")?;
                out.push(h as char);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < body.len() && (b'0'..=b'7').contains(&body[i]) {
                    v = v * 8 + (body[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(char::from_u32(v & 0xff).unwrap_or('?'));
            }
            other => {
                out.push('\\');
                out.push(other as char);
            }
        }
    }
    Ok(out)
}

/// Decodes a protocol-0 `UNICODE` argument (raw-unicode-escape).
fn decode_raw_unicode_escape(l: &[u8]) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        if l[i] == b'\\' && i + 1 < l.len() && (l[i + 1] == b'u' || l[i + 1] == b'U') {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let hex = l
                .get(i + 2..i + 2 + n)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .ok_or("bad \\u escape in UNICODE")?;
            out.push(char::from_u32(hex).ok_or("invalid code point in UNICODE")?);
            i += 2 + n;
        } else {
            out.push(l[i] as char);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Opcode;

    #[test]
    fn opcodes_round_trip_through_their_byte() {
        let mut known = 0;
        for byte in 0..=255u8 {
            match Opcode::try_from(byte) {
                Ok(op) => {
                    assert_eq!(op.byte(), byte, "{op:?}");
                    known += 1;
                }
                Err(b) => assert_eq!(b, byte),
            }
        }
        // Protocols 0–5 define 68 opcodes.
        assert_eq!(known, 68);
        assert_eq!(Opcode::try_from(0x8c), Ok(Opcode::ShortBinUnicode));
        assert_eq!(Opcode::try_from(0x93), Ok(Opcode::StackGlobal));
    }
}
