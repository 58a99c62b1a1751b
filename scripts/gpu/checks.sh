#!/bin/bash
# CUDA checks of tiw on the lent GPU machine (one run). Binary: tiw-full built against
# libtorch 2.11+cu130 (the machine's torch), see the session notes.
set -u
cd "$(dirname "$0")"
xz -dkf tiw-full.xz && chmod +x tiw-full && xz -dkf libonnxruntime.so.1.31.1.xz
export ORT_DYLIB_PATH=$PWD/libonnxruntime.so.1.31.1
T=$PWD/tiw-full
TL=$(python3 -c "import torch,os;print(os.path.dirname(torch.__file__))")/lib
export LD_LIBRARY_PATH=$TL
F=../tests/fixtures
O=/tmp/o; mkdir -p $O
el() { python3 -c "import sys,time;print(round(time.time()-float(sys.argv[1]),2))" $1; }
ldd --version | head -1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== doctor"; $T doctor
echo "== 1. forward parity on CUDA (6 fixture nets vs PyTorch CPU outputs, rtol 1e-4)"
for n in $(ls $F/nets); do
  $T forward --network $F/nets/$n/network-snapshot-000000.pkl --inputs $F/nets/$n/forward.npz --out $O/f_$n.npz --device cuda >/dev/null \
   && $T compare $O/f_$n.npz $F/nets/$n/forward.npz --keys D,F_x --rtol 1e-4 | tail -3
done
echo "== 2. extractor + discriminator on CUDA"
$T forward --extractor $F/classifier/feature_extractor.pt --discriminator $F/classifier/discriminator.pt --inputs $F/classifier/forward.npz --out $O/fe.npz --device cuda >/dev/null && \
  $T compare $O/fe.npz $F/classifier/forward.npz --keys features,fe_logits,dis_logits,dis_sigmoid --rtol 1e-4 | tail -5
echo "== 3. tiw verify --device cuda (tch CUDA vs tract CPU vs PyTorch reference)"
$T verify --network $F/nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl --reference $F/nets/edm_ddpmpp_r16_uncond/forward.npz --device cuda 2>&1 | tail -12
echo "== 4. ort CPU works; ort with --device cuda must fail loudly (CPU onnxruntime 1.31.1 carried, no CUDA EP library)"
$T forward --network $F/nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl --inputs $F/nets/edm_ddpmpp_r16_uncond/forward.npz --out $O/o.npz --runtime ort 2>&1 | tail -1
$T forward --network $F/nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl --inputs $F/nets/edm_ddpmpp_r16_uncond/forward.npz --out $O/o2.npz --runtime ort --device cuda; echo "exit status $?"
echo "== 5. full-size nets with random weights (names/shapes from keys/*.json)"
python3 - <<'PY'
import json, torch, numpy as np, zipfile, io
from PIL import Image
for k, out in [("adm_classifier_32", "fe32.pt"), ("discriminator_in512", "dis.pt")]:
    d = json.load(open(f"../tests/fixtures/keys/{k}.json"))
    g = torch.Generator().manual_seed(0)
    sd = {e["name"]: torch.randn(e["shape"], generator=g) * 0.02 for e in d["entries"]}
    torch.save(sd, out)
rng = np.random.default_rng(0)
with zipfile.ZipFile("d32.zip", "w", zipfile.ZIP_STORED) as z:
    for i in range(512):
        b = io.BytesIO(); Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(b, "png")
        z.writestr(f"00000/img{i:08d}.png", b.getvalue())
    z.writestr("dataset.json", json.dumps({"labels": None}))
print("made fe32.pt, dis.pt, d32.zip")
PY
mem() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > $O/mem_$1.log & echo $!; }
for p in edm tiw_edm; do
  echo "== 6. train full-size DDPM++ CIFAR-10 (55.7M params) on CUDA, batch 64, precond $p, augment 0.12"
  M=$(mem $p)
  X=""; [ $p = tiw_edm ] && X="--extractor fe32.pt --discriminator dis.pt"
  timeout 200 $T train --data d32.zip --outdir $O/runs_$p --run-dir $O/run_$p --precond $p $X --batch 64 --duration 0.00384 --tick 1.28 --lr-rampup 1 --snap 0 --dump 0 --device cuda --quiet 2>&1 | grep -E "tick|Done|rror" | cut -c1-140
  kill $M; echo "peak GPU memory (MiB, whole device): $(sort -n $O/mem_$p.log | tail -1)"
done
echo "== 7. sampling with tch on CUDA: full-size DDPM++ snapshot, 18 steps, batch 256"
S=$(ls $O/run_edm/network-snapshot-*.safetensors | tail -1)
timeout 120 $T generate --network $S --outdir $O/gen --seeds 0-255 --batch 256 --runtime tch --device cuda --quiet 2>&1 | tail -1
t0=$(date +%s.%N); timeout 120 $T generate --network $S --outdir $O/gen2 --seeds 0-1023 --batch 256 --runtime tch --device cuda --quiet 2>&1 | tail -1; echo "generate 1024 images (35 calls per batch of 256): $(el $t0) s"
echo "== 8. train-classifier on CUDA (full-size random extractor, 20 iterations, batch 128)"
python3 -c "
import numpy as np; r=np.random.default_rng(1)
np.savez('ref.npz', samples=r.integers(0,256,(256,32,32,3),dtype=np.uint8)); np.savez('bias.npz', samples=r.integers(0,256,(1024,32,32,3),dtype=np.uint8))"
t0=$(date +%s.%N); timeout 120 $T train-classifier --ref ref.npz --bias bias.npz --extractor fe32.pt --savedir $O/disc --iter 20 --save-every 10 --device cuda 2>&1 | tail -2; echo "train-classifier 20 iterations (incl. start-up): $(el $t0) s"
echo "== done"
