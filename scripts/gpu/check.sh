#!/bin/bash
# The prepared GPU check of issue 16 (scripts/gpu/README.md has the recipe: what to build,
# strip, compress and carry, in which calls). Runs in the repository root on the lent
# machine, ≤ 8 minutes, and writes its figures under $OUT:
#   $OUT/check.log          everything printed
#   $OUT/parity.tsv         check  runtime  worst-normalised-error  tolerance  pass|FAIL
#   $OUT/throughput.tsv     row  images-or-steps/s  notes
# Sections: 0 environment; 1 tch CUDA strict-f32 parity (6 fixture nets + extractor /
# discriminator); 2 ort CUDA EP parity (same); 3 fp16 paths vs f32; 4 sampler trajectories
# (sampler.npz) on ort CUDA; 5 FID features on ort CUDA vs the Inception fixture;
# 6 throughput. Every section is time-boxed; a failing section does not stop the others.
#
# Stage folder (outside the repo, survives between back-to-back calls on a warm machine):
#   $STAGE/tiw-full                        built against libtorch 2.11 (README step 1–3)
#   $STAGE/libonnxruntime.so.1.31.1        from the onnxruntime-gpu 1.31.1 wheel
#   $STAGE/libonnxruntime_providers_shared.so, libonnxruntime_providers_cuda.so (same wheel)
#   $STAGE/inception_random.pth            optional (section 5 is skipped without it)
set -u
REPO=$PWD
STAGE=${STAGE:-/tmp/tiw-gpu}
OUT=${OUT:-/tmp/tiw-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
W=/tmp/tiw-gpu-work; rm -rf "$W"; mkdir -p "$W"
F=$REPO/tests/fixtures
T=$STAGE/tiw-full
PY=python3
START=$(date +%s)

# --- tolerances (normalised max error = max|ours − ref| / max|ref|) -------------------------
TOL_F32=1e-4      # strict f32 on CUDA vs the official CPU outputs: the fixtures' parity bound
TOL_FP16=1e-2     # fp16 (tch use_fp16 path, fp16 ONNX) vs the f32 fixtures: 11-bit mantissas
TOL_SAMPLER=1e-5  # sampler trajectories (f64 state) vs sampler.npz, as tests/generate.rs
TOL_MU=1e-5       # FID features: mu / sigma-diagonal absolute, as tests/fid.rs
TOL_SIGMA=2e-5

echo "== 0. environment ($(date -u))"
TL=$($PY -c "import torch,os;print(os.path.dirname(torch.__file__))")/lib
NV=$($PY -c "
import os, glob, importlib.util
s = importlib.util.find_spec('nvidia')
roots = list(s.submodule_search_locations) if s else []
print(':'.join(sorted(set(d for r in roots for d in glob.glob(os.path.join(r, '*', 'lib')) + glob.glob(os.path.join(r, '*', '*', 'lib'))))))")
export LD_LIBRARY_PATH=$STAGE:$TL${NV:+:$NV}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ORT_DYLIB_PATH=$STAGE/libonnxruntime.so.1.31.1
chmod +x "$T" 2>/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), '| python onnxruntime', onnxruntime.__version__)"
ls -la "$STAGE"
"$T" doctor || { echo "FATAL: tiw-full does not run"; exit 1; }
has_flag() { "$T" "$1" --help 2>/dev/null | grep -q -- "$2"; }
STRICT=""; has_flag forward --strict-f32 && STRICT="--strict-f32 --force-fp32"
printf "check\truntime\tworst\ttolerance\tresult\n" > "$OUT/parity.tsv"

# npz compare: prints and records the worst normalised error of KEYS (ours vs ref[, ref keys])
cmp_npz() { # name runtime tol ours ref keys [refkeys]
  $PY - "$@" <<'PY' | tee -a "$OUT/parity.tsv"
import sys, numpy as np
name, rt, tol, a, b, keys = sys.argv[1:7]
rk = sys.argv[7].split(",") if len(sys.argv) > 7 else keys.split(",")
A, B = np.load(a), np.load(b)
worst = 0.0
pairs = list(zip(keys.split(","), rk))
if "D_augment" in B.files:  # the input file has augment labels: its D with them is D_augment
    pairs = [(k, "D_augment" if r == "D" else r) for k, r in pairs if r != "F_x"]
pairs = [(k, r) for k, r in pairs if k in A.files]  # ONNX graphs output D only
for k, r in pairs:
    x, y = A[k].astype(np.float64), B[r].astype(np.float64)
    s = np.abs(y).max()
    e = np.abs(x - y).max() / (s if s > 0 else 1.0)
    worst = max(worst, e)
print(f"{name}\t{rt}\t{worst:.2e}\t{tol}\t{'pass' if worst <= float(tol) else 'FAIL'}")
PY
}
left() { echo $(( ${1} - ($(date +%s) - START) )); }

NETS=$(ls "$F/nets")
for RT in tch ort; do
  echo "== $([ $RT = tch ] && echo 1 || echo 2). $RT CUDA parity, strict f32 (tolerance $TOL_F32)"
  X=""; [ $RT = tch ] && X="$STRICT"
  for n in $NETS; do
    timeout 60 "$T" forward --network "$F/nets/$n/network-snapshot-000000.pkl" --inputs "$F/nets/$n/forward.npz" \
      --out "$W/${RT}_$n.npz" --runtime $RT --device cuda $X \
      && cmp_npz "$n" "$RT-cuda" $TOL_F32 "$W/${RT}_$n.npz" "$F/nets/$n/forward.npz" D,F_x \
      || echo -e "$n\t$RT-cuda\t-\t$TOL_F32\tFAIL (did not run)" | tee -a "$OUT/parity.tsv"
  done
  timeout 90 "$T" forward --extractor "$F/classifier/feature_extractor.pt" --discriminator "$F/classifier/discriminator.pt" \
    --inputs "$F/classifier/forward.npz" --out "$W/${RT}_fe.npz" --runtime $RT --device cuda \
    && cmp_npz extractor+discriminator "$RT-cuda" $TOL_F32 "$W/${RT}_fe.npz" "$F/classifier/forward.npz" features,fe_logits,dis_logits,dis_sigmoid \
    || echo -e "extractor+discriminator\t$RT-cuda\t-\t$TOL_F32\tFAIL (did not run)" | tee -a "$OUT/parity.tsv"
done

echo "== 3. fp16 paths vs the f32 fixtures (tolerance $TOL_FP16)"
# use_fp16=True copies of the fixture nets: convert to safetensors, flip the flag in tiw.config
flip_fp16() { # in.safetensors out.safetensors
  $PY - "$1" "$2" <<'PY'
import sys, json, struct, re
raw = open(sys.argv[1], "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
h = json.loads(raw[8:8 + n])
cfg = h["__metadata__"]["tiw.config"]
new = re.sub(r'"use_fp16"\s*:\s*false', '"use_fp16": true', cfg)
if new == cfg and '"use_fp16"' not in cfg:
    new = re.sub(r'"init_kwargs"\s*:\s*\{', '"init_kwargs": {"use_fp16": true, ', cfg, count=1)
h["__metadata__"]["tiw.config"] = new
hb = json.dumps(h, separators=(",", ":")).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])
PY
}
for n in $NETS; do
  "$T" convert "$F/nets/$n/network-snapshot-000000.pkl" "$W/$n.safetensors" >/dev/null 2>&1 \
    && flip_fp16 "$W/$n.safetensors" "$W/${n}_fp16.safetensors" \
    && timeout 60 "$T" forward --network "$W/${n}_fp16.safetensors" --inputs "$F/nets/$n/forward.npz" --out "$W/tch16_$n.npz" --device cuda 2>&1 | tail -1 \
    && cmp_npz "$n use_fp16" tch-cuda-fp16 $TOL_FP16 "$W/tch16_$n.npz" "$F/nets/$n/forward.npz" D \
    || echo -e "$n use_fp16\ttch-cuda-fp16\t-\t$TOL_FP16\tFAIL (did not run)" | tee -a "$OUT/parity.tsv"
  if has_flag export --precision; then
    "$T" export "$F/nets/$n/network-snapshot-000000.pkl" "$W/${n}_fp16.onnx" --precision fp16 >/dev/null \
      && timeout 60 "$T" forward --network "$W/${n}_fp16.onnx" --inputs "$F/nets/$n/forward.npz" --out "$W/ort16_$n.npz" --runtime ort --device cuda \
      && cmp_npz "$n fp16.onnx" ort-cuda-fp16 $TOL_FP16 "$W/ort16_$n.npz" "$F/nets/$n/forward.npz" D \
      || echo -e "$n fp16.onnx\tort-cuda-fp16\t-\t$TOL_FP16\tFAIL (did not run)" | tee -a "$OUT/parity.tsv"
  else
    echo "(tiw export has no --precision: fp16 ONNX rows skipped)"
  fi
done

echo "== 4. sampler trajectories on ort CUDA (tolerance $TOL_SAMPLER)"
for n in $NETS; do
  S="$F/nets/$n/sampler.npz"; [ -f "$S" ] || continue
  read -r STEPS CH SMIN SMAX SNOISE < <($PY -c "
import numpy as np; d = np.load('$S'); np.savez('$W/randn_$n.npz', randn=d['churn_randn'])
print(int(d['num_steps']), float(d['churn_S_churn']), repr(float(d['churn_S_min'])), repr(float(d['churn_S_max'])), repr(float(d['churn_S_noise'])))")
  for v in det churn; do
    X=""; [ $v = churn ] && X="--noise $W/randn_$n.npz --S_churn $CH --S_min $SMIN --S_max $SMAX --S_noise $SNOISE"
    timeout 60 "$T" generate --network "$F/nets/$n/network-snapshot-000000.pkl" --outdir "$W/s_${n}_$v" --seeds 0-1 \
      --steps "$STEPS" --latents "$S" --runtime ort --device cuda --out-npz "$W/s_${n}_$v.npz" --quiet $X \
      && cmp_npz "$n sampler $v" ort-cuda $TOL_SAMPLER "$W/s_${n}_$v.npz" "$S" x ${v}_out \
      || echo -e "$n sampler $v\tort-cuda\t-\t$TOL_SAMPLER\tFAIL (did not run)" | tee -a "$OUT/parity.tsv"
  done
done

echo "== 5. FID Inception features on ort CUDA vs the fixture (mu abs $TOL_MU, sigma diagonal abs $TOL_SIGMA)"
if [ -f "$STAGE/inception_random.pth" ]; then
  $PY -c "
import numpy as np; d = np.load('$F/fid/inception/inputs.npz')
np.savez('$W/images32.npz', samples=d['images32'].transpose(0, 2, 3, 1))"
  for RT in ort tch; do
    timeout 120 "$T" fid ref --data "$W/images32.npz" --dest "$W/ref_$RT.npz" --detector "$STAGE/inception_random.pth" --runtime $RT --device cuda \
      && $PY - "$W/ref_$RT.npz" "$F/fid/inception/expected.npz" $RT <<PY | tee -a "$OUT/parity.tsv"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
em = np.abs(a["mu"] - b["mu"]).max(); es = np.abs(np.diag(a["sigma"]) - b["sigma_diag"]).max()
ok = em <= $TOL_MU and es <= $TOL_SIGMA
print(f"inception mu/sigma_diag (abs)\t{sys.argv[3]}-cuda\t{em:.2e}/{es:.2e}\t$TOL_MU/$TOL_SIGMA\t{'pass' if ok else 'FAIL'}")
PY
  done
else
  echo "SKIPPED: $STAGE/inception_random.pth not staged"
fi
echo "parity done after $(( $(date +%s) - START )) s"

echo "== 6. throughput (full-size CIFAR-10 DDPM++, random weights; 35 NFE = 18 Heun steps; batch 256)"
printf "row\tvalue\tnotes\n" > "$OUT/throughput.tsv"
row() { echo -e "$1\t$2\t$3" | tee -a "$OUT/throughput.tsv"; }
el() { $PY -c "import sys,time;print(round(time.time()-float(sys.argv[1]),3))" "$1"; }
# the full-size snapshot: a few training steps of tiw train (writes a .safetensors snapshot)
$PY -c "
import numpy as np, zipfile, io, json
from PIL import Image
r = np.random.default_rng(0)
with zipfile.ZipFile('$W/d32.zip', 'w', zipfile.ZIP_STORED) as z:
    for i in range(256):
        b = io.BytesIO(); Image.fromarray(r.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(b, 'png')
        z.writestr(f'00000/img{i:08d}.png', b.getvalue())
    z.writestr('dataset.json', json.dumps({'labels': None}))"
FP16FLAG=""; has_flag train --fp16 && FP16FLAG=yes
for fp in 0 1; do
  X=""; [ -n "$FP16FLAG" ] && X="--fp16 $fp"
  [ $fp = 1 ] && [ -z "$FP16FLAG" ] && { row "train steps/s batch 64 --fp16 1" - "tiw train has no --fp16"; continue; }
  t0=$(date +%s.%N)
  timeout 150 "$T" train --data "$W/d32.zip" --outdir "$W/runs$fp" --run-dir "$W/run$fp" --precond edm --batch 64 \
    --duration 0.00128 --tick 0.64 --snap 0 --dump 0 --device cuda --quiet $X > "$W/train$fp.log" 2>&1
  grep -E "tick|rror" "$W/train$fp.log" | cut -c1-160 | tail -3
  # 20 steps of 64 images; the tick lines carry sec/kimg, the wall time includes start-up
  row "train batch 64 --fp16 $fp (20 steps incl. start-up)" "$(el $t0) s" "see train$fp.log tick lines for sec/kimg"
  cp "$W/train$fp.log" "$OUT/" 2>/dev/null
done
SNAP=$(ls "$W"/run0/network-snapshot-*.safetensors 2>/dev/null | tail -1)
if [ -z "$SNAP" ]; then
  echo "no snapshot from tiw train: throughput rows skipped"; exit 0
fi
flip_fp16 "$SNAP" "$W/snap_fp16.safetensors"
gen() { # label network extra-flags...
  local lab=$1 net=$2; shift 2
  timeout 100 "$T" generate --network "$net" --outdir "$W/gw" --seeds 0-255 --batch 256 --steps 18 --quiet "$@" >/dev/null 2>&1
  local t0=$(date +%s.%N)
  if timeout 150 "$T" generate --network "$net" --outdir "$W/g_$lab" --seeds 0-1023 --batch 256 --steps 18 --quiet "$@" > "$W/gen_$lab.log" 2>&1; then
    local s=$(el $t0); row "sample $lab" "$($PY -c "print(round(1024/$s,1))") img/s" "1024 images, 4 batches of 256, wall incl. start-up and PNG writing"
  else
    row "sample $lab" - "failed: $(tail -1 "$W/gen_$lab.log")"
  fi
}
if has_flag generate --strict-f32; then TS="--strict-f32"; TT=""; else TS=""; TT="--allow-tf32"; fi
gen tch-strict-f32 "$SNAP" --runtime tch --device cuda $TS
gen tch-tf32 "$SNAP" --runtime tch --device cuda $TT
gen tch-fp16 "$W/snap_fp16.safetensors" --runtime tch --device cuda $TT
"$T" export "$SNAP" "$W/snap.onnx" >/dev/null && gen ort-cuda-f32 "$W/snap.onnx" --runtime ort --device cuda
if has_flag export --precision; then
  "$T" export "$SNAP" "$W/snap16.onnx" --precision fp16 >/dev/null && gen ort-cuda-fp16 "$W/snap16.onnx" --runtime ort --device cuda
else
  row "sample ort-cuda-fp16" - "tiw export has no --precision"
fi
# PyTorch eager, the official sampler loop (EDM generate.py's Heun steps) on the baseline's
# DDPM++ module (benches/pytorch_baseline.py), same weights, same GPU, default precision
# (cuDNN TF32 allowed, matmul TF32 off) and with use_fp16-style autocast off/on
$PY - "$SNAP" "$REPO/benches" <<'PY' | tee -a "$OUT/throughput.tsv"
import sys, time, torch
sys.path.insert(0, sys.argv[2])
import pytorch_baseline as pb
net = pb.load_net(sys.argv[1]).cuda().eval().requires_grad_(False)
def sample(latents, steps=18, smin=0.002, smax=80.0, rho=7.0):
    i = torch.arange(steps, dtype=torch.float64, device=latents.device)
    t = (smax ** (1 / rho) + i / (steps - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros_like(t[:1])])
    x = latents.to(torch.float64) * t[0]
    for k in range(steps):
        tc, tn = t[k], t[k + 1]
        d = (x - net(x.float(), tc.float().expand(x.shape[0])).double()) / tc
        xn = x + (tn - tc) * d
        if k < steps - 1:
            d2 = (xn - net(xn.float(), tn.float().expand(x.shape[0])).double()) / tn
            xn = x + (tn - tc) * (0.5 * d + 0.5 * d2)
        x = xn
    return x
g = torch.Generator(device="cuda").manual_seed(0)
for label, amp in [("pytorch-eager-default", False), ("pytorch-eager-fp16-autocast", True)]:
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        lat = torch.randn(256, 3, 32, 32, device="cuda", generator=g)
        sample(lat); torch.cuda.synchronize()
        t0 = time.time()
        for _ in range(4):
            sample(torch.randn(256, 3, 32, 32, device="cuda", generator=g))
        torch.cuda.synchronize()
        print(f"sample {label}\t{1024 / (time.time() - t0):.1f} img/s\t1024 images, network calls only (no PNGs)")
PY
# Inception features: ort CUDA vs PyTorch (random 32×32 images, 1024)
if [ -f "$STAGE/inception_random.pth" ]; then
  $PY -c "
import numpy as np; r = np.random.default_rng(1)
np.savez('$W/imgs1024.npz', samples=r.integers(0, 256, (1024, 32, 32, 3), dtype=np.uint8))"
  "$T" fid stats --images "$W/imgs1024.npz" --dest "$W/st_w.npz" --num 256 --detector "$STAGE/inception_random.pth" --runtime ort --device cuda --batch 256 -q >/dev/null 2>&1
  t0=$(date +%s.%N)
  "$T" fid stats --images "$W/imgs1024.npz" --dest "$W/st.npz" --detector "$STAGE/inception_random.pth" --runtime ort --device cuda --batch 256 -q \
    && row "inception features ort-cuda" "$($PY -c "print(round(1024/$(el $t0),1))") img/s" "1024 images incl. decode/resize and start-up"
else
  row "inception features ort-cuda" - "inception_random.pth not staged"
fi
echo "== done after $(( $(date +%s) - START )) s"
