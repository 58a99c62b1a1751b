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
            let op = self.u8()?;
            self.trace.opcodes += 1;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(self.err(format!("unsupported pickle protocol {p}")));
                    }
                    self.protocol = p;
                    if self.trace.protocol.is_none() {
                        self.trace.protocol = Some(p);
                    }
                }
                0x95 => {
                    // FRAME: only a length hint; check it fits.
                    let n = self.u64()?;
                    if n > (self.end - self.pos) as u64 {
                        return Err(self.err(format!("FRAME of {n} bytes exceeds the stream")));
                    }
                }
                b'.' => {
                    let value = self.pop()?;
                    return Ok(VmOutput {
                        value,
                        end: self.pos,
                        protocol: self.protocol,
                    });
                }
                b'(' => {
                    self.spend(8)?;
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?;
                    self.push(v)?;
                }
                // ---- numbers
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.int_from_le(&b)?
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    if n < 0 {
                        return Err(self.err("LONG4 with negative length"));
                    }
                    let b = self.take(n as usize)?.to_vec();
                    self.int_from_le(&b)?
                }
                b'I' => {
                    let l = self.line()?.to_vec();
                    self.text_int(&l, false)?
                }
                b'L' => {
                    let l = self.line()?.to_vec();
                    self.text_int(&l, true)?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?
                }
                b'F' => {
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
                    self.push(Value::Float(v))?
                }
                // ---- strings and bytes
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.string_obj(&b, "BINUNICODE")?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.string_obj(&b, "SHORT_BINUNICODE")?
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?.to_vec();
                    self.string_obj(&b, "BINUNICODE8")?
                }
                b'V' => {
                    let l = self.line()?.to_vec();
                    let s = decode_raw_unicode_escape(&l).map_err(|m| self.err(m))?;
                    self.spend(s.len())?;
                    self.push_obj(Obj::Str(s))?
                }
                b'S' => {
                    let l = self.line()?.to_vec();
                    let s = decode_string_literal(&l).map_err(|m| self.err(m))?;
                    self.spend(s.len())?;
                    self.push_obj(Obj::Str(s))?
                }
                b'T' => {
                    let n = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    if n < 0 {
                        return Err(self.err("BINSTRING with negative length"));
                    }
                    let b = self.take(n as usize)?;
                    let s: String = b.iter().map(|&c| c as char).collect();
                    self.spend(s.len())?;
                    self.push_obj(Obj::Str(s))?
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let s: String = b.iter().map(|&c| c as char).collect();
                    self.push_obj(Obj::Str(s))?
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.span(n)?;
                    self.push_obj(Obj::Bytes(b))?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.span(n)?;
                    self.push_obj(Obj::Bytes(b))?
                }
                0x8e | 0x96 => {
                    let n = self.len_u64()?;
                    let b = self.span(n)?;
                    self.push_obj(Obj::Bytes(b))?
                }
                0x97 | 0x98 => {
                    return Err(
                        self.err("out-of-band buffers (NEXT_BUFFER/READONLY_BUFFER) are not supported")
                    )
                }
                // ---- containers
                b')' => self.push_obj(Obj::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_obj(Obj::Tuple(items))?
                }
                b']' => self.push_obj(Obj::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::List(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    let t = self.top()?;
                    self.append_to(t, vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let t = self.top()?;
                    self.append_to(t, items)?
                }
                b'}' => self.push_obj(Obj::Dict {
                    items: Vec::new(),
                    ordered: false,
                    state: None,
                })?,
                b'd' => {
                    let kv = self.pop_mark()?;
                    if kv.len() % 2 != 0 {
                        return Err(self.err("DICT with an odd number of items"));
                    }
                    let items = kv.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                    self.push_obj(Obj::Dict {
                        items,
                        ordered: false,
                        state: None,
                    })?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let t = self.top()?;
                    self.setitems(t, vec![k, v])?
                }
                b'u' => {
                    let kv = self.pop_mark()?;
                    let t = self.top()?;
                    self.setitems(t, kv)?
                }
                0x8f => self.push_obj(Obj::Set(Vec::new()))?,
                0x90 => {
                    let items = self.pop_mark()?;
                    let t = self.top()?;
                    self.append_to(t, items)?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push_obj(Obj::Set(items))?
                }
                // ---- memo
                b'p' => {
                    let l = self.line_str()?;
                    let i = l
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| self.err(format!("invalid PUT index {l:?}")))?;
                    self.memo_put(i)?
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                b'g' => {
                    let l = self.line_str()?;
                    let i = l
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| self.err(format!("invalid GET index {l:?}")))?;
                    self.memo_get(i)?
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    self.memo_get(i)?
                }
                // ---- globals, calls, objects
                b'c' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    self.global(module, name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (self.arena.as_str(module), self.arena.as_str(name)) else {
                        return Err(self.err("STACK_GLOBAL needs two str arguments"));
                    };
                    let (m, n) = (m.to_string(), n.to_string());
                    self.global(m, n)?
                }
                0x82..=0x84 => {
                    let code = match op {
                        0x82 => self.u8()? as u32,
                        0x83 => self.u16()? as u32,
                        _ => self.u32()?,
                    };
                    self.global("<copyreg extension>".into(), code.to_string())?
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.call(func, args, CallKind::Reduce)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.call(cls, args, CallKind::NewObj)?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.call(cls, args, CallKind::NewObj)?
                }
                b'i' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    let items = self.pop_mark()?;
                    self.global(module, name)?;
                    let cls = self.stack.pop().unwrap();
                    self.spend(OBJ_COST)?;
                    let args = self.arena.push(Obj::Tuple(items));
                    self.call(cls, args, CallKind::Inst)?
                }
                b'o' => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(self.err("OBJ without a class"));
                    }
                    let cls = items.remove(0);
                    self.spend(OBJ_COST)?;
                    let args = self.arena.push(Obj::Tuple(items));
                    self.call(cls, args, CallKind::Inst)?
                }
                b'b' => self.build()?,
                b'Q' => {
                    let pid = self.pop()?;
                    self.persistent(pid)?
                }
                b'P' => {
                    let l = self.line()?.to_vec();
                    let s: String = l.iter().map(|&c| c as char).collect();
                    self.spend(OBJ_COST + s.len())?;
                    let pid = self.arena.push(Obj::Str(s));
                    self.persistent(pid)?
                }
                other => {
                    return Err(self.err(format!("unknown opcode 0x{other:02x}")));
                }
            }
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
