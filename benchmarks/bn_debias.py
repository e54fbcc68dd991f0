"""Would Keras's debiased BatchNorm statistics change a seed model's early test accuracy?

PyTorch's running mean and variance start at 0 and 1 and move towards each batch's by
``momentum`` (0.01 with Keras defaults), so after t steps a fraction 0.99**t of them is
still the starting value. Keras on TensorFlow debiases them since early 2018
(``zero_debias=True``, keras-team/keras#9003): they hold the weighted mean of the batches' statistics alone. The
same weighted mean can be read back from PyTorch's: (running - 0.99**t * start) /
(1 - 0.99**t). This trains ``models.<name>`` of params.yaml (tracking off) for
``--epochs`` epochs and, after each, scores the test set with both sets of statistics.

    python benchmarks/bn_debias.py seed003_sep --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from cnnbench.config import load_model_config
from cnnbench.data import load_meta, load_split
from cnnbench.loader import DeviceSplit
from cnnbench.train import Resume, build_model, evaluate_split, train


def debias(model: nn.Module) -> None:
    """Replace every BatchNorm's running statistics by their debiased estimate."""
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d) and bn.num_batches_tracked > 0:
            kept = (1 - bn.momentum) ** bn.num_batches_tracked.item()  # share of the start values
            bn.running_mean.copy_(bn.running_mean / (1 - kept))
            bn.running_var.copy_((bn.running_var - kept) / (1 - kept))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    cfg = load_model_config(args.params, args.model).model_copy(update={"epochs": args.epochs, "device": "cpu"})
    data_dir = Path("data") / cfg.dataset
    meta = load_meta(data_dir)
    test = DeviceSplit(*load_split(data_dir, "test"), meta["mean"], meta["std"], torch.device("cpu"))

    with tempfile.TemporaryDirectory() as tmp:
        resume = Resume(Path(tmp) / "state.pt")  # saved after every epoch, before on_epoch

        def score(row: dict, timing: dict) -> None:
            model = build_model(cfg, len(meta["classes"]))
            model.load_state_dict(torch.load(resume.path, weights_only=True)["model"])
            as_trained = evaluate_split(model, test)[:2]
            debias(model)
            debiased = evaluate_split(model, test)[:2]
            print(f"epoch {row['epoch'] + 1}: train acc {row['train_acc']:.4f}; test loss/acc "
                  f"as trained {as_trained[0]:.4f}/{as_trained[1]:.4f}, "
                  f"debiased statistics {debiased[0]:.4f}/{debiased[1]:.4f}", flush=True)

        train(cfg, data_dir, on_epoch=score, progress=False, resume=resume)


if __name__ == "__main__":
    main()
