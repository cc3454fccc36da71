# topk-certify developer commands. `make help` lists them.
# Every target creates or reuses .venv and installs only what is missing (stamp files).

PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP_DEPS := .venv/.stamp-deps
STAMP_EXT  := .venv/.stamp-ext
RUST_SRC   := $(shell find rust -name '*.rs') Cargo.toml pyproject.toml

.DEFAULT_GOAL := help
.PHONY: help test test-rust test-python demo bench wheel clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(PY):
	python3 -m venv .venv

# Test and demo dependencies: numpy at runtime; torch, tqdm, matplotlib, scikit-learn for
# the torch front and the demo; scipy, mpmath, hypothesis, pytest as test references.
$(STAMP_DEPS): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "maturin>=1.9.4,<2" numpy scipy mpmath hypothesis pytest tqdm matplotlib scikit-learn
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch
	touch $@

$(STAMP_EXT): $(STAMP_DEPS) $(RUST_SRC)
	VIRTUAL_ENV=$(CURDIR)/.venv .venv/bin/maturin develop --release -q
	touch $@

test: test-rust test-python  ## run every test (cargo and pytest)

test-rust:  ## cargo tests of the pure Rust core
	cargo test --release -q

test-python: $(STAMP_EXT)  ## pytest suite (builds the extension into .venv first)
	$(PY) -m pytest -q tests

demo: $(STAMP_EXT)  ## train a small model on sklearn digits, certify it (fixed, then adaptive), analyze
	$(PY) -m topk_certify demo
	$(PY) -m topk_certify demo --adaptive

bench: $(STAMP_EXT)  ## benchmarks (each prints ratios measured in one run)
	$(PY) benches/bench_certify_counts.py
	$(PY) benches/bench_sampling.py
	$(PY) benches/bench_adaptive.py

wheel:  ## build the abi3 wheel into dist/
	$(PY) -m pip wheel . --no-deps -w dist

clean:  ## remove build outputs (keeps .venv)
	cargo clean
	rm -f $(STAMP_EXT)
