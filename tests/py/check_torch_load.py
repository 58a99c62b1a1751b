"""Checks files written by `tiw convert` with the real PyTorch / safetensors readers.

usage: check_torch_load.py PT SAFETENSORS REFERENCE.npz

* PT must load with torch.load(path, weights_only=True) as an OrderedDict whose tensors are
  bit-identical to REFERENCE (same names, order, dtypes, shapes);
* SAFETENSORS must load with safetensors.torch.load_file, same tensors, and carry tiw metadata.
Prints one line per check; exits non-zero on the first mismatch.
"""
import collections
import json
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

pt_path, st_path, ref_path = sys.argv[1:4]
ref = np.load(ref_path)
names = list(ref.keys())

sd = torch.load(pt_path, weights_only=True, map_location="cpu")
assert isinstance(sd, collections.OrderedDict), type(sd)
assert list(sd.keys()) == names, "names/order differ"
for k in names:
    a, b = sd[k].numpy(), ref[k]
    assert a.dtype == b.dtype and a.shape == b.shape, (k, a.dtype, a.shape, b.dtype, b.shape)
    assert a.tobytes() == b.tobytes(), f"{k}: bytes differ"
print(f"torch.load(weights_only=True): {len(names)} tensors bit-identical")

st = load_file(st_path)
assert set(st) == set(names)
for k in names:
    assert st[k].numpy().tobytes() == ref[k].tobytes(), f"{k}: bytes differ"
with safe_open(st_path, framework="pt") as f:
    meta = f.metadata()
assert meta["format"] == "pt" and len(meta["tiw.source_sha256"]) == 64, meta
json.loads(meta["tiw.config"])  # Python's json accepts Infinity
print(f"safetensors.load_file: {len(names)} tensors bit-identical, metadata {sorted(meta)}")
