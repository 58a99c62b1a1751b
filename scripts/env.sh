# shellcheck shell=bash
# Idempotent set-up for tiw: source it (`. scripts/env.sh`).
#
# Creates (once) a pinned Python venv at a stable cache path that provides
#   * libtorch (torch==2.13.0, the version tch 0.26 is built against), installed lean:
#     `--no-deps` plus the two CUDA runtime wheels libtorch_cpu.so needs at load time;
#   * onnxruntime==1.31.1 (loaded at run time by ort's `load-dynamic`), onnx and numpy
#     (used by tests to check exported graphs and to read/write fixtures).
# and exports LIBTORCH, ORT_DYLIB_PATH, TIW_PY and a shared CARGO_TARGET_DIR.
#
# TIW_GPU=1 selects the GPU flavour: full torch (with its CUDA wheels) + onnxruntime-gpu.
# TIW_CACHE (default ~/.cache/tiw) moves the venv and target dir; TIW_VENV overrides the venv path.
TORCH_VERSION=2.13.0          # must match tch 0.26.0 (torch-sys build.rs TORCH_VERSION)
ORT_VERSION=1.31.1            # ort 2.0.0-rc.15 feature api-31 needs ORT >= 1.31
TIW_CACHE="${TIW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tiw}"
if [ "${TIW_GPU:-0}" = 1 ]; then _flavor=gpu; else _flavor=cpu; fi
VENV="${TIW_VENV:-$TIW_CACHE/venv-$_flavor-torch$TORCH_VERSION-ort$ORT_VERSION}"
if [ ! -f "$VENV/.complete" ]; then
  echo "tiw setup: creating $VENV (one time, ~1 minute)" >&2
  mkdir -p "$TIW_CACHE" || return 1
  rm -rf "$VENV" && python3 -m venv "$VENV" || return 1
  if [ "$_flavor" = gpu ]; then
    "$VENV/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" "onnxruntime-gpu==$ORT_VERSION" onnx numpy || return 1
  else
    # onnxruntime first: installing it after a --no-deps torch makes pip print a long dependency "ERROR" (exit 0)
    "$VENV/bin/pip" install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION" onnx numpy || return 1
    # --no-deps skips ~2.1 GB of CUDA wheels; libtorch_cpu.so still NEEDs libcudart.so.13 + libcupti.so.13
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION" \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 || return 1
  fi
  touch "$VENV/.complete"
fi
_sp="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || return 1
export LIBTORCH="$_sp/torch"
if [ "$_flavor" = gpu ]; then   # ORT's CUDA provider has no RPATH to the nvidia wheels
  export LD_LIBRARY_PATH="$_sp/nvidia/cu13/lib:$_sp/nvidia/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export ORT_DYLIB_PATH="$_sp/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TIW_CACHE/target}"
export TIW_PY="$VENV/bin/python"
# Interop tests check our .pt/.safetensors output with the real torch.load / safetensors.
# The lean venv cannot `import torch`, so `make test` (TIW_TORCH_CHECK=1) also keeps a
# full-torch venv (~4.7 GB, ~2 min once per machine). The GPU flavour already has one.
if [ "$_flavor" = gpu ]; then
  export TIW_TORCH_PY="$VENV/bin/python"
elif [ "${TIW_TORCH_CHECK:-0}" = 1 ]; then
  _check="$TIW_CACHE/venv-check-torch$TORCH_VERSION"
  if [ ! -f "$_check/.complete" ]; then
    echo "tiw setup: creating $_check for interop tests (one time, ~2 minutes)" >&2
    rm -rf "$_check" && python3 -m venv "$_check" || return 1
    "$_check/bin/pip" install -q --disable-pip-version-check "torch==$TORCH_VERSION" numpy safetensors || return 1
    touch "$_check/.complete"
  fi
  export TIW_TORCH_PY="$_check/bin/python"
  unset _check
fi
# torch-fidelity 0.4.0, the reference of tests/fid_metrics.rs (KID, precision/recall, Inception
# Score): installed --no-deps into the full-torch venv so that it keeps torch 2.13; its package
# imports torchvision (the 0.28.0 build for torch 2.13), tqdm and Pillow, pinned too (Pillow is
# also the reference of tests/dataset_tool.rs's resampling and PNG checks).
if [ "$_flavor" = gpu ] || [ "${TIW_TORCH_CHECK:-0}" = 1 ]; then
  _tf="$(dirname "$TIW_TORCH_PY")"
  if [ ! -f "$_tf/../.torch-fidelity-0.4.0-pillow" ]; then
    "$_tf/pip" install -q --disable-pip-version-check --no-deps torch-fidelity==0.4.0 torchvision==0.28.0 tqdm==4.70.1 pillow==13.0.0 || return 1
    touch "$_tf/../.torch-fidelity-0.4.0-pillow"
  fi
  unset _tf
fi
export TIW_VENV_DIR="$VENV"
unset _sp _flavor
