# Two commands work on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision are pinned to the builds on this machine's disk (a CUDA build that
# runs on the CPU); an unpinned torch would download several GB.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast clean slurm-up slurm-down

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dalle3-pipeline $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not dist and not slurm" $(PYTEST_ARGS)

clean:
	rm -rf outputs data/world .pytest_cache

slurm-up:
	bash scripts/slurm_cluster.sh start

slurm-down:
	bash scripts/slurm_cluster.sh stop
