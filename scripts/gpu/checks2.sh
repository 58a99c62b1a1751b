#!/bin/bash
# Second CUDA run: forward parity of the two augment-label nets against D_augment (the first
# run compared D computed with augment labels against the label-free D), and sampling
# throughput with and without TF32.
set -u
cd "$(dirname "$0")"
xz -dkf tiw-full.xz && chmod +x tiw-full
T=$PWD/tiw-full
export LD_LIBRARY_PATH=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")/lib
F=../tests/fixtures; O=/tmp/o; mkdir -p $O
el() { python3 -c "import sys,time;print(round(time.time()-float(sys.argv[1]),2))" $1; }
for n in edm_adm_r16_uncond edm_ddpmpp_r16_uncond; do
  $T forward --network $F/nets/$n/network-snapshot-000000.pkl --inputs $F/nets/$n/forward.npz --out $O/f_$n.npz --device cuda >/dev/null
  python3 - $O/f_$n.npz $F/nets/$n/forward.npz <<'PY'
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
for k, r in [("D", "D_augment")]:
    e = np.abs(a[k] - b[r]).max() / np.abs(b[r]).max()
    print(sys.argv[2].split('/')[-2], f"{k} (with augment_labels) vs {r}: normalised max error {e:.2e}", "pass" if e <= 1e-4 else "FAIL")
PY
done
python3 -c "
import numpy as np, zipfile, io, json
from PIL import Image
r=np.random.default_rng(0)
with zipfile.ZipFile('d32.zip','w',zipfile.ZIP_STORED) as z:
  for i in range(64):
    b=io.BytesIO(); Image.fromarray(r.integers(0,256,(32,32,3),dtype=np.uint8)).save(b,'png'); z.writestr(f'00000/img{i:08d}.png', b.getvalue())
  z.writestr('dataset.json', json.dumps({'labels': None}))"
$T train --data d32.zip --outdir $O/r --run-dir $O/run --precond edm --batch 64 --duration 0.000128 --snap 0 --dump 0 --device cuda --quiet >/dev/null 2>&1
S=$(ls $O/run/network-snapshot-*.safetensors | tail -1)
for tf in "" "--allow-tf32"; do
  $T generate --network $S --outdir $O/w --seeds 0-255 --batch 256 --runtime tch --device cuda --quiet $tf >/dev/null 2>&1
  t0=$(date +%s.%N); $T generate --network $S --outdir $O/g$tf --seeds 0-1023 --batch 256 --runtime tch --device cuda --quiet $tf 2>&1 | tail -1
  echo "generate 1024 images, full-size DDPM++, 18 steps, batch 256 ${tf:-(plain f32)}: $(el $t0) s"
done
