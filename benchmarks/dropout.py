"""Training-step speed with cnnbench's Dropout (models/layers.py) against nn.Dropout.

For every model with dropout: the same model, batch and Adam step, once with the
registry's layers and once with each ``Dropout`` swapped for ``torch.nn.Dropout`` of the
same rate; trials alternate (cnnbench, torch, cnnbench, ...) in one process and the
table gives medians of images per second over synthetic inputs of the real shape.

    python benchmarks/dropout.py --trials 3 --out benchmarks/results/dropout-cpu-2core.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from cnnbench.data import DATASETS
from cnnbench.models import create_model, model_dataset
from cnnbench.models.layers import Dropout

# (model, the batch size it trains with in params.yaml)
MODELS = [("seed002_mnist", 64), ("cifar_base", 128), ("seed000_sep", 32), ("seed001_sep", 128),
          ("seed003_sep", 1024), ("seed004_sep", 64)]


def with_torch_dropout(model: nn.Module) -> nn.Module:
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))
    return model


def images_per_second(model: nn.Module, batch: int, shape: tuple, images: int) -> float:
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # the first step allocates
    steps = max(3, images // batch)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--images", type=int, default=3072, help="images per timed trial")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for name, batch in MODELS:
        shape = DATASETS[model_dataset(name)].input_shape
        rates = {"cnnbench": [], "torch": []}
        for _ in range(args.trials):
            for side in rates:
                torch.manual_seed(0)
                model = create_model(name)
                if side == "torch":
                    model = with_torch_dropout(model)
                rates[side].append(images_per_second(model, batch, shape, args.images))
        ours, theirs = statistics.median(rates["cnnbench"]), statistics.median(rates["torch"])
        rows.append({"model": name, "batch": batch, "cnnbench Dropout img/s": round(ours, 1),
                     "nn.Dropout img/s": round(theirs, 1), "speed-up": round(ours / theirs, 2)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    text = (f"# cnnbench Dropout vs nn.Dropout, training steps\n\n"
            f"command: `python benchmarks/dropout.py --trials {args.trials} --images {args.images}`\n\n"
            f"device: {platform.machine()}, {torch.get_num_threads()} threads, "
            f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}; torch {torch.__version__}, "
            f"python {platform.python_version()}; {args.trials} alternating trials per side, medians.\n\n"
            f"{table}\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
