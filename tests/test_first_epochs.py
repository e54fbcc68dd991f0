"""benchmarks/first_epochs.py: short probe trainings on real MNIST, as docs/results.md cites them."""

import json

import pandas as pd

from conftest import REPO, run, stage_workdir, venv_env

SCRIPT = str(REPO / "benchmarks" / "first_epochs.py")


def probe(workdir, *args, check=True):
    return run(["python", SCRIPT, "seed002_mnist", "--epochs", "1", "--set", "train_limit=600", *args],
               workdir, venv_env(), check=check)


def test_pixels_over_255_changes_training_and_leaves_the_data_alone(tmp_path, mnist_dir):
    workdir = stage_workdir(tmp_path, mnist_dir, {"seed002_mnist": {}})
    meta_before = (mnist_dir / "meta.json").read_text()
    probe(workdir, "--out", "standard.csv")
    probe(workdir, "--pixels-over-255", "--out", "unit.csv")
    standard, unit = (pd.read_csv(workdir / f) for f in ("standard.csv", "unit.csv"))
    assert list(standard.columns[:5]) == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert len(standard) == len(unit) == 1
    assert standard.train_loss[0] != unit.train_loss[0]  # the inputs differed
    assert (mnist_dir / "meta.json").read_text() == meta_before
    assert json.loads(meta_before)["mean"][0] > 0.1


def test_bad_settings_and_missing_data_are_clear_errors(tmp_path, mnist_dir):
    workdir = stage_workdir(tmp_path, mnist_dir, {"seed002_mnist": {}})
    proc = probe(workdir, "--set", "augment.flipp=true", "--out", "x.csv", check=False)
    assert proc.returncode == 2 and "--set 'augment.flipp=true': expected KEY=VALUE" in proc.stderr
    proc = probe(workdir, "--set", "augment.flip=maybe", "--out", "x.csv", check=False)
    assert proc.returncode == 2 and "augment" in proc.stderr and "Traceback" not in proc.stderr
    proc = probe(workdir, "--set", "dataset=cifar10", "--out", "x.csv", check=False)
    assert proc.returncode == 2 and "Run `dvc repro download@cifar10` first" in proc.stderr
    assert not (workdir / "x.csv").exists()
