# topk-certify developer commands. `make help` lists them.
# Every target creates or reuses .venv and installs only what is missing (stamp files).

PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP_DEPS := .venv/.stamp-deps
STAMP_EXT  := .venv/.stamp-ext
STAMP_LINT := .venv/.stamp-lint
# Lint tools, pinned: a new release's rules must not fail CI on unchanged code.
LINT_TOOLS := "ruff==0.14.7" "mypy==1.19.0"
PY_SRC     := python tests benches
RUST_SRC   := $(shell find rust -name '*.rs') Cargo.toml pyproject.toml
# pytest processes, each running whole test files (the timing-sensitive CLI tests were
# checked at 2 on 2 cores; more would also compete with each test's own torch threads)
PYTEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help test test-rust test-python lint demo bench wheel clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(PY):
	python3 -m venv .venv

# Test and demo dependencies: numpy at runtime; torch, tqdm, matplotlib, scikit-learn for
# the torch front and the demo; scipy, mpmath, hypothesis, pytest as test references;
# pytest-xdist to run the test files in two processes (most tests wait on subprocesses).
$(STAMP_DEPS): pyproject.toml Makefile | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "maturin>=1.9.4,<2" numpy scipy mpmath hypothesis pytest pytest-xdist tqdm matplotlib scikit-learn
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch
	touch $@

$(STAMP_EXT): $(RUST_SRC) | $(STAMP_DEPS)
	VIRTUAL_ENV=$(CURDIR)/.venv .venv/bin/maturin develop --release -q
	touch $@

$(STAMP_LINT): | $(PY)
	$(PIP) install -q $(LINT_TOOLS)
	rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
	rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
	touch $@

lint: $(STAMP_LINT) $(STAMP_EXT)  ## ruff (lint, format), mypy, stubtest, cargo fmt and clippy
	.venv/bin/ruff check $(PY_SRC)
	.venv/bin/ruff format --check $(PY_SRC)
	.venv/bin/mypy
	$(PY) -m mypy.stubtest topk_certify._core
	cargo fmt --check
	cargo clippy -q --all-targets -- -D warnings
	PYO3_PYTHON=$(CURDIR)/$(PY) cargo clippy -q --all-targets --features python -- -D warnings

test: test-rust test-python  ## run every test (cargo and pytest)

test-rust:  ## cargo tests of the pure Rust core
	cargo test --release -q

test-python: $(STAMP_EXT)  ## pytest suite (builds the extension into .venv first)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

demo: $(STAMP_EXT)  ## train a small model on sklearn digits, certify it (fixed, then adaptive), analyze
	$(PY) -m topk_certify demo
	$(PY) -m topk_certify demo --adaptive

bench: $(STAMP_EXT)  ## benchmarks (each prints ratios measured in one run)
	$(PY) benches/bench_certify_counts.py
	$(PY) benches/bench_sampling.py
	$(PY) benches/bench_adaptive.py
	$(PY) benches/bench_adaptive.py --ceiling
	$(PY) benches/bench_memory.py
	$(PY) benches/bench_throughput.py
	$(PY) benches/bench_memory_adaptive.py

# The wheel links against glibc 2.28's symbol versions (zig supplies that sysroot), so it
# runs on glibc >= 2.28: the first glibc whose exp/log are the FMA code the core was measured
# with (older ones have another implementation). maturin checks the tag; auditwheel must agree.
# The sdist is made on its own: a wheel built from it (`--sdist`) sees the sdist's fixed file
# times, so cargo can take a stale build of older sources for current.
WHEEL_POLICY  := manylinux_2_28
WHEEL_TOOLS   := .venv/.stamp-wheel-tools
WHEEL_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
WHEEL_FILE    := dist/topk_certify-$(WHEEL_VERSION)-cp39-abi3-$(WHEEL_POLICY)_$(shell uname -m).whl
WHEEL_SRC     := $(RUST_SRC) Cargo.lock README.md $(shell find python -name '*.py' -o -name '*.pyi' -o -name py.typed)

$(WHEEL_TOOLS): | $(PY)
	$(PIP) install -q "maturin>=1.9.4,<2" "ziglang==0.17.1" "auditwheel>=6.1"
	touch $@

wheel: $(WHEEL_FILE)  ## build the manylinux abi3 wheel (and the sdist) into dist/, audited

$(WHEEL_FILE): $(WHEEL_SRC) | $(WHEEL_TOOLS)
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/maturin build --release --zig \
	    --compatibility $(WHEEL_POLICY) --auditwheel check --out dist
	.venv/bin/maturin sdist --out dist
	.venv/bin/auditwheel show $@ | tee dist/auditwheel.txt
	tr -s ' \n' ' ' < dist/auditwheel.txt | grep -q 'constrains the platform tag to "$(WHEEL_POLICY)_' \
	    || { echo "auditwheel does not confirm $(WHEEL_POLICY) for $@" >&2; exit 1; }

clean:  ## remove build outputs (keeps .venv)
	cargo clean
	rm -f $(STAMP_EXT)
