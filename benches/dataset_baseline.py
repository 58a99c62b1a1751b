"""Baseline for benches/dataset.rs: the image-folder path of EDM's dataset_tool.py (no
transform, no resize), re-derived from its documented behaviour (docs/SPEC.md 5.4) with the
same libraries it uses (PIL, numpy, zipfile).

    python dataset_baseline.py SOURCE_DIR DEST.zip

Prints one line: `images SECONDS` (wall time of the conversion, listing included).
"""

import io
import json
import os
import sys
import time
import zipfile

import numpy as np
import PIL.Image


def main(source, dest):
    t0 = time.perf_counter()
    PIL.Image.init()
    exts = set(PIL.Image.EXTENSION)
    files = []
    for root, _dirs, names in os.walk(source):
        for n in names:
            if "." in n and "." + n.rsplit(".", 1)[1].lower() in exts:
                files.append(os.path.relpath(os.path.join(root, n), source).replace(os.sep, "/"))
    files.sort(key=lambda f: f.split("/"))
    labels = {}
    meta = os.path.join(source, "dataset.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            data = json.load(f)["labels"]
        if data is not None:
            labels = {name: value for name, value in data}
    out = []
    shape = None
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as z:
        for i, rel in enumerate(files):
            img = np.array(PIL.Image.open(os.path.join(source, rel)))
            cur = img.shape if img.ndim == 3 else img.shape + (1,)
            if shape is None:
                shape = cur
            elif cur != shape:
                raise SystemExit(f"{rel}: {cur} differs from {shape}")
            name = f"{i // 1000:05d}/img{i:08d}.png"
            buf = io.BytesIO()
            PIL.Image.fromarray(img, "RGB" if cur[2] == 3 else "L").save(
                buf, format="png", compress_level=0, optimize=False
            )
            z.writestr(name, buf.getbuffer())
            out.append([name, labels[rel]] if rel in labels else None)
        meta = {"labels": out if all(x is not None for x in out) else None}
        z.writestr("dataset.json", json.dumps(meta))
    print(len(files), time.perf_counter() - t0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
