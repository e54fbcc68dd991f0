"""The leaderboard across models: one row per model, budgets judged from the numbers,
accuracy beside its cost (parameters, MACs, checkpoint size, inference speed), and the
few figures per model that `dvc metrics show` compares (metrics/scores/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cnnbench.config import ModelConfig
from cnnbench.files import FileProblem, read_json
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


def leaderboard_row(name: str, cfg: ModelConfig, evaluation: dict, training: dict, inference: dict,
                    kept_runs: set[str] = frozenset()) -> dict:
    acc = evaluation["test_acc"]
    b = cfg.budget
    row = {"model": name, "origin": "seed" if cfg.reported else "cnnbench",
           "arch": cfg.arch, "dataset": cfg.dataset, "test_images": evaluation["test_images"],
           "params": evaluation["params"], "keras_params": evaluation["keras_params"],
           "macs": evaluation["macs"], "epochs": training["epochs"], "test_acc_pct": round(100 * acc, 2),
           "reported_acc_pct": round(100 * cfg.reported.test_acc, 2) if cfg.reported else None,
           "test_time_aug": _test_time_aug(evaluation),
           # counted from 1, as the progress bar and Keras's logs count (0-based in the
           # train JSON, like the curves' epoch column and MLflow's steps)
           "best_epoch": training["best_epoch"] + 1,
           "train_seconds": round(training["seconds"], 1),
           "checkpoint_kb": round(evaluation["checkpoint_bytes"] / 1024, 1),
           # measured by evaluate@ on the device it ran on (inference_device)
           "images_per_s": inference["images_per_s"], "latency_ms": inference["latency_ms_batch1"],
           "inference_device": inference["device_name"],
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


COLUMNS = ["model", "origin", "arch", "dataset", "test_images", "params", "keras_params", "macs", "epochs",
           "test_acc_pct", "test_time_aug", "reported_acc_pct", "diff_vs_reported_pp", "budget_params",
           "budget_epochs", "budget_acc", "best_epoch", "train_seconds", "checkpoint_kb", "images_per_s",
           "latency_ms", "inference_device", "mlflow_run_id", "mlflow_run_kept"]

# what `dvc metrics show` and `dvc metrics diff` compare, one file per model
SCORES = ["test_acc_pct", "params", "macs", "epochs", "train_seconds"]


def build_leaderboard(models: dict[str, ModelConfig], metrics_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """(one row per evaluated model, names of the models not evaluated yet).

    Models without metrics are listed rather than fatal, so that a subset of the
    pipeline (e.g. only the MNIST models, offline) still gets its leaderboard.
    """
    rows, missing = [], []
    kept = kept_run_ids(metrics_dir / "mlruns")
    for name, cfg in models.items():
        out = model_outputs(name, metrics=metrics_dir)
        eval_json, train_json, inference_json = out.eval_metrics, out.train_summary, out.inference
        if not (eval_json.is_file() and train_json.is_file()):
            missing.append(name)
            continue
        evaluation, inference = (read_json(path, f"restore it with `git checkout {path}` or rerun "
                                                 f"`dvc repro evaluate@{name}`")
                                 for path in (eval_json, inference_json))
        training = read_json(train_json, f"restore it with `git checkout {train_json}` or rerun "
                                         f"`dvc repro train@{name}`")
        try:
            rows.append(leaderboard_row(name, cfg, evaluation, training, inference, kept))
        except KeyError as e:
            raise FileProblem(f"{eval_json} or {inference_json} lacks {e}, which the evaluation of "
                              f"this code writes; rerun `dvc repro evaluate@{name}`") from None
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


def scores(frame: pd.DataFrame) -> dict[str, dict]:
    """{model: the figures of SCORES}, as metrics/scores/<model>.json holds them."""
    return dict(zip(frame["model"], frame[SCORES].to_dict("records")))


def pareto_front(cost: pd.Series, acc: pd.Series) -> pd.Series:
    """True for each model that no other beats on both: as accurate or more for as little
    cost or less, and strictly better on one of the two."""
    return pd.Series([not ((cost <= c) & (acc >= a) & ((cost < c) | (acc > a))).any()
                      for c, a in zip(cost, acc)], index=cost.index)


def plot_efficiency(frame: pd.DataFrame, path: Path) -> None:
    """Test accuracy against MACs per image (top) and against parameters (bottom), one
    column per dataset, the Pareto front joined and its models in orange."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(frame["dataset"]))
    costs = {"macs": "multiply-accumulates per image (log scale)",
             "params": "trainable parameters (log scale)"}
    fig, axes = plt.subplots(len(costs), len(datasets), figsize=(6 * len(datasets), 4.5 * len(costs)),
                             squeeze=False)
    for row, (cost, label) in enumerate(costs.items()):
        for ax, dataset in zip(axes[row], datasets):
            part = frame[frame["dataset"] == dataset]
            best = pareto_front(part[cost], part["test_acc_pct"])
            front = part[best].sort_values(cost)
            ax.step(front[cost], front["test_acc_pct"], where="post", color="tab:orange", alpha=0.6,
                    label="Pareto front")
            ax.scatter(part[cost], part["test_acc_pct"], c=["tab:orange" if b else "tab:blue" for b in best])
            for _, r in part.iterrows():
                ax.annotate(r["model"], (r[cost], r["test_acc_pct"]), fontsize=8,
                            xytext=(4, 4), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(dataset)
            ax.grid(alpha=0.3)
            ax.margins(x=0.15, y=0.08)  # room for the names of the outermost models
            ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
