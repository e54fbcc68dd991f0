"""The leaderboard across models: one row per model, budgets judged from the numbers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cnnbench.config import ModelConfig
from cnnbench.files import read_json
from cnnbench.outputs import model_outputs
from cnnbench.store import ARCHIVE, kept_run_ids


def _verdict(value, op: str, limit, fmt=str) -> str:
    """PASS (value <= limit) or FAIL (value < limit), with the numbers: the verdict and why."""
    ok = value <= limit if op == "<=" else value >= limit
    shown = op if ok else {"<=": ">", ">=": "<"}[op]
    return f"{'PASS' if ok else 'FAIL'} ({fmt(value)} {shown} {fmt(limit)})"


def _test_time_aug(evaluation: dict) -> str:
    """'' for a plain forward pass, else what was averaged and the accuracy without it."""
    tta = evaluation.get("test_time_aug", "none")
    return "" if tta == "none" else f"{tta} ({100 * evaluation['test_acc_single_pass']:.2f}% without)"


def leaderboard_row(name: str, cfg: ModelConfig, evaluation: dict, training: dict,
                    kept_runs: set[str] = frozenset()) -> dict:
    acc = evaluation["test_acc"]
    b = cfg.budget
    row = {"model": name, "origin": "seed" if cfg.reported else "cnnbench",
           "arch": cfg.arch, "dataset": cfg.dataset, "test_images": evaluation["test_images"],
           "params": evaluation["params"], "keras_params": evaluation["keras_params"],
           "epochs": training["epochs"], "test_acc_pct": round(100 * acc, 2),
           "reported_acc_pct": round(100 * cfg.reported.test_acc, 2) if cfg.reported else None,
           "test_time_aug": _test_time_aug(evaluation),
           # counted from 1, as the progress bar and Keras's logs count (0-based in the
           # train JSON, like the curves' epoch column and MLflow's steps)
           "best_epoch": training["best_epoch"] + 1,
           "train_seconds": round(training["seconds"], 1),
           # the MLflow run that holds this model's curves, params and weights
           "mlflow_run_id": training.get("mlflow_run_id") or ""}
    row["mlflow_run_kept"] = "yes" if row["mlflow_run_id"] in kept_runs else "no"
    row["diff_vs_reported_pp"] = (round(row["test_acc_pct"] - row["reported_acc_pct"], 2)
                                  if cfg.reported else None)
    row["budget_params"] = _verdict(row["params"], "<=", b.max_params, "{:,}".format) if b.max_params else ""
    row["budget_epochs"] = _verdict(row["epochs"], "<=", b.max_epochs) if b.max_epochs else ""
    row["budget_acc"] = (_verdict(acc, ">=", b.min_test_acc, lambda v: f"{100 * v:.2f}%")
                         if b.min_test_acc is not None else "")
    return row


COLUMNS = ["model", "origin", "arch", "dataset", "test_images", "params", "keras_params", "epochs", "test_acc_pct",
           "test_time_aug", "reported_acc_pct", "diff_vs_reported_pp", "budget_params", "budget_epochs",
           "budget_acc", "best_epoch", "train_seconds", "mlflow_run_id", "mlflow_run_kept"]


def build_leaderboard(models: dict[str, ModelConfig], metrics_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """(one row per evaluated model, names of the models not evaluated yet).

    Models without metrics are listed rather than fatal, so that a subset of the
    pipeline (e.g. only the MNIST models, offline) still gets its leaderboard.
    """
    rows, missing = [], []
    kept = kept_run_ids(metrics_dir / "mlruns")
    for name, cfg in models.items():
        out = model_outputs(name, metrics=metrics_dir)
        eval_json, train_json = out.eval_metrics, out.train_summary
        if not (eval_json.is_file() and train_json.is_file()):
            missing.append(name)
            continue
        evaluation = read_json(eval_json, f"restore it with `git checkout {eval_json}` or rerun "
                                          f"`dvc repro evaluate@{name}`")
        training = read_json(train_json, f"restore it with `git checkout {train_json}` or rerun "
                                         f"`dvc repro train@{name}`")
        rows.append(leaderboard_row(name, cfg, evaluation, training, kept))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.sort_values(["dataset", "test_acc_pct"], ascending=[True, False], ignore_index=True)
    return frame, missing


def to_markdown(frame: pd.DataFrame, missing: list[str]) -> str:
    # blanks, not nan, where a column does not apply (no reported figure for our models)
    text = frame.astype(object).where(frame.notna(), None).to_markdown(index=False, missingval="") + "\n"
    for dataset, images in frame.groupby("dataset")["test_images"].first().items():
        if dataset.endswith("_recovered"):
            text += (f"\n{dataset}: accuracy measured on {images:,} of the 10,000 official test "
                     f"images (the recovered data set; see params.yaml).\n")
    if frame["test_time_aug"].astype(bool).any():
        text += ("\ntest_time_aug flip: each test image is also classified mirrored left-right and the "
                 "two softmax outputs are averaged (params.yaml, evaluation:).\n")
    text += (f"\nmlflow_run_kept: yes where the MLflow run is kept in git ({ARCHIVE}/), so that any new "
             f"store has it (`cnnbench runs restore`); no where it was lost with the machine that made it. "
             f"{(frame['mlflow_run_kept'] == 'yes').sum()} of {len(frame)} are kept.\n")
    if missing:
        text += f"\nNot trained yet: {', '.join(missing)}\n"
    return text


def plot_accuracy_vs_params(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(frame["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        part = frame[frame["dataset"] == dataset]
        ax.scatter(part["params"], part["test_acc_pct"], color="tab:blue")
        for _, r in part.iterrows():
            ax.annotate(r["model"], (r["params"], r["test_acc_pct"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(dataset)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
