# duckpacs: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

VENV ?= .venv
PYTHON ?= python3
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)
# DCMTK and Orthanc stall 40 ms per message without it (see docs/ARCHITECTURE.md).
export TCP_NODELAY := 1

.PHONY: help venv build run test test-rust test-python test-dist dist system-deps bench fuzz soak \
	lint fmt clean s3s-fs

help:  ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -U pip 'maturin>=1.5,<2'
	@touch $@

venv: $(VENV)/.created  ## create the virtual environment in .venv

build: venv  ## build the Rust extension (release) and install duckpacs into .venv
	maturin develop --release --extras dev --quiet 2>&1 | { grep -v '^Requirement already satisfied' || true; }

run: build  ## start the archive with embedded defaults (./duckpacs-data, DIMSE 11112, HTTP 8042)
	duckpacs serve

system-deps:  ## install the Debian tools the interop tests use (dcmtk), when root
	@bash scripts/ensure-system-deps.sh

test: build system-deps s3s-fs  ## run every test: cargo test, then pytest
	cargo test --release --quiet -p duckpacs-core
	python -m pytest -q

# The S3 endpoint for the object-storage tests (issue 26): s3s-fs speaks the real S3 protocol
# over a folder. Built once into .cache/ (gitignored); 0.14.1 is the newest that builds with the
# rustc here (0.17 needs 1.96), --locked keeps its dependency versions as published.
S3S_FS := .cache/s3s-fs/bin/s3s-fs
$(S3S_FS):
	cargo install s3s-fs@0.14.1 --locked --features binary --root .cache/s3s-fs --quiet

s3s-fs: $(S3S_FS)  ## build the S3 test endpoint (s3s-fs) once into .cache/s3s-fs

dist: venv  ## the abi3 wheel and the single-file executable dist/duckpacs-<version>-linux-<arch>
	bash scripts/build-dist.sh

# Not part of `make test`: building the executable takes a few minutes. CI runs both.
test-dist: build dist system-deps  ## build the executable, then run it alone from an empty folder
	DUCKPACS_EXECUTABLE=dist/duckpacs python -m pytest -q -m dist tests/executable

test-rust:  ## run only the Rust tests
	cargo test --release --quiet -p duckpacs-core

test-python: build s3s-fs  ## run only the Python tests
	python -m pytest -q

bench: build system-deps  ## run the benchmarks in bench/ (prints ours beside the peer's)
	@for b in bench/bench_*.py; do echo "== $$b"; python $$b || exit 1; done

fuzz: build  ## the long robustness runs of the parser, the network decoders and the web routes
	python -m pytest -q -m slow tests
	DUCKPACS_FUZZ_EXAMPLES=20000 python -m pytest -q tests/test_web_fuzz.py
	cargo test --release --quiet -p duckpacs-core --test fuzz -- --ignored
	cargo test --release --quiet -p duckpacs-core --test fuzz_net -- --ignored

soak: build system-deps  ## 50 SIGKILL cycles during ingest, then 10 minutes of mixed load beside Orthanc
	python -m pytest -q -m soak tests
	python bench/soak_dimse.py --minutes 10

lint: build  ## ruff, mypy, cargo clippy -D warnings, cargo fmt --check
	ruff check python tests bench packaging
	ruff format --check python tests bench packaging
	mypy
	cargo clippy --release --workspace --all-targets -- -D warnings
	cargo fmt --all --check

fmt:  ## format Rust and Python sources
	cargo fmt --all
	ruff format python tests bench packaging
	ruff check --fix python tests bench packaging

clean:  ## remove build artefacts and the virtual environment (not your data)
	cargo clean
	rm -rf $(VENV) dist .pytest_cache .mypy_cache .ruff_cache
