"""A model's finished MLflow runs side by side: the spread over seeds of one recipe.

The leaderboard shows one run per model; a claim such as "passes over three seeds" rests
on several runs (`dvc exp run -S models.<name>.seed=N`). ``seed_spread`` finds them in
the tracking store, groups those whose params differ in nothing but the seed, and gives
each group's mean and sample standard deviation of the final test accuracy.
``write_curves`` writes a run's per-epoch metrics back out in the metrics/curves/ format.

A model's layers are code, not params: runs of different code under one architecture
name fall in one group, and their ``git_commit`` column is what tells them apart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cnnbench.files import write_csv
from cnnbench.store import TrackingError, connect, experiment_id, full_run_id, redact, tracking_uri
from cnnbench.train import CURVE_COLUMNS

RUN_COLUMNS = ["recipe", "run_id", "seed", "epochs", "test_acc", "test_acc_single_pass",
               "device", "torch_threads", "git_commit", "dvc_exp_name"]


def finished_runs(model: str) -> pd.DataFrame:
    """One row per finished run of ``model`` that was evaluated (has final_test_acc)."""
    import mlflow

    frame = mlflow.search_runs([experiment_id()], order_by=["attributes.start_time ASC"],
                               filter_string=f"tags.model = '{model}' and attributes.status = 'FINISHED'")
    if "metrics.final_test_acc" in frame:
        frame = frame[frame["metrics.final_test_acc"].notna()].reset_index(drop=True)
    if frame.empty or "metrics.final_test_acc" not in frame:
        raise TrackingError(f"no finished, evaluated run of {model!r} in {redact(tracking_uri())}; "
                            f"train and evaluate it with tracking on (`dvc repro evaluate@{model}`)")
    return frame


def seed_spread(model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, recipes): every run with its recipe number, and per recipe the number of
    runs and seeds, mean and sample sd of the final test accuracy (percent). Recipe 1 is
    the one with most runs; each recipe lists the params in which it differs from it."""
    frame = finished_runs(model)
    recipe_params = sorted(c for c in frame if c.startswith("params.") and c != "params.seed")
    keys = frame[recipe_params].fillna("").astype(str).apply(tuple, axis=1)
    order = keys.value_counts(sort=True).index  # most runs first; ties in first-seen order
    frame["recipe"] = keys.map({k: i + 1 for i, k in enumerate(order)})

    def get(column: str) -> pd.Series:
        return frame[column] if column in frame else pd.Series([None] * len(frame))

    runs = pd.DataFrame({
        "recipe": frame["recipe"],
        "run_id": frame["run_id"].str[:8],
        "seed": get("params.seed"),
        "epochs": get("params.epochs"),
        "test_acc": (100 * frame["metrics.final_test_acc"]).round(2),
        "test_acc_single_pass": (100 * get("metrics.test_acc_single_pass").astype(float)).round(2),
        "device": get("tags.device"),
        "torch_threads": get("tags.torch_threads").fillna(""),  # not recorded by older runs
        "git_commit": get("tags.git_commit").str[:7],
        "dvc_exp_name": get("tags.dvc_exp_name").fillna(""),
    })[RUN_COLUMNS].sort_values("recipe", kind="stable")
    first = dict(zip(recipe_params, order[0]))
    recipes = []
    for number, key in enumerate(order, start=1):
        acc = runs.loc[runs["recipe"] == number, "test_acc"]
        seeds = runs.loc[runs["recipe"] == number, "seed"]
        differs = ", ".join(f"{p[len('params.'):]}={v}" for p, v in zip(recipe_params, key)
                            if v != first[p])
        recipes.append({"recipe": number, "runs": len(acc), "seeds": seeds.nunique(),
                        "mean_test_acc": round(acc.mean(), 2),
                        "sd_pp": round(acc.std(), 2) if len(acc) > 1 else "",
                        "min": acc.min(), "max": acc.max(),
                        "differs_from_recipe_1": differs})
    return runs, pd.DataFrame(recipes)


def run_curves(run_id: str) -> pd.DataFrame:
    """A run's per-epoch metrics as the train stage writes them (metrics/curves/)."""
    from mlflow.tracking import MlflowClient

    connect()
    client = MlflowClient()
    run_id = full_run_id(run_id)
    columns = {}
    for key in CURVE_COLUMNS[1:]:
        history = client.get_metric_history(run_id, key)
        columns[key] = pd.Series({m.step: m.value for m in history}, dtype=float)
    curves = pd.DataFrame(columns).dropna().rename_axis("epoch").reset_index()
    if curves.empty:
        raise TrackingError(f"run {run_id} has no per-epoch metrics")
    return curves[CURVE_COLUMNS]


def write_curves(run_id: str, path: Path) -> int:
    """Write ``run_id``'s per-epoch metrics to ``path``; returns the number of epochs."""
    curves = run_curves(run_id)
    write_csv(path, curves)
    return len(curves)
