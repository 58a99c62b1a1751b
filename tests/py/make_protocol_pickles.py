"""Writes the same Python object pickled with protocols 0..5 into OUTDIR/proto{N}.pkl and
the expected decoding (as our reader's JSON view: tuples/sets -> lists, bytes -> "<bytes[n]>")
into OUTDIR/expected.json. Standard library only."""
import collections
import json
import pickle
import sys

out = sys.argv[1]
shared = [1, 2, 3]
obj = {
    "none": None,
    "bools": [True, False],
    "ints": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31 - 1, 2**31, 2**62, -(2**63)],
    "floats": [0.5, -1.25, 1e300, float("inf"), float("-inf")],
    "strs": ["", "ascii", "ünïcödé ✓", "line\nbreak", "quote'\"back\\slash"],
    "bytes": b"\x00\x01\xff" * 3,
    "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
    "set": {7},
    "frozenset": frozenset([8]),
    "nested": {"a": {"b": {"c": [[[]]]}}},
    "shared": [shared, shared],
    "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
    "long_list": list(range(1200)),
}


def view(x):
    if isinstance(x, bool) or x is None or isinstance(x, (int, float, str)):
        return x
    if isinstance(x, bytes):
        return f"<bytes[{len(x)}]>"
    if isinstance(x, (list, tuple, set, frozenset)):
        return [view(e) for e in x]
    if isinstance(x, dict):
        return {k: view(v) for k, v in x.items()}
    raise TypeError(type(x))


for proto in range(6):
    with open(f"{out}/proto{proto}.pkl", "wb") as f:
        pickle.dump(obj, f, protocol=proto)
with open(f"{out}/expected.json", "w") as f:
    json.dump(view(obj), f)
