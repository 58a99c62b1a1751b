#!/usr/bin/env python3
"""Writes the hostile-input corpus of `tests/hostile.rs` into tests/fixtures/hostile/.

Plain python3 standard library only: nothing here imports torch or numpy, and nothing
here unpickles anything. Pickles are assembled opcode by opcode, so that streams Python's
pickler would never produce (calls of os.system, negative strides, never-stored memo
indices, 100k-deep nesting, ...) can be written. Zip archives that must be malformed
(duplicated or overlapping members, a deflated member claiming gigabytes, a member
reaching past the end of the file) are written by a small hand-rolled zip writer; the
well-formed torch.save-like archives use `zipfile` (ZIP_STORED) like torch does.

Outputs:
  tests/fixtures/hostile/<name>      one crafted file per case
  tests/fixtures/hostile/expected.json
      {name: {"description": ..., "error": <substring the error must contain> | null,
              "stage": "open" | "extract" | "any"}}
      error null: the file is hostile but well formed (amplification, cycles); reading it
      may succeed but must stay bounded in time and memory.
  tests/fixtures/hostile/seeds/      small valid files (a torch zip, a legacy file, an
      EDM-like snapshot) the corpus is derived from; the Rust test checks they load and
      uses them as mutation seeds.

The output is deterministic: rerunning the script rewrites identical bytes.
Usage: python3 scripts/make_hostile_corpus.py [--out DIR]
"""

import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "hostile")

# --------------------------------------------------------------------------------------
# pickle opcodes, assembled by hand
# --------------------------------------------------------------------------------------
MARK, STOP, POP = b"(", b".", b"0"
NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"
EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2 = b")", b"t", b"\x85", b"\x86"
EMPTY_LIST, APPEND, APPENDS = b"]", b"a", b"e"
EMPTY_DICT, SETITEM, SETITEMS = b"}", b"s", b"u"
REDUCE, BUILD, BINPERSID, STACK_GLOBAL, MEMOIZE = b"R", b"b", b"Q", b"\x93", b"\x94"


def proto(n):
    return b"\x80" + bytes([n])


def frame(n):
    return b"\x95" + struct.pack("<Q", n)


def pint(i):
    """Smallest pickle encoding of an int (any size, any sign)."""
    if 0 <= i < 256:
        return b"K" + bytes([i])
    if 0 <= i < 65536:
        return b"M" + struct.pack("<H", i)
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    raw = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def ustr(s):
    """BINUNICODE (or SHORT_BINUNICODE) of a str or of raw bytes (raw bytes are written as
    given, valid UTF-8 or not)."""
    b = s.encode() if isinstance(s, str) else s
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def binunicode(s):
    b = s.encode() if isinstance(s, str) else s
    return b"X" + struct.pack("<I", len(b)) + b


def binbytes(b):
    return b"B" + struct.pack("<I", len(b)) + b


def glob(module, name):
    """Protocol-0/2 GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglob(module, name):
    """Protocol-4 STACK_GLOBAL (as EDM snapshots use)."""
    return ustr(module) + ustr(name) + STACK_GLOBAL


def binput(i):
    return b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i)


def binget(i):
    return b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i)


def tup(items):
    """A tuple of ints (or of raw opcode strings)."""
    return MARK + b"".join(val(x) for x in items) + TUPLE


def dict_of(pairs):
    """EMPTY_DICT MARK k v ... SETITEMS; values are raw opcode bytes or python scalars."""
    out = EMPTY_DICT + MARK
    for k, v in pairs:
        out += (ustr(k) if isinstance(k, str) else pint(k)) + val(v)
    return out + SETITEMS


def val(v):
    if isinstance(v, bytes):
        return v
    if v is None:
        return NONE
    if v is True:
        return NEWTRUE
    if v is False:
        return NEWFALSE
    if isinstance(v, int):
        return pint(v)
    if isinstance(v, float):
        return b"G" + struct.pack(">d", v)
    if isinstance(v, str):
        return ustr(v)
    raise TypeError(v)


def ordered_dict_empty():
    return glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE


# --------------------------------------------------------------------------------------
# torch.save zip format
# --------------------------------------------------------------------------------------
def zip_pid(key, numel, cls="FloatStorage", tag="storage"):
    """Persistent id ('storage', torch.<cls>, key, 'cpu', numel) followed by BINPERSID."""
    return (MARK + binunicode(tag) + glob("torch", cls) + binunicode(key) + binunicode("cpu")
            + val(numel) + TUPLE + BINPERSID)


def rebuild_tensor(pid, offset, size, stride):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())."""
    return (glob("torch._utils", "_rebuild_tensor_v2") + MARK + pid + val(offset) + tup(size)
            + tup(stride) + NEWFALSE + ordered_dict_empty() + TUPLE + REDUCE)


def zip_param(pid, offset, size, stride):
    """torch._utils._rebuild_parameter(<tensor>, False, OrderedDict())."""
    return (glob("torch._utils", "_rebuild_parameter") + MARK + rebuild_tensor(pid, offset, size, stride)
            + NEWFALSE + ordered_dict_empty() + TUPLE + REDUCE)


def state_dict_pkl(entries, trailer=b""):
    """OrderedDict of name -> raw value opcodes, as torch.save(state_dict) writes it."""
    body = b"".join(binunicode(n) + v for n, v in entries)
    return proto(2) + ordered_dict_empty() + MARK + body + SETITEMS + trailer + STOP


def f32(*xs):
    return struct.pack("<%df" % len(xs), *xs)


def torch_zip(pkl, storages, prefix="archive", byteorder=b"little", extra=()):
    """A torch.save-like zip (ZIP_STORED, fixed timestamps so the output is reproducible)."""
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_STORED) as z:
        def put(name, data):
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_STORED
            z.writestr(zi, data)
        put(f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            put(f"{prefix}/byteorder", byteorder)
        for key, data in storages:
            put(f"{prefix}/data/{key}", data)
        for name, data in extra:
            put(name, data)
        put(f"{prefix}/version", b"3\n")
    return bio.getvalue()


class RawZip:
    """Hand-rolled zip writer for archives zipfile refuses to (or should not) write."""

    def __init__(self):
        self.body = b""
        self.central = []  # (name, method, crc, csize, usize, offset)

    def local(self, name, data, method=0, usize=None, crc=None):
        """Appends a local header + data; returns its offset."""
        off = len(self.body)
        n = name.encode()
        crc = zlib.crc32(data) if crc is None else crc
        usize = len(data) if usize is None else usize
        self.body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21,
                                 crc, len(data), usize, len(n), 0) + n + data
        return off, (name, method, crc, len(data), usize, off)

    def add(self, name, data, **kw):
        off, entry = self.local(name, data, **kw)
        self.central.append(entry)
        return off

    def finish(self):
        cd = b""
        for name, method, crc, csize, usize, off in self.central:
            n = name.encode()
            cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21,
                              crc, csize, usize, len(n), 0, 0, 0, 0, 0, off) + n
        eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(self.central), len(self.central),
                           len(cd), len(self.body), 0)
        return self.body + cd + eocd


# --------------------------------------------------------------------------------------
# legacy torch.save format
# --------------------------------------------------------------------------------------
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}


def legacy_pid(key, numel, cls="FloatStorage", view=NONE):
    return (MARK + binunicode("storage") + glob("torch", cls) + binunicode(key)
            + binunicode("cpu") + val(numel) + view + TUPLE + BINPERSID)


def legacy_file(obj_pkl, keys, data, magic=LEGACY_MAGIC, version=1001):
    """magic, protocol version, sys_info, object, storage keys, then per key numel + bytes."""
    out = (pickle.dumps(magic, protocol=2) + pickle.dumps(version, protocol=2)
           + pickle.dumps(SYS_INFO, protocol=2) + obj_pkl + pickle.dumps(keys, protocol=2))
    for numel, raw in data:
        out += struct.pack("<q", numel) + raw
    return out


def legacy_state_dict(entries):
    body = b"".join(binunicode(n) + v for n, v in entries)
    return proto(2) + ordered_dict_empty() + MARK + body + SETITEMS + STOP


def legacy_tensor(key, numel, offset, size, stride, **kw):
    return rebuild_tensor(legacy_pid(key, numel, **kw), offset, size, stride)


# --------------------------------------------------------------------------------------
# EDM snapshot-like pickles (protocol 4, torch_utils.persistence objects)
# --------------------------------------------------------------------------------------
def storage_payload(numel, raw, key="0"):
    """What torch.storage._load_from_bytes receives: a legacy torch.save of one storage."""
    obj = proto(2) + legacy_pid(key, numel) + STOP
    return legacy_file(obj, [key], [(numel, raw)])


def edm_param(payload_op, size, stride):
    """_rebuild_parameter(_rebuild_tensor_v2(_load_from_bytes(b'...'), 0, size, stride,
    False, OrderedDict()), False, OrderedDict())."""
    storage = sglob("torch.storage", "_load_from_bytes") + payload_op + TUPLE1 + REDUCE
    t = (sglob("torch._utils", "_rebuild_tensor_v2") + MARK + storage + pint(0) + tup(size)
         + tup(stride) + NEWFALSE + sglob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
         + TUPLE + REDUCE)
    return (sglob("torch._utils", "_rebuild_parameter") + MARK + t + NEWFALSE
            + sglob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + TUPLE + REDUCE)


def module_state(params=(), buffers=(), modules=(), extra=()):
    """An nn.Module __dict__ (the keys the EDM walker reads, in torch's order)."""
    return dict_of([("training", False),
                    ("_parameters", dict_of(params)),
                    ("_buffers", dict_of(buffers)),
                    ("_non_persistent_buffers_set", sglob("builtins", "set") + EMPTY_LIST
                     + TUPLE1 + REDUCE),
                    ("_modules", dict_of(modules))] + list(extra))


def persistent(class_name, state):
    meta = dict_of([("type", "class"), ("version", 6),
                    ("module_src", "# source omitted"), ("class_name", class_name),
                    ("state", state)])
    return (sglob("torch_utils.persistence", "_reconstruct_persistent_obj") + meta + TUPLE1
            + REDUCE)


def edm_snapshot(ema, loss_fn=None, dataset_kwargs=None):
    pairs = [("ema", ema), ("loss_fn", loss_fn if loss_fn is not None else NONE),
             ("augment_pipe", NONE),
             ("dataset_kwargs", dataset_kwargs if dataset_kwargs is not None
              else dict_of([("class_name", "training.dataset.ImageFolderDataset")]))]
    return proto(4) + dict_of(pairs) + STOP


def small_ema(weight=None):
    w = weight if weight is not None else edm_param(binbytes(storage_payload(2, f32(0.5, -1.0))),
                                                    (2,), (1,))
    lin = persistent("training.networks.Linear", module_state(params=[("weight", w)]))
    return persistent("training.networks.EDMPrecond",
                      module_state(modules=[("model", lin)],
                                   extra=[("img_resolution", 8), ("sigma_data", 0.5)]))


def small_loss_fn():
    return persistent("training.loss.EDMLoss",
                      dict_of([("P_mean", -1.2), ("P_std", 1.2), ("sigma_data", 0.5)]))


# --------------------------------------------------------------------------------------
# the corpus
# --------------------------------------------------------------------------------------
CASES = {}


def case(name, data, error, description, stage="any"):
    assert name not in CASES, name
    CASES[name] = (data, error, description, stage)


def flip(data, offset, bit):
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def xorshift_bytes(seed, n):
    x = seed
    out = bytearray()
    while len(out) < n:
        x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 7
        x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
        out += struct.pack("<Q", x)
    return bytes(out[:n])


def build():
    # ---------------- valid seeds
    w, b = f32(*[i / 8 for i in range(6)]), f32(1.0, 2.0, 3.0)
    seed_pkl = state_dict_pkl([("layer.weight", rebuild_tensor(zip_pid("0", 6), 0, (2, 3), (3, 1))),
                               ("layer.bias", rebuild_tensor(zip_pid("1", 3), 0, (3,), (1,)))])
    seed_zip = torch_zip(seed_pkl, [("0", w), ("1", b)])
    seed_legacy = legacy_file(
        legacy_state_dict([("layer.weight", legacy_tensor("140001", 6, 0, (2, 3), (3, 1))),
                           ("layer.bias", legacy_tensor("140002", 3, 0, (3,), (1,)))]),
        ["140001", "140002"], [(6, w), (3, b)])
    seed_edm = edm_snapshot(small_ema(), small_loss_fn())
    # an EDM training state (torch zip): net (persistent module) + Adam optimizer_state
    def ztensor(key, numel, size, stride):
        return rebuild_tensor(zip_pid(key, numel), 0, size, stride)

    def adam(k0):
        return dict_of([("step", ztensor(str(k0), 1, (), ())),
                        ("exp_avg", ztensor(str(k0 + 1), 4, (4,), (1,))),
                        ("exp_avg_sq", ztensor(str(k0 + 2), 4, (4,), (1,)))])
    ts_net = persistent("training.networks.EDMPrecond", module_state(
        params=[("w", zip_param(zip_pid("0", 4), 0, (4,), (1,)))],
        modules=[("model", persistent("training.networks.SongUNet", module_state(
            params=[("b", zip_param(zip_pid("1", 4), 0, (2, 2), (2, 1)))])))],
        extra=[("sigma_data", 0.5), ("img_resolution", 8)]))
    ts_opt = dict_of([("state", dict_of([(0, adam(2)), (1, adam(5))])),
                      ("param_groups", EMPTY_LIST + MARK + dict_of([
                          ("lr", 0.001), ("betas", tup([0.9, 0.999])), ("eps", 1e-8),
                          ("weight_decay", 0), ("amsgrad", False),
                          ("params", EMPTY_LIST + MARK + pint(0) + pint(1) + APPENDS)]) + APPENDS)])
    ts_pkl = proto(2) + dict_of([("net", ts_net), ("optimizer_state", ts_opt)]) + STOP
    seed_ts = torch_zip(ts_pkl, [(str(k), f32(*([0.25 * k] * (1 if k in (2, 5) else 4))))
                                 for k in range(8)])
    seeds = {"state_dict.pt": seed_zip, "state_dict_legacy.pt": seed_legacy,
             "edm_snapshot.pkl": seed_edm, "training_state.pt": seed_ts}

    def zip_with(pkl, storages=(("0", f32(1, 2, 3, 4)),), **kw):
        return torch_zip(pkl, list(storages), **kw)

    def one_tensor(offset, size, stride, numel=4, key="0", cls="FloatStorage"):
        return state_dict_pkl([("w", rebuild_tensor(zip_pid(key, numel, cls), offset, size, stride))])

    # ---------------- container level
    case("empty.pt", b"", "empty file", "zero-length file", "open")
    rnd = bytearray(xorshift_bytes(0x9E3779B97F4A7C15, 4096))
    rnd[0], rnd[8] = 0x17, 0x42  # not a pickle / legacy / safetensors start
    assert b"PK\x05\x06" not in rnd
    case("random_bytes.bin", bytes(rnd), "unrecognised format",
         "4 KiB of pseudo-random bytes", "open")
    case("text_file.pt", b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n",
         "unrecognised format", "a git-lfs pointer instead of the checkpoint", "open")

    # ---------------- code execution attempts (never executed; refused at extract)
    case("os_system.pkl",
         proto(2) + glob("os", "system") + binunicode("touch /tmp/tiw-pwned") + TUPLE1 + REDUCE + STOP,
         "os.system", "GLOBAL os.system + REDUCE (the classic pickle RCE)", "extract")
    body = sglob("builtins", "eval") + ustr("__import__('os').system('id')") + TUPLE1 + REDUCE + STOP
    case("builtins_eval.pkl", proto(4) + frame(len(body)) + body,
         "builtins.eval", "STACK_GLOBAL builtins.eval called on a code string", "extract")
    case("subprocess_popen.pkl",
         proto(2) + glob("subprocess", "Popen") + MARK + EMPTY_LIST + MARK + binunicode("sh")
         + binunicode("-c") + binunicode("id") + APPENDS + TUPLE + REDUCE + STOP,
         "subprocess.Popen", "subprocess.Popen(['sh', '-c', 'id'])", "extract")
    # a valid-looking state dict whose second entry is posix.system(...): loads as data,
    # refused at extraction
    case("zip_state_dict_with_posix_system.pt",
         zip_with(state_dict_pkl([
             ("w", rebuild_tensor(zip_pid("0", 4), 0, (4,), (1,))),
             ("evil", glob("posix", "system") + binunicode("id") + TUPLE1 + REDUCE)])),
         "posix.system", "torch zip state dict hiding a posix.system call among tensors", "extract")
    case("edm_snapshot_with_exec.pkl",
         edm_snapshot(small_ema(), dataset_kwargs=dict_of([
             ("class_name", sglob("builtins", "exec") + ustr("import os") + TUPLE1 + REDUCE)])),
         "builtins.exec", "EDM snapshot whose dataset_kwargs calls builtins.exec", "extract")
    case("getattr_chain.pkl",
         proto(2) + glob("builtins", "getattr") + MARK + glob("builtins", "object")
         + binunicode("__subclasses__") + TUPLE + REDUCE + EMPTY_TUPLE + REDUCE + STOP,
         "builtins.getattr", "getattr(object, '__subclasses__')() gadget", "extract")

    # ---------------- pickle VM errors
    case("unknown_opcode.pkl", proto(2) + b"\xff" + STOP, "unknown opcode 0xff",
         "opcode byte 0xff", "open")
    case("pickle_protocol_9.pkl", proto(9) + EMPTY_DICT + STOP,
         "unsupported pickle protocol 9", "PROTO 9", "open")
    case("stack_underflow.pkl", proto(2) + REDUCE + STOP, "stack underflow",
         "REDUCE on an empty stack", "open")
    case("no_stop.pkl", proto(2) + EMPTY_DICT + binunicode("a") + pint(1) + SETITEM,
         "stream ended before STOP", "pickle without STOP", "open")
    case("memo_index_out_of_range.pkl",
         proto(2) + EMPTY_DICT + binput(0) + binunicode("w") + binget(7) + SETITEM + STOP,
         "memo index 7 was never stored", "BINGET 7 when only memo slot 0 exists", "open")
    case("memo_long_binget_max.pkl",
         proto(2) + EMPTY_LIST + b"j" + struct.pack("<I", 0xFFFFFFFF) + APPEND + STOP,
         "memo index 4294967295", "LONG_BINGET 0xffffffff", "open")
    case("binunicode_invalid_utf8.pkl",
         proto(2) + EMPTY_DICT + binunicode(b"layer.\xff\xfeweight") + pint(1) + SETITEM + STOP,
         "invalid UTF-8", "BINUNICODE key with bytes ff fe", "open")
    case("global_invalid_utf8.pkl",
         proto(2) + b"c" + b"torch\xc3\x28\n" + b"FloatStorage\n" + STOP,
         "not valid UTF-8", "GLOBAL whose module name is not UTF-8", "open")
    case("binunicode_length_beyond_end.pkl",
         proto(2) + b"X" + struct.pack("<I", 0xFFFFFFF0) + b"abc",
         "truncated: needs 4294967280 bytes", "BINUNICODE claiming 4 GiB in a 12-byte file", "open")
    case("binbytes8_length_2_63.pkl",
         proto(4) + b"\x8e" + struct.pack("<Q", 1 << 63) + STOP,
         "truncated: needs 9223372036854775808 bytes", "BINBYTES8 claiming 2^63 bytes", "open")
    case("frame_too_long.pkl", proto(4) + frame(1 << 40) + EMPTY_DICT + STOP,
         "FRAME of 1099511627776 bytes exceeds the stream", "FRAME claiming 1 TiB", "open")
    case("long4_negative_length.pkl", proto(2) + b"\x8b" + struct.pack("<i", -5) + STOP,
         "LONG4 with negative length", "LONG4 with length -5", "open")
    case("binstring_negative_length.pkl", proto(1) + b"T" + struct.pack("<i", -1) + STOP,
         "BINSTRING with negative length", "BINSTRING with length -1", "open")
    case("dict_odd_items.pkl", proto(2) + MARK + binunicode("a") + b"d" + STOP,
         "odd number of items", "DICT with a key and no value", "open")
    case("out_of_band_buffer.pkl", proto(5) + b"\x97" + STOP, "out-of-band buffers",
         "NEXT_BUFFER (protocol 5)", "open")
    case("persistent_id_in_plain_pickle.pkl", proto(2) + binunicode("0") + BINPERSID + STOP,
         "persistent id found but this stream has no storages",
         "BINPERSID in a stand-alone pickle", "open")

    # deep nesting: every opcode is iterative, so depth is only a memory question
    n = 100_000
    case("nesting_100k_lists.pkl",
         proto(2) + EMPTY_LIST * n + APPEND * (n - 1) + STOP,
         "no state_dict found", "100k-deep nested list: [[[[...]]]]", "extract")
    case("nesting_100k_marks.pkl", proto(2) + MARK * n + NONE + TUPLE * n + STOP,
         "no state_dict found", "100k nested MARK ... TUPLE", "extract")
    case("nesting_100k_dicts.pkl",
         proto(2) + binunicode("k") + binput(0) + POP + (EMPTY_DICT + binget(0)) * n + EMPTY_DICT
         + SETITEM * n + STOP,
         "no state_dict found", "100k-deep dict {'k': {'k': ...}}", "extract")
    case("unclosed_100k_marks.pkl", proto(2) + MARK * n + STOP, "stack underflow",
         "100k MARKs never closed, then STOP", "open")
    # a 1000-level deep chain of persistent modules (the walker stops at 64)
    chain = persistent("training.networks.Leaf", module_state())
    for _ in range(200):
        chain = persistent("B", dict_of([("_modules", dict_of([("m", chain)]))]))
    case("edm_module_tree_200_deep.pkl", edm_snapshot(chain), "deeper than 64 levels",
         "EDM snapshot whose ema is a 200-deep module chain", "extract")

    # ---------------- torch zip: storages and views
    case("zip_numel_beyond_member.pt",
         zip_with(one_tensor(0, (4,), (1,), numel=1 << 40)),
         "declares 1099511627776 float32 elements",
         "storage declares 2^40 elements, its member holds 16 bytes", "open")
    case("zip_numel_overflow.pt",
         zip_with(one_tensor(0, (4,), (1,), numel=(1 << 63) - 1, cls="DoubleStorage")),
         "size overflows", "storage numel i64::MAX of 8-byte elements (byte size overflows)", "open")
    case("zip_negative_numel.pt", zip_with(one_tensor(0, (4,), (1,), numel=-1)),
         "storage numel is -1", "storage numel -1", "open")
    case("zip_view_beyond_storage.pt", zip_with(one_tensor(0, (1000000,), (1,))),
         "reaches element 999999 of a storage with 4 elements",
         "tensor of 1M elements over a 4-element storage", "extract")
    case("zip_negative_stride.pt", zip_with(one_tensor(3, (4,), (-1,))), "negative stride",
         "stride -1", "extract")
    case("zip_negative_offset.pt", zip_with(one_tensor(-1, (4,), (1,))),
         "negative offset or size", "storage offset -1", "open")
    case("zip_negative_size.pt", zip_with(one_tensor(0, (2, -2), (1, 1))),
         "negative offset or size", "size (2, -2)", "open")
    case("zip_offset_i64_max.pt", zip_with(one_tensor((1 << 63) - 1, (2,), (1,))),
         "offset 9223372036854775807 reaches element", "storage offset i64::MAX", "extract")
    case("zip_stride_overflow.pt", zip_with(one_tensor(0, (4,), ((1 << 63) - 1,))),
         "view extent overflows", "stride i64::MAX: the view's extent overflows", "extract")
    case("zip_size_overflow.pt",
         zip_with(one_tensor(0, (1 << 62, 1 << 62), (0, 0))),
         "element count overflows", "size (2^62, 2^62): element count overflows", "extract")
    case("zip_stride0_huge_view.pt", zip_with(one_tensor(0, (1 << 61, 4), (0, 0))),
         "expanded or overlapping", "stride-0 view of 2^63 elements (2^65 bytes) over a 4-element storage", "extract")
    case("zip_empty_view_offset_i64_max.pt", zip_with(one_tensor((1 << 63) - 1, (0, 4), (4, 1))),
         None, "empty tensor whose storage offset is i64::MAX (offset unchecked for empty views)")
    case("zip_rank_100.pt", zip_with(one_tensor(0, (1,) * 100, (1,) * 100)),
         "more than 64", "a 100-dimensional tensor", "open")
    case("zip_storage_key_missing.pt",
         zip_with(one_tensor(0, (4,), (1,), key="7")),
         "member archive/data/7 is missing", "persistent id names key 7, no data/7 member", "open")
    case("zip_unknown_storage_class.pt",
         zip_with(one_tensor(0, (4,), (1,), cls="EvilStorage")),
         "unknown storage class torch.EvilStorage", "storage class torch.EvilStorage", "open")
    case("zip_storage_key_reused.pt",
         zip_with(state_dict_pkl([("a", rebuild_tensor(zip_pid("0", 4), 0, (4,), (1,))),
                                  ("b", rebuild_tensor(zip_pid("0", 2, "HalfStorage"), 0, (2,), (1,)))])),
         "reused with a different dtype", "one storage key with two dtypes", "open")
    case("zip_pid_not_storage.pt",
         zip_with(state_dict_pkl([("w", rebuild_tensor(zip_pid("0", 4, tag="module"), 0, (4,), (1,)))])),
         "persistent id tag", "persistent id tagged 'module' instead of 'storage'", "open")
    case("zip_tensor_of_non_storage.pt",
         zip_with(state_dict_pkl([("w", rebuild_tensor(binunicode("x"), 0, (4,), (1,)))])),
         "first argument is not a storage", "_rebuild_tensor_v2 of a str", "open")
    case("zip_bigendian.pt", zip_with(one_tensor(0, (4,), (1,)), byteorder=b"big"),
         "only little-endian", "byteorder record 'big'", "open")
    case("zip_no_data_pkl.pt", torch_zip(b"", [("0", f32(1))], prefix="archive")
         .replace(b"archive/data.pkl", b"archive/data.txt"),
         "no <prefix>/data.pkl", "zip without data.pkl", "open")
    case("zip_two_data_pkl.pt",
         torch_zip(seed_pkl, [("0", w), ("1", b)], extra=[("other/data.pkl", seed_pkl)]),
         "2 data.pkl members", "two top folders each with a data.pkl", "open")
    case("zip_data_pkl_garbage.pt", zip_with(proto(2) + b"\xfe" + STOP),
         "archive/data.pkl: pickle error at byte 2: unknown opcode 0xfe",
         "data.pkl with an unknown opcode", "open")
    case("zip_not_a_state_dict.pt", zip_with(proto(2) + pint(42) + STOP),
         "no state_dict found: the top-level object is 42", "data.pkl holds the int 42", "extract")

    # ---------------- zip structure
    rz = RawZip()
    rz.add("archive/data.pkl", seed_pkl)
    rz.add("archive/data/0", w)
    rz.add("archive/data/1", b)
    evil = state_dict_pkl([("w", glob("os", "system") + binunicode("id") + TUPLE1 + REDUCE)])
    rz.add("archive/data.pkl", evil)
    case("zip_duplicate_member.pt", rz.finish(), "appears twice",
         "two central-directory entries named archive/data.pkl (benign and malicious)", "open")

    # member archive/version (local header + data) lies inside the data of archive/data/0
    inner = RawZip()
    _, ventry = inner.local("archive/version", b"3\n")
    a_data = b"\0" * 10 + inner.body
    a_data += b"\0" * (100 - len(a_data))
    rz = RawZip()
    rz.add("archive/data.pkl", one_tensor(0, (4,), (1,)))
    off0 = rz.add("archive/data/0", a_data)
    rz.central.append(("archive/version",) + ventry[1:5] + (off0 + 30 + len("archive/data/0") + 10,))
    case("zip_overlapping_members.pt", rz.finish(), "overlap",
         "member archive/version lies inside the data of archive/data/0", "open")

    rz = RawZip()
    rz.add("archive/data.pkl", one_tensor(0, (4,), (1,)))
    rz.add("archive/data/0", zlib.compress(b"\0" * 65536)[2:-4], method=8, usize=0xFFFF0000)
    case("zip_deflated_4gib.pt", rz.finish(), "compressed",
         "deflated member whose header claims 4 GiB uncompressed (never inflated)", "open")

    rz = RawZip()
    rz.add("archive/data.pkl", one_tensor(0, (4,), (1,)))
    off, e = rz.local("archive/data/0", f32(1, 2, 3, 4))
    rz.central.append(("archive/data/0", 0, e[2], 0x7FFFFFF0, 0x7FFFFFF0, off))
    case("zip_member_beyond_eof.pt", rz.finish(), "beyond the end of the file",
         "central directory claims a 2 GiB stored member in a tiny file", "open")

    rz = RawZip()
    rz.add("archive/data.pkl", one_tensor(0, (4,), (1,)))
    off, e = rz.local("archive/data/0", f32(1, 2, 3, 4))
    rz.central.append(("archive/data/0", 0, e[2], 16, 32, off))
    case("zip_size_mismatch.pt", rz.finish(), "differs from uncompressed size",
         "stored member whose sizes disagree", "open")

    # ---------------- truncation, bit flips
    for cut in (4, 30, 200, len(seed_zip) // 2, len(seed_zip) - 10):
        case(f"trunc_zip_at_{cut}.pt", seed_zip[:cut], "invalid zip archive",
             f"valid torch zip cut after {cut} of {len(seed_zip)} bytes", "open")
    for cut in (1, 13, 40, 150, len(seed_legacy) - 30, len(seed_legacy) - 1):
        case(f"trunc_legacy_at_{cut}.pt", seed_legacy[:cut], "truncated",
             f"valid legacy file cut after {cut} of {len(seed_legacy)} bytes", "open")
    for cut in (3, 100, len(seed_edm) // 3, len(seed_edm) // 2, len(seed_edm) - 1):
        case(f"trunc_edm_at_{cut}.pkl", seed_edm[:cut], "truncated",
             f"valid EDM-like snapshot cut after {cut} of {len(seed_edm)} bytes", "open")
    pkl_at = seed_zip.index(seed_pkl)
    case("bitflip_zip_proto.pt", flip(seed_zip, pkl_at, 7), "unknown opcode 0x00",
         "bit 7 of data.pkl's PROTO opcode cleared", "open")
    case("bitflip_zip_global.pt", flip(seed_zip, pkl_at + 2, 0), "stack underflow",
         "GLOBAL ('c') flipped to BUILD ('b')", "open")
    eocd = seed_zip.rindex(b"PK\x05\x06")
    case("bitflip_zip_eocd_count.pt", flip(seed_zip, eocd + 8, 4), "invalid zip archive",
         "bit flip in the end-of-central-directory entry count", "open")
    case("bitflip_zip_local_magic.pt", flip(seed_zip, 0, 1), "invalid zip archive",
         "bit flip in the first local header signature", "open")

    # ---------------- legacy format
    case("legacy_wrong_magic.pt", legacy_file(legacy_state_dict([]), [], [], magic=LEGACY_MAGIC + 1),
         "magic number", "legacy file whose magic number is off by one", "open")
    case("legacy_protocol_1002.pt", legacy_file(legacy_state_dict([]), [], [], version=1002),
         "legacy protocol version 1002", "legacy protocol version 1002", "open")
    lsd = legacy_state_dict([("w", legacy_tensor("1", 4, 0, (4,), (1,)))])
    case("legacy_data_truncated.pt", legacy_file(lsd, ["1"], [(4, f32(1, 2))]),
         "truncated: storage \"1\" declares 4 elements",
         "storage data section holds 8 of 16 bytes", "open")
    case("legacy_numel_mismatch.pt", legacy_file(lsd, ["1"], [(5, f32(1, 2, 3, 4, 5))]),
         "has 5 elements in the data section but 4 in its id",
         "element count in the data section disagrees with the persistent id", "open")
    case("legacy_numel_huge.pt",
         legacy_file(legacy_state_dict([("w", legacy_tensor("1", 1 << 60, 0, (4,), (1,)))]),
                     ["1"], [(1 << 60, f32(1, 2, 3, 4))]),
         "declares 1152921504606846976 elements", "storage of 2^60 elements in a tiny file", "open")
    case("legacy_storage_key_missing.pt", legacy_file(lsd, [], []),
         "is missing from the data section", "storage key list omits the tensor's key", "open")
    case("legacy_unused_storage.pt", legacy_file(lsd, ["1", "2"], [(4, f32(1, 2, 3, 4)), (1, f32(1))]),
         "no tensor uses", "data section with a storage no tensor references", "open")
    case("legacy_view_metadata.pt",
         legacy_file(legacy_state_dict([("w", legacy_tensor("1", 4, 0, (4,), (1,),
                                                            view=tup([binunicode("v"), 0, 4])))]),
                     ["1"], [(4, f32(1, 2, 3, 4))]),
         "view_metadata", "legacy storage view (view_metadata not None)", "open")
    case("legacy_keys_not_list.pt",
         legacy_file(lsd, 7, []),
         "storage key list is not a list", "storage key list is an int", "open")

    # ---------------- EDM snapshot payloads
    case("edm_payload_truncated.pkl",
         edm_snapshot(small_ema(edm_param(binbytes(storage_payload(4, f32(1, 2, 3, 4))[:-9]),
                                          (4,), (1,)))),
         "storage payload at byte", "_load_from_bytes payload cut short", "open")
    case("edm_payload_not_storage.pkl",
         edm_snapshot(small_ema(edm_param(binbytes(legacy_file(proto(2) + pint(5) + STOP, [], [])),
                                          (4,), (1,)))),
         "instead of a storage", "_load_from_bytes payload holding an int", "open")
    case("edm_payload_of_str.pkl",
         edm_snapshot(small_ema(edm_param(ustr("not bytes"), (4,), (1,)))),
         "argument is not bytes", "_load_from_bytes of a str", "open")
    case("edm_view_beyond_payload.pkl",
         edm_snapshot(small_ema(edm_param(binbytes(storage_payload(2, f32(1, 2))), (3, 3), (3, 1)))),
         "reaches element 8 of a storage with 2 elements",
         "parameter view larger than its storage payload", "extract")
    case("edm_missing_ema.pkl", proto(4) + dict_of([("ema", NONE), ("loss_fn", small_loss_fn())]) + STOP,
         "no state_dict found", "snapshot whose ema is None", "extract")

    # ---------------- safetensors
    hdr = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    hdr += b" " * (-len(hdr) % 8)

    def st(header, data=f32(1, 2, 3, 4), n=None):
        return struct.pack("<Q", len(header) if n is None else n) + header + data

    case("safetensors_header_too_large.safetensors", st(hdr, n=1 << 40), "header too large",
         "safetensors header length 2^40", "open")
    case("safetensors_header_beyond_eof.safetensors", st(hdr, b"", n=len(hdr) + 4096),
         "invalid header length", "header length 4 KiB past the end of the file", "open")
    case("safetensors_data_beyond_eof.safetensors", st(hdr, f32(1, 2)),
         "incomplete metadata", "tensor data_offsets past the end of the file", "open")
    bad = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}'
    case("safetensors_bad_json.safetensors", st(bad + b" " * (-len(bad) % 8)), "invalid JSON",
         "header JSON missing its closing brace", "open")
    nonutf = b'{"w\xff":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    case("safetensors_header_invalid_utf8.safetensors", st(nonutf + b" " * (-len(nonutf) % 8)),
         "invalid UTF-8", "header with a 0xff byte in a tensor name", "open")
    f8 = b'{"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}}'
    case("safetensors_fp8.safetensors", st(f8 + b" " * (-len(f8) % 8), b"\0" * 4),
         "no PyTorch storage equivalent", "float8 tensor", "open")
    cfg = b'{"__metadata__":{"tiw.config":"{\\"a\\": [1,"},"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    case("safetensors_bad_config.safetensors", st(cfg + b" " * (-len(cfg) % 8)),
         "tiw.config metadata", "tiw.config metadata that is not JSON", "extract")
    ovl = b'{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    case("safetensors_overlapping.safetensors", st(ovl + b" " * (-len(ovl) % 8)),
         "invalid offset", "two tensors sharing the same data_offsets", "open")

    # ---------------- well formed but hostile: must stay bounded (result may be Ok)
    # a cycle: loss_fn's model is loss_fn itself
    cyc = (proto(4) + EMPTY_DICT + binput(0) + MARK + ustr("ema") + small_ema() + ustr("loss_fn")
           + sglob("torch_utils.persistence", "_reconstruct_persistent_obj")
           + EMPTY_DICT + MARK + ustr("class_name") + ustr("training.loss.EDMLoss") + ustr("state")
           + EMPTY_DICT + binput(1) + SETITEMS + TUPLE1 + REDUCE + binput(2)
           + SETITEMS
           # state['_modules'] = {'model': <loss_fn>}
           + binget(1) + ustr("_modules") + EMPTY_DICT + ustr("model") + binget(2) + SETITEM + SETITEM
           + POP + STOP)
    case("edm_cyclic_loss_fn.pkl", cyc, None,
         "loss_fn whose _modules['model'] is loss_fn itself (a reference cycle)", "any")
    # a module DAG: each level's two children are the same object: 2^60 paths
    dag = persistent("training.networks.Leaf",
                     module_state(params=[("w", edm_param(binbytes(storage_payload(1, f32(1))), (1,), (1,)))]))
    dag += binput(0) + POP
    for i in range(60):
        dag += (persistent("training.networks.Pair",
                           module_state(modules=[("a", binget(i)), ("b", binget(i))]))
                + binput(i + 1) + POP)
    dag += binget(60)
    case("edm_module_dag_2_pow_60.pkl", edm_snapshot(dag), "too large",
         "60 levels of modules whose two children are one shared object (2^60 paths)", "extract")
    # a list of 100k references to one 100k-item list, nested 31 levels below dataset_kwargs:
    # naive JSON conversion would build 10^10 nodes
    big = EMPTY_LIST + binput(0) + MARK + NONE * 30_000 + APPENDS
    fan = EMPTY_LIST + MARK + binget(0) * 30_000 + APPENDS
    nest = EMPTY_LIST * 30 + big + POP + fan + APPEND * 30
    case("edm_config_amplification.pkl",
         edm_snapshot(small_ema(), dataset_kwargs=dict_of([("x", nest)])), None,
         "dataset_kwargs: 30k references to a 30k-element list 32 levels deep", "any")
    # 20k attributes of the ema object (int names), each a reference to one 20k-element list
    attrs = [(i, binget(0)) for i in range(20_000)]
    amp = (proto(4) + EMPTY_LIST + binput(0) + MARK + NONE * 20_000 + APPENDS + POP
           + dict_of([("ema", persistent("training.networks.EDMPrecond",
                                         module_state(extra=attrs)))]) + STOP)
    case("edm_attribute_amplification.pkl", amp, None,
         "20k attributes, each a reference to one 20k-element list", "any")
    # _non_persistent_buffers_set and _buffers of 20k names each: quadratic if looked up in a list
    names = [str(i) for i in range(20_000)]
    bufs = [(i, binget(0)) for i in range(20_000)]
    nps = sglob("builtins", "set") + EMPTY_LIST + MARK + b"".join(ustr(n) for n in names) + APPENDS + TUPLE1 + REDUCE
    st_ = dict_of([("training", False), ("_parameters", dict_of([])), ("_buffers", dict_of(bufs)),
                   ("_non_persistent_buffers_set", nps), ("_modules", dict_of([]))])
    tensor0 = edm_param(binbytes(storage_payload(1, f32(1))), (1,), (1,)) + binput(0) + POP
    case("edm_nonpersistent_quadratic.pkl",
         proto(4) + tensor0 + edm_snapshot(persistent("training.networks.EDMPrecond", st_))[2:], None,
         "20k buffers (int keys) and 20k non-persistent buffer names", "any")
    # training states: 3000 parameters (one shared tensor) and optimizer entries that all
    # share one 3000-field dict (9M (param, field) pairs), or 3000 references to one
    # param_groups entry listing 3000 parameters
    n = 3000
    shared = zip_param(zip_pid("0", 1), 0, (1,), (1,)) + binput(0) + POP
    many_net = persistent("training.networks.EDMPrecond",
                          module_state(params=[("p%d" % i, binget(0)) for i in range(n)]))
    fields = dict_of([("f%d" % i, i) for i in range(n)]) + binput(1) + POP
    opt = dict_of([("state", EMPTY_DICT + MARK + b"".join(pint(i) + binget(1) for i in range(n))
                    + SETITEMS), ("param_groups", EMPTY_LIST)])
    case("training_state_optimizer_amplification.pt",
         zip_with(proto(2) + shared + fields + dict_of([("net", many_net), ("optimizer_state", opt)]) + STOP,
                  [("0", f32(1))]),
         "optimizer state too large", "3000 optimizer entries sharing one 3000-field dict", "extract")
    group = (dict_of([("lr", 0.1), ("params", EMPTY_LIST + MARK + b"".join(pint(i) for i in range(n))
                                    + APPENDS)]) + binput(1) + POP)
    opt = dict_of([("state", EMPTY_DICT),
                   ("param_groups", EMPTY_LIST + MARK + binget(1) * n + APPENDS)])
    case("training_state_param_groups_amplification.pt",
         zip_with(proto(2) + shared + group + dict_of([("net", many_net), ("optimizer_state", opt)]) + STOP,
                  [("0", f32(1))]),
         None, "3000 references to one param_groups entry listing 3000 parameters")
    return seeds


def main():
    out = OUT
    if len(sys.argv) == 3 and sys.argv[1] == "--out":
        out = sys.argv[2]
    seeds = build()
    os.makedirs(os.path.join(out, "seeds"), exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, "seeds", name), "wb") as f:
            f.write(data)
    expected = {}
    total = sum(len(d) for d in seeds.values())
    for name, (data, error, description, stage) in sorted(CASES.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        total += len(data)
        expected[name] = {"description": description, "error": error, "stage": stage}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(CASES)} cases + {len(seeds)} seeds to {out} ({total} bytes)")
    assert total < 2 << 20, "corpus must stay under 2 MB"


if __name__ == "__main__":
    main()
