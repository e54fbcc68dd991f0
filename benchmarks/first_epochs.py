"""The first few epochs of a model with changed settings: minutes, where a 50-epoch run
takes an hour, to test why a reproduction parts from its seed's log.

Trains ``models.<name>`` of params.yaml with tracking off for ``--epochs`` epochs, with
``--set key=value`` overrides (dotted keys, YAML values), and writes the per-epoch
curves in the metrics/curves/ format, for ``python -m cnnbench.seedlog SEED_FILE CSV``
to set beside the seed's log. ``--pixels-over-255`` feeds the pixels divided by 255
only, as the seeds' Keras template did, instead of standardising them: training reads
the prepared data through a meta.json whose mean is 0 and std 1.

    python benchmarks/first_epochs.py seed000_sep --epochs 4 --set augment.crop_padding=3 \\
        --out benchmarks/results/first-epochs/seed000_sep-crop3-flip.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from pydantic import ValidationError

from cnnbench.config import ModelConfig, load_model_config
from cnnbench.data import DataError, load_meta
from cnnbench.files import write_csv
from cnnbench.train import train


def with_overrides(cfg: ModelConfig, settings: list[str], epochs: int) -> ModelConfig:
    raw = cfg.model_dump()
    for setting in settings:
        key, sep, value = setting.partition("=")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not sep or not isinstance(node, dict) or leaf not in node:
            raise ValueError(f"--set {setting!r}: expected KEY=VALUE with KEY one of the "
                             f"model's settings, e.g. augment.flip=true")
        node[leaf] = yaml.safe_load(value)
    try:
        return ModelConfig.model_validate({**raw, "epochs": epochs})
    except ValidationError as e:
        raise ValueError(f"--set: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None


def pixels_over_255(data_dir: Path, into: Path) -> Path:
    """A view of ``data_dir`` whose normalisation is the identity on pixels / 255."""
    meta = load_meta(data_dir)
    channels = len(meta["mean"])
    meta.update(mean=[0.0] * channels, std=[1.0] * channels)
    (into / "meta.json").write_text(json.dumps(meta))
    for split in ("train.pt", "test.pt"):
        (into / split).symlink_to((data_dir / split).resolve())
    return into


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pixels-over-255", action="store_true")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    try:
        cfg = with_overrides(load_model_config(args.params, args.model), args.set, args.epochs)
        data_dir = Path("data") / cfg.dataset
        load_meta(data_dir)  # names the stage to run when the data is not prepared
    except (ValueError, DataError) as e:  # ConfigError is a ValueError
        print(f"first_epochs: error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        if args.pixels_over_255:
            data_dir = pixels_over_255(data_dir, Path(tmp))
        result = train(cfg, data_dir, progress=sys.stderr.isatty())
    write_csv(args.out, result.curves)
    print(f"{args.out}: {len(result.curves)} epochs, last test_acc {result.curves[-1]['test_acc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
