"""The ``cnnbench`` command: ``cnnbench run``, ``plan`` and ``demo`` (the pipeline),
``cnnbench summary <arch>``, ``cnnbench models``, ``cnnbench seeds <model>`` and
``cnnbench runs export|restore|push|park`` and ``cnnbench team-server``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def _seeds(args: argparse.Namespace) -> int:
    from cnnbench.seeds import seed_spread, write_curves
    from cnnbench.store import TrackingError

    try:
        runs, recipes = seed_spread(args.model)
    except TrackingError as e:
        print(f"cnnbench: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.model}: finished runs in the tracking store (test accuracy in %)\n")
    print(runs.to_markdown(index=False) if args.format == "markdown" else runs.to_string(index=False))
    print()
    print(recipes.to_markdown(index=False) if args.format == "markdown" else recipes.to_string(index=False))
    if args.curves:
        for run_id, seed in zip(runs["run_id"], runs["seed"]):
            path = args.curves / f"{args.model}-seed{seed}-{run_id}.csv"
            print(f"{path}: {write_curves(run_id, path)} epochs", file=sys.stderr)
    return 0


def _runs(args: argparse.Namespace) -> int:
    from cnnbench.outputs import METRICS
    from cnnbench.runs import export_runs, leaderboard_runs, park, push_runs
    from cnnbench.store import ARCHIVE, TrackingError, project_root, redact, restore, tracking_uri

    try:
        if args.action == "park":
            state, epochs, run_id = park(args.model)
            kept = f"; its MLflow run {run_id[:8]} so far is in {ARCHIVE}/" if run_id else " (tracking was off)"
            print(f"{args.model}: {epochs} epoch(s) done{kept}. Commit the state beside it, and "
                  f"`dvc repro train@{args.model}` in any clone continues from there, in the same run:\n"
                  f"  git add -f {state} {ARCHIVE} && git commit -m 'park {args.model} after {epochs} epochs'\n"
                  f"(-f: models/ is git-ignored. Leave metrics/curves/ and metrics/timing/ out: they "
                  f"hold the unfinished epochs; the state has them too.)")
            return 0
        if args.action == "push":
            copied = push_runs(args.run_ids)
            print(f"{len(copied)} kept run(s) in {redact(tracking_uri())} (kept id -> id there; cnnbench "
                  f"commands take either):")
            for name, kept, there in copied:
                print(f"  {kept} -> {there}  {name}")
            return 0
        if args.action == "restore":
            count = restore(args.to)
            print(f"{redact(args.to or tracking_uri())}: {count} run(s) restored from {ARCHIVE}/")
            return 0
        # by default the runs the committed metrics name (metrics/train/), those the store has
        named = {r: m for m, r in leaderboard_runs(project_root() / METRICS).items()}
        exported, missing = export_runs(args.run_ids or list(named), skip_missing=not args.run_ids)
        if missing:
            print("not in the tracking store, so not kept: "
                  + ", ".join(f"{named[r]} ({r[:8]})" for r in missing), file=sys.stderr)
    except TrackingError as e:
        print(f"cnnbench: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(exported)} run(s) kept in {ARCHIVE}/: {', '.join(r[:8] for r in exported)}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from cnnbench import CnnbenchError, pipeline
    from cnnbench.plan import plan
    from cnnbench.store import project_root

    root = project_root()
    try:
        if args.command == "plan":
            print(plan(root))
            return 0
        return pipeline.run(root, args.dvc_args) if args.command == "run" else pipeline.demo(root)
    except CnnbenchError as e:  # a bad params.yaml, device: cuda without a GPU
        print(f"cnnbench: error: {e}", file=sys.stderr)
        return 1


def _team_server(args: argparse.Namespace) -> int:
    from cnnbench.team import TeamServerError, serve

    try:
        return serve(args.db, args.artifacts, args.host, args.port, args.workers)
    except TeamServerError as e:
        print(f"cnnbench team-server: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cnnbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="`make run`: pull from the DVC remote if there is one, print the plan, "
                                   "then `dvc repro` (with any arguments given)")
    p.add_argument("dvc_args", nargs=argparse.REMAINDER, metavar="DVC_REPRO_ARGS")
    p.set_defaults(func=_pipeline)
    sub.add_parser("plan", help="what `dvc repro` would run, on which device, and its estimated "
                                "time").set_defaults(func=_pipeline)
    sub.add_parser("demo", help="`make demo`: every model for one short epoch, as a temporary DVC "
                                "experiment").set_defaults(func=_pipeline)
    p = sub.add_parser("summary", help="per-layer table: output shape, params, receptive field, MACs")
    p.add_argument("arch")
    p.add_argument("--dataset", help="input shape of this dataset (default: the arch's own)")
    p.add_argument("--format", choices=["table", "csv", "markdown"], default="table")
    p.set_defaults(func=_summary)
    sub.add_parser("models", help="list the registered architectures").set_defaults(func=_models)
    p = sub.add_parser("seeds", help="a model's finished MLflow runs: mean and spread over seeds")
    p.add_argument("model")
    p.add_argument("--format", choices=["table", "markdown"], default="table")
    p.add_argument("--curves", type=Path, metavar="DIR",
                   help="also write each run's per-epoch metrics to DIR/<model>-seed<N>-<run>.csv")
    p.set_defaults(func=_seeds)
    p = sub.add_parser("runs", help="MLflow runs kept in git (metrics/mlruns/): export, restore, park")
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser("export", help="copy runs from the tracking store into metrics/mlruns/ "
                                          "(default: the runs metrics/train/ names)")
    e.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    r = actions.add_parser("restore", help="build a new SQLite store from metrics/mlruns/")
    r.add_argument("--to", metavar="URI", help="sqlite:///path/to/new.db (default: the project's store)")
    u = actions.add_parser("push", help="copy the runs kept in metrics/mlruns/ into the store MLFLOW_TRACKING_URI "
                                        "names (a team's server): histories, artifacts, models; what is there stays")
    u.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="only these kept runs (default: all)")
    k = actions.add_parser("park", help="keep an unfinished training in git, to continue it on another "
                                        "machine: its MLflow run goes into metrics/mlruns/")
    k.add_argument("model")
    p.set_defaults(func=_runs)
    p = sub.add_parser("team-server", help="an MLflow tracking server for a team: PostgreSQL, accounts, "
                                           "artifacts served by the server (docs/guide.md, 'A team')")
    p.add_argument("--db", required=True, metavar="URI", help="postgresql://user@host:5432/database "
                                                              "(its password in PGPASSWORD or ~/.pgpass)")
    p.add_argument("--artifacts", required=True, type=Path, metavar="DIR", help="where the server keeps artifacts")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this "
                                                       "machine only; 0.0.0.0 for the whole network)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=4)
    p.set_defaults(func=_team_server)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyError as e:
        print(f"cnnbench: error: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
