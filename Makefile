# alternet-pl: every target installs what it needs first and is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCALE ?= smoke
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install quickstart test test-slow lint bench reproduce-figures clean-runs

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

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,bench]" $(TORCH_PINS)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

reproduce-figures: install
	$(PY) -m alternet_pl.report --scale $(SCALE)

clean-runs:
	rm -rf runs
