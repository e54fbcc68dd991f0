# `make run` and `make test` work on a fresh clone: both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# stage commands call `python`, `dvc` and `mlflow`: make them the venv's
export PATH := $(BIN):$(PATH)

.PHONY: install run demo plan test test-fast lint bench mlflow-ui clean
# Offline, the data comes from a mirror of the official files (README, "Data"):
# ../shared/datasets beside the clone when it is there and CNNBENCH_DATA_MIRROR is unset.
SHARED_DATASETS := $(abspath $(CURDIR)/../shared/datasets)
ifeq ($(CNNBENCH_DATA_MIRROR),)
ifneq ($(wildcard $(SHARED_DATASETS)),)
export CNNBENCH_DATA_MIRROR := $(SHARED_DATASETS)
endif
endif

install: $(STAMP) .dvc/offline_plots.html

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# the page `dvc plots show` writes, with Vega inlined: charts that draw offline
.dvc/offline_plots.html: $(STAMP)
	$(BIN)/python -m cnnbench.offline_plots

run: install  ## the main job: pull from the DVC remote if any, print the plan, `dvc repro`
	cnnbench run

plan: install  ## what `make run` would run, where, and for how long
	cnnbench plan

demo: install  ## every model for one short epoch, as a temporary DVC experiment (minutes)
	cnnbench demo

test: lint  ## lint, then the whole test suite (CPU, real data)
	python -m pytest

test-fast: lint  ## lint, then the tests not marked slow (a few minutes)
	python -m pytest -m "not slow"

lint: install  ## ruff, with the rules in pyproject.toml (seconds)
	ruff check .

BENCH_OUT ?= benchmarks/results/$(shell hostname)-$(shell date +%Y%m%d).md
bench: install  ## trainer vs plain PyTorch loop, images/s (see benchmarks/throughput.py)
	python benchmarks/throughput.py --trials 3 --out $(BENCH_OUT)

mlflow-ui: install  ## browse runs at http://127.0.0.1:5000 (a new store starts with the runs kept in metrics/mlruns/)
	test -s mlflow.db || cnnbench runs restore  # -s: an empty file holds no runs
	@echo "open http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning (the query keeps MLflow's 'Model training' view)"
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .pytest_cache
