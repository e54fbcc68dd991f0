"""A seed's Keras training log beside our per-epoch curves, to see where a reproduction
parts from the seed (``python -m cnnbench.seedlog SEED_FILE CURVES_CSV``).

The seed files hold Keras's progress lines, one per epoch:
``... - loss: 0.4212 - acc: 0.8498 - val_loss: 0.5016 - val_acc: 0.8350``. A file can
hold several trainings (seed 001: its MNIST net, then its CIFAR net); each starts at
"Epoch 1/N", and the last one is the seed's own model. Keras's val_* is the test set.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

_EPOCH_LINE = re.compile(r"loss: ([\d.e-]+) - acc(?:uracy)?: ([\d.]+) - "
                         r"val_loss: ([\d.e-]+) - val_acc(?:uracy)?: ([\d.]+)")
COLUMNS = ["train_loss", "train_acc", "test_loss", "test_acc"]


def read_keras_log(path: Path) -> list[pd.DataFrame]:
    """Every training in the file, in order: one row per epoch, epoch counted from 0 as in
    metrics/curves/."""
    text = Path(path).read_text()
    trainings = []
    for block in re.split(r"Epoch 1/\d+", text)[1:]:
        rows = [[float(v) for v in m.groups()] for m in _EPOCH_LINE.finditer(block)]
        if rows:
            trainings.append(pd.DataFrame(rows, columns=COLUMNS).rename_axis("epoch").reset_index())
    if not trainings:
        raise ValueError(f"{path}: no Keras epoch lines ('loss: .. - acc: .. - val_loss: .. - "
                         f"val_acc: ..') found; is this a seed training log?")
    return trainings


def compare(seed: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Per epoch, the seed's and our accuracies and ours minus the seed's (fractions)."""
    both = seed.merge(ours, on="epoch", suffixes=("_seed", "_ours"))
    for col in ("train_acc", "test_acc"):
        both[f"{col}_diff"] = both[f"{col}_ours"] - both[f"{col}_seed"]
    return both[["epoch", "train_acc_seed", "train_acc_ours", "train_acc_diff",
                 "test_acc_seed", "test_acc_ours", "test_acc_diff"]]


def summarize(table: pd.DataFrame, from_epoch: int) -> dict:
    """Ours minus the seed's test accuracy from ``from_epoch`` (0-based) on, in percentage
    points; and how far each run's test accuracy moves from one epoch to the next (mean
    absolute change),
    which tells a noisier evaluation apart from a slower or faster learner."""
    since = table.epoch >= from_epoch
    diff = 100 * table.loc[since, "test_acc_diff"]
    swing = 100 * table[["test_acc_seed", "test_acc_ours"]].diff().abs()[since].mean()
    last = table.iloc[-1]
    figures = {"mean_pp": diff.mean(), "sd_pp": diff.std(), "max_abs_pp": diff.abs().max(),
               "final_train_gap_pp": 100 * last.train_acc_diff,
               "final_test_gap_pp": 100 * last.test_acc_diff,
               "swing_seed_pp": swing.test_acc_seed, "swing_ours_pp": swing.test_acc_ours}
    return {"epochs": len(diff)} | {k: round(float(v), 2) for k, v in figures.items()}


def plot(table: pd.DataFrame, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    epochs = table.epoch + 1  # as Keras prints them
    for col, style in (("train", "--"), ("test", "-")):
        ax.plot(epochs, 100 * table[f"{col}_acc_seed"], style, color="tab:gray", label=f"seed {col}")
        ax.plot(epochs, 100 * table[f"{col}_acc_ours"], style, color="tab:blue", label=f"ours {col}")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("seed_file", type=Path, help="e.g. ../shared/seeds/001_ae77fa9c2fa4d891.txt")
    parser.add_argument("curves", type=Path, help="e.g. metrics/curves/seed001_sep.csv")
    parser.add_argument("--training", type=int, default=-1,
                        help="which training of the file, 0-based (default: the last)")
    parser.add_argument("--from-epoch", type=int, default=0, help="summarize from this epoch (0-based)")
    parser.add_argument("--plot", type=Path, help="write the curves side by side to this PNG")
    args = parser.parse_args(argv)
    trainings = read_keras_log(args.seed_file)
    table = compare(trainings[args.training], pd.read_csv(args.curves))
    print(table.round(4).to_string(index=False))
    print(summarize(table, args.from_epoch))
    if args.plot:
        plot(table, f"{args.curves.stem}: ours vs {args.seed_file.name}", args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
