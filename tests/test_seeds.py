"""`cnnbench seeds <model>`: a model's finished runs grouped by recipe, with the mean and
spread over seeds, read back from a real SQLite MLflow store that the tracking code wrote."""

import re
import statistics

import pandas as pd
import pytest

from cnnbench import cli, tracking
from cnnbench.seeds import run_curves, seed_spread
from cnnbench.train import CURVE_COLUMNS
from conftest import log_made_up_evaluation

PARAMS = {"arch": "seed002_mnist", "epochs": 2, "optimizer.lr": 0.003, "augment.shift": 0.0,
          "train_limit": None}


def log_run(name: str, seed: int, final_acc: float, fail: bool = False, **changed) -> str:
    """A run as train and evaluate leave it: params, tags, two epochs, final metrics."""
    params = {**PARAMS, **changed, "seed": seed}
    tags = tracking.run_tags(name, "mnist", "cpu")
    try:
        with tracking.model_run(name, params=params, tags=tags) as run:
            for epoch in range(2):
                run.log_epoch({"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "train_acc": 0.5 + epoch / 10,
                               "test_loss": 0.9 / (epoch + 1), "test_acc": final_acc - (1 - epoch) / 100,
                               "lr": 0.003 / (epoch + 1), "seconds": 4.0}, step=epoch)
            if fail:
                raise RuntimeError("training died")
            log_made_up_evaluation(run, final_acc)
            return run.run_id
    except RuntimeError:
        return ""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path_factory.mktemp('runs') / 'mlflow.db'}")
        mp.setenv("CNNBENCH_TRACKING", "on")
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        ids = {"s0": log_run("seed002_mnist", 0, 0.9940), "s1": log_run("seed002_mnist", 1, 0.9931),
               "s2": log_run("seed002_mnist", 2, 0.9952),
               "shift": log_run("seed002_mnist", 0, 0.9900, **{"augment.shift": 0.1}),
               "failed": log_run("seed002_mnist", 3, 0.5, fail=True),
               "other": log_run("mnist_7k", 0, 0.9951)}
        yield ids


def test_groups_seeds_of_one_recipe_with_mean_and_sd(store):
    runs, recipes = seed_spread("seed002_mnist")
    # the failed run and the other model's run are not counted
    assert len(runs) == 4
    one = recipes.iloc[0]
    assert (one["recipe"], one["runs"], one["seeds"]) == (1, 3, 3)
    assert one["mean_test_acc"] == pytest.approx(statistics.mean([99.40, 99.31, 99.52]), abs=0.005)
    assert one["sd_pp"] == pytest.approx(statistics.stdev([99.40, 99.31, 99.52]), abs=0.005)
    assert (one["min"], one["max"]) == (99.31, 99.52)
    two = recipes.iloc[1]
    assert (two["recipe"], two["runs"], two["differs_from_recipe_1"]) == (2, 1, "augment.shift=0.1")
    assert set(runs.loc[runs["recipe"] == 1, "seed"]) == {"0", "1", "2"}
    assert runs.loc[runs["recipe"] == 2, "run_id"].tolist() == [store["shift"][:8]]
    assert runs["torch_threads"].astype(int).ge(1).all()


def test_curves_come_back_as_the_train_stage_writes_them(store):
    curves = run_curves(store["s1"][:8])
    assert list(curves.columns) == CURVE_COLUMNS
    assert curves["epoch"].tolist() == [0, 1]
    assert curves["test_acc"].tolist() == pytest.approx([0.9831, 0.9931])
    assert curves["lr"].tolist() == pytest.approx([0.003, 0.0015])


def test_cli_prints_tables_and_writes_curves(store, tmp_path, capsys):
    assert cli.main(["seeds", "seed002_mnist", "--format", "markdown", "--curves", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # recipe 1: 3 runs, 3 seeds, mean 99.41
    assert re.search(r"^\|\s+1 \|\s+3 \|\s+3 \|\s+99.41 \|", out, re.MULTILINE), out
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"seed002_mnist-seed{s}-{store[k][:8]}.csv"
                             for k, s in (("s0", 0), ("s1", 1), ("s2", 2), ("shift", 0)))
    assert pd.read_csv(tmp_path / f"seed002_mnist-seed1-{store['s1'][:8]}.csv")["test_acc"].iloc[-1] == 0.9931


def test_a_model_without_runs_is_a_clear_error(store, capsys):
    assert cli.main(["seeds", "cifar_base"]) == 2
    err = capsys.readouterr().err
    assert "no finished, evaluated run of 'cifar_base'" in err and "dvc repro evaluate@cifar_base" in err
