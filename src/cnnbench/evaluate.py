"""Scoring a model on a split: loss and accuracy (also per epoch during training), and the
final test metrics, per-class accuracy, confusion and mistakes of a trained model."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cnnbench.loader import DeviceSplit
from cnnbench.summary import count_params

EVAL_BATCH = 1000


@torch.no_grad()
def evaluate_split(model: nn.Module, split: DeviceSplit) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predicted labels) over a whole split, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=split.device)
    preds = []
    for x, y in split.batches(EVAL_BATCH):
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    acc = (pred == split.labels).float().mean()
    return loss_sum.item() / len(split), acc.item(), pred.cpu()


def evaluate_model(model: torch.nn.Module, ckpt: dict, test: tuple[torch.Tensor, torch.Tensor],
                   flip: bool = False):
    """(metrics, predictions, (images, labels), classes) of a model loaded by
    ``load_checkpoint`` on the ``test`` split (images, labels).

    With ``flip``, the predictions (and test_acc, errors, per-class accuracy) average
    each image with its mirror image; test_acc_single_pass and test_loss stay those of
    the plain forward pass, so the two can be compared.
    """
    device = next(model.parameters()).device
    images, labels = test
    split = DeviceSplit(images, labels, ckpt["mean"], ckpt["std"], device)
    loss, single_pass_acc, pred = evaluate_split(model, split)
    if flip:
        pred = flip_averaged_predictions(model, split)
    classes = ckpt["classes"]
    per_class = {}
    for i, name in enumerate(classes):
        mask = labels == i
        per_class[name] = round((pred[mask] == i).float().mean().item(), 6) if mask.any() else None
    trainable, keras_total = count_params(model)
    metrics = {"test_acc": round((pred == labels).float().mean().item(), 6),
               "test_acc_single_pass": round(single_pass_acc, 6),
               "test_time_aug": "flip" if flip else "none", "test_loss": round(loss, 6),
               "errors": int((pred != labels).sum()), "test_images": len(labels),
               "params": trainable, "keras_params": keras_total, "per_class_acc": per_class}
    return metrics, pred, (images, labels), classes


@torch.no_grad()
def flip_averaged_predictions(model: torch.nn.Module, split: DeviceSplit) -> torch.Tensor:
    """Labels predicted from the mean softmax of each image and its left-right mirror."""
    model.eval()
    preds = [(model(x).softmax(1) + model(x.flip(3)).softmax(1)).argmax(1)
             for x, _ in split.batches(EVAL_BATCH)]
    return torch.cat(preds).cpu()


def confusion_rows(labels: torch.Tensor, pred: torch.Tensor, classes: list[str]):
    """One row per test image (a DataFrame), as DVC's confusion template expects."""
    import pandas as pd

    names = pd.Series(classes)
    return pd.DataFrame({"actual": names[labels.numpy()].to_numpy(),
                         "predicted": names[pred.numpy()].to_numpy()})


def plot_misclassified(images: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor,
                       classes: list[str], path: Path, limit: int = 40) -> None:
    """A grid of the first ``limit`` misclassified test images, true -> predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = torch.nonzero(pred != labels).flatten()[:limit]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist()):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray")
        ax.set_title(f"{classes[labels[i]]} -> {classes[pred[i]]}", fontsize=7, color="crimson")
    fig.suptitle(f"misclassified test images (true -> predicted): {len(wrong)} shown of "
                 f"{int((pred != labels).sum())}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
