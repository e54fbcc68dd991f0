"""The ``cnnbench`` command: ``cnnbench summary <arch>`` and ``cnnbench models``."""

from __future__ import annotations

import argparse
import sys


def _summary(args: argparse.Namespace) -> int:
    from cnnbench.data import DATASETS
    from cnnbench.models import create_model, model_dataset
    from cnnbench.summary import summarize

    dataset = args.dataset or model_dataset(args.arch)
    spec = DATASETS[dataset]
    s = summarize(create_model(args.arch, num_classes=len(spec.classes)), spec.input_shape)
    if args.format in ("csv", "markdown"):
        sys.stdout.write(s.to_text(args.format))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.arch} on {dataset} {'x'.join(map(str, spec.input_shape))}")
    for col in s.table.columns:
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in s.table.itertuples(index=False):
        shape = "x".join(map(str, row.output_shape))
        table.add_row(row.layer, row.type, shape, f"{row.params:,}", str(row.receptive_field),
                      str(row.jump), f"{row.macs:,}")
    console = Console()
    console.print(table)
    console.print(f"trainable params: {s.trainable:,}   Keras total: {s.keras_total:,}   "
                  f"MACs: {int(s.table['macs'].sum()):,}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from cnnbench.models import list_models, model_dataset

    for name in list_models():
        print(f"{name}\t{model_dataset(name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="per-layer table: output shape, params, receptive field, MACs")
    p.add_argument("arch")
    p.add_argument("--dataset", help="input shape of this dataset (default: the arch's own)")
    p.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    p.set_defaults(func=_summary)
    sub.add_parser("models", help="list the registered architectures").set_defaults(func=_models)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:
        print(f"cnnbench: error: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
