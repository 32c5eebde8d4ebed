# alternet-pl: every target installs what it needs first and is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCALE ?= smoke
# reproduce-figures: SCALE (a configs/scales/<SCALE>.yaml) trains then draws; RUNS="runs/a runs/b" redraws from existing runs only; OUT is where the report goes;
# DATA_DIR holds cifar-100-python/ (and CIFAR-100-C/) for SCALE=paper
# CLUSTER=slurm submits the runs as a SLURM job array (NODES x GPUS_PER_NODE each, TIME_HOURS limit) and the
# report as a job that waits for it; DRY_RUN=1 prints the sbatch lines instead
CLUSTER ?= local
NODES ?= 1
GPUS_PER_NODE ?= 8
TIME_HOURS ?= 48
RUNS ?=
OUT ?= figures
DATA_DIR ?= data
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install quickstart test test-slow lint bench bench-models bench-gpu bench-gpu-prepare reproduce-figures clean-runs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]" $(TORCH_PINS)
	touch $(STAMP)

quickstart: install
	$(PY) -m alternet_pl.fit --config experiments/quickstart.yaml --config configs/analysis/light.yaml

test: install
	$(PY) -m pytest -q --durations=10

test-slow: install
	$(PY) -m pytest -q -m slow --durations=10

lint: install
	$(PY) -m ruff check alternet_pl tests benchmarks

# `make bench` prints one table and writes it to benchmarks/results/<date>-<machine>.md;
# `make bench QUICK=1` is the < 10 minute version (2 cores); `make bench-gpu` on a GPU machine.
bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,bench]" $(TORCH_PINS)
	$(PY) -m benchmarks.run $(if $(QUICK),--quick)

# every analysis on every kind of model, timed (budget 600 s on 2 cores):
# benchmarks/results/models_x_analyses.md; MODELS=a,b ANALYSES=x,y to filter
bench-models: install
	$(PY) -m benchmarks.models_x_analyses $(if $(MODELS),--models $(MODELS)) $(if $(ANALYSES),--analyses $(ANALYSES))

bench-gpu: install
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,bench]" $(TORCH_PINS)
	bash benchmarks/gpu.sh $(if $(DRY_RUN),--dry-run)

# the pure-Python dependencies of a GPU machine without internet (benchmarks/README.md)
bench-gpu-prepare: install
	bash benchmarks/gpu.sh --prepare benchmarks/.deps

reproduce-figures: install
ifneq ($(strip $(RUNS)),)
	$(PY) -m alternet_pl.report $(RUNS) --out $(OUT)
else
	DATA_DIR=$(DATA_DIR) $(PY) -m alternet_pl.reproduce --scale $(SCALE) --out $(OUT) --cluster $(CLUSTER) \
		--nodes $(NODES) --gpus-per-node $(GPUS_PER_NODE) --time-hours $(TIME_HOURS) $(if $(DRY_RUN),--dry-run)
endif

clean-runs:
	rm -rf runs
