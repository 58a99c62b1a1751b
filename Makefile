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

# Tests run in the debug profile (dependencies at opt-level 1).
test:
	@set -euo pipefail; export TIW_TORCH_CHECK=1; . scripts/env.sh; cargo test --workspace 2>&1

# Benchmarks run in release; see benches/ and the README's performance section.
bench:
	@$(ENV) cargo build --release --bins --benches && cargo bench --bench convert -- --out bench-out && cargo bench --bench models -- --out bench-out

# Until the full demo lands: convert a shipped EDM snapshot to safetensors and back to .pt,
# inspecting each result.
demo:
	@$(ENV) cargo build --release --bins; \
	tiw="$$CARGO_TARGET_DIR/release/tiw"; mkdir -p $(DEMO_OUT); \
	echo "== inspect the EDM snapshot (nothing in it is executed)"; \
	"$$tiw" inspect $(FIXTURE) --max-rows 8; \
	echo "== convert to safetensors"; \
	"$$tiw" convert $(FIXTURE) $(DEMO_OUT)/edm_ddpmpp_r16.safetensors; \
	"$$tiw" inspect $(DEMO_OUT)/edm_ddpmpp_r16.safetensors --max-rows 8; \
	echo "== and to a torch.load(weights_only=True)-compatible .pt"; \
	"$$tiw" convert $(DEMO_OUT)/edm_ddpmpp_r16.safetensors $(DEMO_OUT)/edm_ddpmpp_r16.pt; \
	"$$tiw" inspect $(DEMO_OUT)/edm_ddpmpp_r16.pt --max-rows 8

clippy:
	@$(ENV) cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
