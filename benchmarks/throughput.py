"""Training throughput: cnnbench's trainer against the loop a user would otherwise write.

The reference is the standard PyTorch recipe: a torchvision-style Dataset that turns
uint8 arrays into PIL images and applies ToTensor + Normalize (plus RandomCrop(padding)
and RandomHorizontalFlip for CIFAR), a DataLoader (num_workers as fits the machine,
pin_memory on a GPU), eager fp32, ``loss.item()`` every step. cnnbench runs its real
``train()`` on the same model, batch size and optimizer, with the split on the device.

Each trial is a fresh subprocess (so its peak RSS is its own), trials alternate
(cnnbench, reference, cnnbench, ...) and the table reports medians. Both sides time one
whole epoch of the same number of synthetic images of the real shape, after
``--warmup-epochs`` untimed ones (use 1 or more on a GPU, where the first epoch pays for
cuDNN autotuning and, with ``--compile``, for compilation).

    python benchmarks/throughput.py --models seed001_mnist cifar_base --trials 3
    python benchmarks/throughput.py --images 50000 --warmup-epochs 1 --compile reduce-overhead
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def synthetic(dataset: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *SHAPES[dataset]), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


def peak_memory() -> dict:
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def run_cnnbench(arch: str, dataset: str, batch: int, images: int, device: str,
                 compile_mode: str, warmup: int) -> dict:
    """cnnbench's own train() on a synthetic split written in the pipeline's format."""
    import numpy as np

    from cnnbench import train as train_module
    from cnnbench.config import ModelConfig
    from cnnbench.data import file_digest, prepare
    from cnnbench.train import train

    augment = {"crop_padding": 4, "flip": True} if dataset == "cifar10" else {}
    with tempfile.TemporaryDirectory() as tmp:
        # prepared as the pipeline prepares an npz data set, checks included
        arrays = {}
        for split, n in (("train", images), ("test", 500)):
            x, y = synthetic(dataset, n, seed=int(split == "test"))
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x.permute(0, 2, 3, 1).squeeze(-1).numpy(), y.numpy()
        npz = Path(tmp) / "synthetic.npz"
        np.savez(npz, **arrays)
        prepare("synthetic", Path(tmp) / "data", npz=npz, sha256=file_digest(npz, "sha256"))
        cfg = ModelConfig(arch=arch, dataset=dataset, epochs=1 + warmup, batch_size=batch,
                          device=device, augment=augment, compile=compile_mode)
        made = []  # the training step train() makes: was it replayed from a CUDA graph?
        make_step = train_module.make_step
        train_module.make_step = lambda *a: made.append(make_step(*a)) or made[-1]
        result = train(cfg, Path(tmp) / "data", progress=False)
    step = "graph" if getattr(made[0], "graph", None) is not None else "eager"
    return {"images_per_s": result.timings[-1]["train_images_per_s"], "step": step, **peak_memory()}


def run_reference(arch: str, dataset: str, batch: int, images: int, device: str,
                  compile_mode: str, warmup: int) -> dict:
    """The plain loop: eager fp32 whatever ``compile_mode`` says (that is cnnbench's)."""
    import numpy as np
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms as T

    from cnnbench.models import create_model

    class ArrayImages(Dataset):  # what torchvision's MNIST/CIFAR10 do in __getitem__
        def __init__(self, x, y, transform):
            self.x, self.y, self.transform = x, y, transform

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.x[i])), int(self.y[i])

    x, y = synthetic(dataset, images)
    arrays = x.permute(0, 2, 3, 1).squeeze(-1).numpy() if dataset == "mnist" else x.permute(0, 2, 3, 1).numpy()
    c = SHAPES[dataset][0]
    tf = [T.ToTensor(), T.Normalize([0.5] * c, [0.25] * c)]
    if dataset == "cifar10":
        tf = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] + tf
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    loader = DataLoader(ArrayImages(np.ascontiguousarray(arrays), y.numpy(), T.Compose(tf)),
                        batch_size=batch, shuffle=True, num_workers=min(4, os.cpu_count() or 1),
                        pin_memory=dev.type == "cuda")
    torch.manual_seed(0)
    model = create_model(arch).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(1 + warmup):  # the last epoch is timed
        start = time.perf_counter()
        running = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            running += loss.item()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return {"images_per_s": round(images / (time.perf_counter() - start), 1), **peak_memory()}


# What each variant runs: the side, cnnbench's compile mode (None: --compile's), its environment
VARIANTS = {
    "reference": ("reference", None, {}),
    "cnnbench": ("cnnbench", None, {}),  # as the pipeline trains: CUDA graphs on a GPU
    "eager": ("cnnbench", "off", {"CNNBENCH_CUDA_GRAPHS": "off"}),  # cnnbench without graphs
    "compile": ("cnnbench", "reduce-overhead", {}),  # torch.compile's own CUDA graphs instead
}


def trial(variant: str, child: list[str], compile_mode: str, warmup: int) -> dict:
    """One timed epoch of ``variant`` in a fresh process."""
    side, mode, env = VARIANTS[variant]
    args = [*child, mode or compile_mode, str(warmup)]
    out = subprocess.run([sys.executable, __file__, "--child", side, *args], check=True,
                         capture_output=True, text=True, env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["seed001_mnist", "seed002_mnist", "cifar_base",
                                                    "seed000_sep", "seed001_sep", "seed003_sep", "seed004_sep"])
    p.add_argument("--batch", nargs="+", default=["model"], help="batch sizes: numbers, or model "
                   "(each model's in params.yaml; the default)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["cnnbench", "reference"],
                   help="cnnbench: the trainer as the pipeline runs it (CUDA graphs on a GPU); eager: "
                   "without graphs; compile: torch.compile reduce-overhead; reference: the plain loop")
    p.add_argument("--images", type=int, default=6400, help="images per timed epoch")
    p.add_argument("--trials", type=int, default=3, help="trials per variant, alternating")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="off", help="cnnbench's torch.compile mode (off, default, "
                   "reduce-overhead, max-autotune)")
    p.add_argument("--warmup-epochs", type=int, default=0, help="untimed epochs before the timed one")
    p.add_argument("--out", help="also write the markdown table here")
    p.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        side, arch, dataset, batch, images, device, compile_mode, warmup = args.child
        fn = run_cnnbench if side == "cnnbench" else run_reference
        print(json.dumps(fn(arch, dataset, int(batch), int(images), device, compile_mode, int(warmup))))
        return

    from cnnbench.config import load_params
    from cnnbench.models import model_dataset

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml").models
    rows = []
    for name in args.models:
        cfg = params[name]
        for batch in (cfg.batch_size if b == "model" else int(b) for b in args.batch):
            rows.append(measure(name, cfg.arch, model_dataset(cfg.arch), batch, args))
            print(rows[-1], flush=True)

    on_gpu = torch.cuda.is_available() and args.device != "cpu"
    device = torch.cuda.get_device_name() if on_gpu else (platform.processor() or platform.machine())
    header = (f"command: `python benchmarks/throughput.py {' '.join(sys.argv[1:])}`\n\n"
              f"device: {device}, {os.cpu_count()} CPU cores; torch {torch.__version__}, "
              f"python {platform.python_version()}; {args.trials} alternating trial(s) per variant, "
              f"medians; synthetic images of the real shape\n\n")
    print_table(header, rows, args.out)


def measure(name: str, arch: str, dataset: str, batch: int, args: argparse.Namespace) -> dict:
    """One table row: each variant's images/s, its ratio to the reference, peak memory."""
    images = max(args.images, 4 * batch)
    # the arch's own dataset: synthetic images need its shape, which a declared dataset
    # such as cifar10_recovered shares but does not name
    child = [arch, dataset, str(batch), str(images), args.device]
    results = {variant: [] for variant in args.variants}
    for _ in range(args.trials):
        for variant in results:  # A B A B: drift in the machine hits every variant alike
            results[variant].append(trial(variant, child, args.compile, args.warmup_epochs))
    row = {"model": name, "batch": batch, "images": images}
    for variant, rs in results.items():
        row[f"{variant} img/s"] = statistics.median(r["images_per_s"] for r in rs)
    if "reference" in results:
        for variant in (v for v in results if v != "reference"):
            row[f"{variant}/reference"] = round(row[f"{variant} img/s"] / row["reference img/s"], 2)
    for variant, rs in results.items():
        memory = "peak_gpu_mb" if "peak_gpu_mb" in rs[0] else "peak_rss_mb"
        row[f"{variant} {'GPU' if memory == 'peak_gpu_mb' else 'RSS'} MB"] = statistics.median(r[memory] for r in rs)
        if "step" in rs[0]:
            row[f"{variant} step"] = rs[0]["step"]
    return row


def print_table(header: str, rows: list[dict], out: str | None) -> None:
    """``rows`` as a markdown table under ``header``: printed, and written to ``out`` if given."""
    import pandas as pd

    table = header + pd.DataFrame(rows).to_markdown(index=False) + "\n"
    print(table)
    if out:
        Path(out).write_text(table)


if __name__ == "__main__":
    main()
