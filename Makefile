# `make run` and `make test` work on a fresh clone: both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# stage commands call `python`, `dvc` and `mlflow`: make them the venv's
export PATH := $(BIN):$(PATH)

.PHONY: install run test lint bench mlflow-ui clean cifar10-recovered
# the offline stand-ins for the downloads (../shared/datasets/README.md)
SHARED_DATASETS ?= $(CURDIR)/../shared/datasets
RECOVERED := data/external/cifar10-recovered.npz

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install  ## the main job: rerun whatever changed in the pipeline
	dvc repro

test: lint  ## lint, then the whole test suite (CPU, real data)
	python -m pytest

lint: install  ## ruff, with the rules in pyproject.toml (seconds)
	ruff check .

cifar10-recovered: $(RECOVERED)  ## join the recovered CIFAR-10 shards (datasets.cifar10_recovered)

$(RECOVERED):
	mkdir -p $(dir $@)
	python3 $(SHARED_DATASETS)/cifar10-recovered/join.py $(@:.npz=.tmp.npz) && mv $(@:.npz=.tmp.npz) $@  # np.savez adds .npz

BENCH_OUT ?= benchmarks/results/$(shell hostname)-$(shell date +%Y%m%d).md
bench: install  ## trainer vs plain PyTorch loop, images/s (see benchmarks/throughput.py)
	python benchmarks/throughput.py --trials 3 --out $(BENCH_OUT)

mlflow-ui: install  ## browse runs at http://127.0.0.1:5000 (a new store starts with the runs kept in metrics/mlruns/)
	test -s mlflow.db || cnnbench runs restore  # -s: an empty file holds no runs
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .pytest_cache
