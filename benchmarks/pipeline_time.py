"""The whole default pipeline, timed: `cnnbench run` in a scratch copy of this repository
(a git worktree of HEAD with the prepared data hard-linked into it, so the data stages
are up to date and no model is), every model at its full recipe, tracking on in the
copy's own SQLite store. As `make run` does, several models train at once on a GPU
(CNNBENCH_JOBS).

The report gives the wall time of the whole run and, for each model, its train stage's
wall time split into the epochs (training and the per-epoch test pass, from
metrics/timing/<model>.csv) and the rest (the process's start-up, data loading, saving
and MLflow logging), and its evaluate stage's wall time. Stage times come from the run's
own output: DVC's "Running stage" lines, or the "[stage] started/done" lines of models
trained side by side.

    python benchmarks/pipeline_time.py --out benchmarks/results/<gpu>-pipeline.md
    python benchmarks/pipeline_time.py --tiny --models seed001_mnist mnist_7k  # a dry run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {"epochs": 1, "train_limit": 1000}  # --tiny: each model, as `make demo` trains it


def scratch_copy(parent: Path, models: list[str] | None, tiny: bool) -> Path:
    """A worktree of HEAD holding this checkout's prepared data, params.yaml cut to
    ``models`` and, with ``tiny``, to one short epoch each."""
    copy = parent / "repo"
    subprocess.run(["git", "worktree", "add", "--detach", str(copy), "HEAD"], cwd=REPO, check=True,
                   capture_output=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    if models:
        params["models"] = {name: params["models"][name] for name in models}
        params["evaluation"] = {n: e for n, e in params.get("evaluation", {}).items() if n in models}
        used = {entry.get("dataset", params["defaults"].get("dataset")) for entry in params["models"].values()}
        params["datasets"] = {name: spec for name, spec in params["datasets"].items() if name in used}
    if tiny:
        for entry in params["models"].values():
            entry.update(TINY)
        for how in params.get("evaluation", {}).values():
            how["flip"] = False
    if models or tiny:
        (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in params["datasets"]:
        prepared = REPO / "data" / name
        if not (prepared / "meta.json").is_file():
            sys.exit(f"pipeline_time: data/{name} is not prepared in {REPO}: run `dvc repro "
                     f"download@{name}` (or bring it over) first; this check times training, not downloads")
        shutil.copytree(prepared, copy / "data" / name, copy_function=os.link)
    # into the copy's own DVC cache; dvc.lock unchanged says the data and its code are HEAD's
    subprocess.run(["dvc", "commit", "--force", "--quiet", *(f"download@{d}" for d in params["datasets"])],
                   cwd=copy, check=True)
    if subprocess.run(["git", "diff", "--quiet", "dvc.lock"], cwd=copy).returncode != 0:
        sys.exit("pipeline_time: the prepared data is not what HEAD's dvc.lock records; run "
                 "`dvc repro` of the download stages and commit dvc.lock first")
    return copy


def timed_run(copy: Path) -> tuple[float, list[tuple[float, str]]]:
    """`cnnbench run` in ``copy``: its wall time and its output lines, each with the
    seconds since the start."""
    env = {**os.environ, "PYTHONPATH": str(copy / "src"), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the copy's own SQLite store
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from cnnbench.cli import main; "
                             "sys.exit(main(['run']))"], cwd=copy, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append((time.monotonic() - start, line.rstrip("\n")))
    if proc.wait() != 0:
        sys.exit(f"pipeline_time: `cnnbench run` failed (exit {proc.returncode}); its output is above")
    return time.monotonic() - start, lines


def stage_times(lines: list[tuple[float, str]], wall: float) -> dict[str, float]:
    """{stage: wall seconds} from DVC's "Running stage 'X'" lines (a stage ends where the
    next begins) and the side-by-side "[X] started" / "[X] done" lines."""
    times, started, current = {}, {}, None
    for t, line in lines:
        if m := re.match(r"Running stage '([^']+)'", line):
            if current:
                times[current] = t - started[current]
            current = m.group(1)
            started[current] = t
        elif m := re.match(r"\[([^\]]+)\] (started|done after|failed)", line):
            stage, event = m.groups()
            if event == "started":
                started[stage] = t
            else:
                times[stage] = t - started[stage]
    if current:
        times[current] = wall - started[current]
    return times


def report(copy: Path, wall: float, times: dict[str, float], command: str, jobs: str) -> str:
    import torch

    models = yaml.safe_load((copy / "params.yaml").read_text())["models"]
    rows = []
    for name in models:
        timing = pd.read_csv(copy / "metrics" / "timing" / f"{name}.csv")
        train_s = times.get(f"train@{name}", float("nan"))
        rows.append({"model": name, "epochs": len(timing), "train stage s": round(train_s, 1),
                     "epochs s": round(timing["seconds"].sum(), 1),
                     "start-up, saving, logging s": round(train_s - timing["seconds"].sum(), 1),
                     "evaluate stage s": round(times.get(f"evaluate@{name}", float("nan")), 1)})
    table = pd.DataFrame(rows)
    data_s = sum(s for stage, s in times.items() if stage.startswith("download@"))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return (f"command: `{command}`\n\n"
            f"device: {device}, {os.cpu_count()} CPU cores; torch {torch.__version__}; "
            f"trainings at once: CNNBENCH_JOBS={jobs}; tracking: SQLite (the copy's mlflow.db)\n\n"
            f"**Whole pipeline: {wall:,.0f} s** wall time, data already prepared (download stages "
            f"{data_s:,.0f} s); report stage {times.get('report', float('nan')):,.0f} s. Summed over "
            f"the models: train stages {table['train stage s'].sum():,.0f} s, of which epochs "
            f"{table['epochs s'].sum():,.0f} s; evaluate stages {table['evaluate stage s'].sum():,.0f} s.\n\n"
            + table.to_markdown(index=False) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", help="only these models of params.yaml (default: all)")
    p.add_argument("--tiny", action="store_true", help="one epoch of 1,000 images per model, a "
                   "single-pass evaluation: a dry run of this script")
    p.add_argument("--out", help="also write the report here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline-time-") as tmp:
        try:
            copy = scratch_copy(Path(tmp), args.models, args.tiny)
            wall, lines = timed_run(copy)
            text = report(copy, wall, stage_times(lines, wall),
                          f"python benchmarks/pipeline_time.py {' '.join(sys.argv[1:])}",
                          os.environ.get("CNNBENCH_JOBS", "auto"))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(Path(tmp) / "repo")], cwd=REPO,
                           check=False, capture_output=True)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
