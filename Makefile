# Every target sources scripts/env.sh, which creates the pinned Python venv (libtorch +
# onnxruntime) once and exports LIBTORCH, ORT_DYLIB_PATH, TIW_PY and CARGO_TARGET_DIR.
SHELL := /bin/bash
ENV := set -euo pipefail; . scripts/env.sh;
FIXTURE := tests/fixtures/nets/edm_ddpmpp_r16_uncond/network-snapshot-000000.pkl
DEMO_OUT ?= demo-out

.PHONY: setup build test bench demo clippy fmt

setup:
	@$(ENV) echo "venv: $$TIW_VENV_DIR"; echo "LIBTORCH=$$LIBTORCH"; echo "ORT_DYLIB_PATH=$$ORT_DYLIB_PATH"; echo "CARGO_TARGET_DIR=$$CARGO_TARGET_DIR"

build:
	@$(ENV) cargo build --release

# Tests run in the debug profile (dependencies at opt-level 1). MKL_CBWR=COMPATIBLE: the
# fixtures were made where MKL ran its compatible (non-FMA) SGEMM path; on CPUs where MKL picks
# its FMA kernels, the ill-conditioned guidance gradients move by ~1e-4 (docs/DESIGN.md,
# "Reproducibility"), so parity is checked against the fixtures' own arithmetic.
test:
	@set -euo pipefail; export TIW_TORCH_CHECK=1 MKL_CBWR=$${MKL_CBWR:-COMPATIBLE}; . scripts/env.sh; cargo test --workspace --no-fail-fast 2>&1

# Benchmarks run in release; see benches/ and the README's performance section.
# TIW_TORCH_CHECK=1: the full-torch venv, for the same-run PyTorch eager baselines
# (benches/pytorch_baseline.py).
bench:
	@set -euo pipefail; export TIW_TORCH_CHECK=1; . scripts/env.sh; cargo build --release --bins --benches && cargo bench --bench convert -- --out bench-out && cargo bench --bench models -- --out bench-out && cargo bench --bench train -- --out bench-out && cargo bench --bench fid -- --out bench-out && cargo bench --bench parallel -- --out bench-out && cargo bench --bench dataset -- --out bench-out && cargo bench --bench dg -- --out bench-out

# The main job: the CPU end-to-end TIW-DSM experiment in miniature (tiw demo). Debug build
# (shared with `make test`; libtorch does the heavy lifting), ≤ 10 minutes on 2 cores.
demo:
	@$(ENV) cargo build --bins; \
	"$$CARGO_TARGET_DIR/debug/tiw" demo --outdir $(DEMO_OUT)

clippy:
	@$(ENV) cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
