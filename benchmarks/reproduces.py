"""Does the code in this tree still produce a model's committed curves? Trains
``models.<name>`` of params.yaml exactly as its train stage would (tracking off), stops
after the first ``--epochs`` epochs, and compares those curve rows with
metrics/curves/<name>.csv, byte for byte. Exit 0 when they are identical, 1 when not.

This is the evidence that a change to a file a train stage depends on cannot move its
results, before `dvc commit train@<name>`: minutes instead of the hours of a full run.
CPU results are bit-reproducible with the same number of threads on the same kind of
processor, so it uses the thread count the committed run recorded (metrics/train/).

    python benchmarks/reproduces.py mnist_7k --epochs 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from cnnbench.config import ConfigError, load_model_config
from cnnbench.data import DataError, load_meta
from cnnbench.train import train


class _Enough(Exception):
    """Raised from on_epoch: the epochs to compare are done."""


def first_rows(name: str, epochs: int, params: str = "params.yaml") -> list[str]:
    """The first ``epochs`` curve rows of the model's full recipe, as CSV lines."""
    cfg = load_model_config(params, name)
    data_dir = Path("data") / cfg.dataset
    load_meta(data_dir)  # names the stage to run when the data is not prepared
    rows: list[dict] = []

    def on_epoch(row: dict, timing: dict) -> None:
        rows.append(row)
        if len(rows) == epochs:
            raise _Enough

    try:
        train(cfg, data_dir, on_epoch=on_epoch, progress=sys.stdout.isatty())
    except _Enough:
        pass
    return pd.DataFrame(rows).to_csv(index=False, lineterminator="\n").splitlines()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, help="default: the committed run's (metrics/train/<model>.json)")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    committed_csv = Path(f"metrics/curves/{args.model}.csv")
    try:
        committed = committed_csv.read_text().splitlines()
        threads = args.threads or json.loads(Path(f"metrics/train/{args.model}.json").read_text())["torch_threads"]
        torch.set_num_threads(threads)
        rows = first_rows(args.model, args.epochs, args.params)
    except (OSError, KeyError, ConfigError, DataError) as e:
        print(f"reproduces: error: {e}", file=sys.stderr)
        return 2
    expected = committed[:len(rows)]
    same = rows == expected
    print(f"{args.model}: the first {len(rows) - 1} epoch(s) at {threads} thread(s) are "
          f"{'byte-identical to' if same else 'DIFFERENT from'} {committed_csv}")
    for line in rows[1:]:
        print(f"  {line}")
    if not same:
        for line in expected[1:]:
            print(f"  committed: {line}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
