"""Does a model test lower because its BatchNorm statistics were gathered with dropout on?

Where a Dropout comes before a BatchNorm (seed004_sep: 13 times), training feeds BatchNorm
activations with dropout's extra variance, and its running statistics keep it; evaluation
then normalizes dropout-free activations with them. This trains ``models.<name>`` of
params.yaml (tracking off) for ``--epochs`` epochs and scores the test set twice: as
evaluation does, and with every BatchNorm's statistics recomputed over the training images
with dropout off. Training accuracy is given as the trainer logs it (dropout on, averaged
over the epoch, as Keras logs it) and in evaluation mode over the training images.

    python benchmarks/bn_without_dropout.py seed004_sep --epochs 3 \\
        --out benchmarks/results/bn-without-dropout-seed004_sep-cpu.txt
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from first_epochs import with_overrides
from torch import nn

from cnnbench.config import load_model_config
from cnnbench.data import load_meta, load_split
from cnnbench.evaluate import EVAL_BATCH, evaluate_split
from cnnbench.loader import DeviceSplit
from cnnbench.train import train


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, split: DeviceSplit) -> None:
    """Every BatchNorm's running statistics as the plain average over ``split``, with the
    rest of the model (dropout) in evaluation mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for bn in norms:
        bn._forward_pre_hooks.clear()  # keras_defaults' momentum hook: not wanted here
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
        bn.train()
    for x, _ in split.batches(EVAL_BATCH):
        model(x)
    model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    cfg = with_overrides(load_model_config("params.yaml", args.model), args.set, args.epochs)
    data_dir = Path("data") / cfg.dataset
    meta = load_meta(data_dir)
    result = train(cfg, data_dir, progress=sys.stderr.isatty())
    model = result.model
    device = next(model.parameters()).device
    splits = {name: DeviceSplit(*load_split(data_dir, name), meta["mean"], meta["std"], device)
              for name in ("train", "test")}
    last = result.curves[-1]
    rows = [("train, as logged (dropout on, epoch average)", last["train_acc"]),
            ("train, evaluation mode", evaluate_split(model, splits["train"])[1]),
            ("test, evaluation mode", evaluate_split(model, splits["test"])[1])]
    recompute_batchnorm(model, splits["train"])
    rows.append(("test, BatchNorm recomputed without dropout", evaluate_split(model, splits["test"])[1]))
    rows.append(("train, BatchNorm recomputed without dropout", evaluate_split(model, splits["train"])[1]))
    lines = [f"{' '.join([args.model, *args.set])}, after {len(result.curves)} epochs "
             f"(seed {cfg.seed}, {device}, {torch.get_num_threads()} threads, {platform.machine()}, "
             f"torch {torch.__version__}):"]
    lines += [f"  {what:<45} {100 * acc:6.2f}%" for what, acc in rows]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
