"""What a person looks at in a model's MLflow run after its evaluation: the confusion
matrix as counts and as row-normalised rates, and per-class accuracy, each as a table and
a figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: stages run without a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def confusion_matrix(labels: torch.Tensor, pred: torch.Tensor, classes: list[str]) -> pd.DataFrame:
    """Counts: one row per actual class, one column per predicted class, every class in
    both (a class never predicted is a column of zeros)."""
    n = len(classes)
    counts = torch.bincount(labels.long() * n + pred.long(), minlength=n * n).reshape(n, n)
    frame = pd.DataFrame(counts.numpy(), index=pd.Index(classes, name="actual"), columns=classes)
    frame.columns.name = "predicted"
    return frame


def per_class_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """One row per class: its test images, how many were classified right, the accuracy."""
    images = matrix.sum(axis=1)
    correct = pd.Series([matrix.iat[i, i] for i in range(len(matrix))], index=matrix.index)
    return pd.DataFrame({"class": matrix.index, "images": images.values, "correct": correct.values,
                         "accuracy": (correct / images.where(images > 0)).round(6).values})


def per_class_figure(matrix: pd.DataFrame) -> plt.Figure:
    table = per_class_table(matrix)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(table)), 4))
    bars = ax.bar(table["class"].astype(str), 100 * table["accuracy"], color="tab:blue")
    ax.bar_label(bars, labels=[f"{100 * a:.1f}" for a in table["accuracy"]], fontsize=9)
    low = 100 * table["accuracy"].min()
    ax.set_ylim(max(0, low - 5), 100)  # the differences between classes, not the distance from 0
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy per class")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: pd.DataFrame) -> plt.Figure:
    """Counts on the left; on the right each row divided by its total, so that a class
    with fewer images is read as easily."""
    rates = matrix.div(matrix.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0)
    n = len(matrix)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(5, 0.6 * n) + 2, max(5, 0.6 * n)))
    for ax, values, title, fmt in ((axes[0], matrix, "counts", "{:.0f}"),
                                   (axes[1], rates, "rates (each row sums to 1)", "{:.2f}")):
        ax.imshow(values.to_numpy(dtype=float), cmap="Blues")
        top = float(values.to_numpy().max()) or 1.0
        for i in range(n):
            for j in range(n):
                v = values.iat[i, j]
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")
        ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right")
        ax.set_yticks(range(n), matrix.index)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(title)
    fig.tight_layout()
    return fig
