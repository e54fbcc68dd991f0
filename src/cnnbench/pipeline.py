"""`make run` and `make demo`: DVC's own commands, with what a person needs around them.

``run``: pull what the DVC remote has (when one is configured), print the plan, then
`dvc repro`. ``demo``: every model of params.yaml for one epoch on a few thousand images,
as a temporary DVC experiment (`dvc exp run --temp`), so that main's results are not
touched. Ctrl-C or SIGTERM stops DVC and its stage together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cnnbench.config import load_params
from cnnbench.plan import plan
from cnnbench.train import format_duration

DEMO_TRAIN_IMAGES = 1000
DEMO_EXPERIMENT = "cnnbench-demo"  # the MLflow experiment, apart from the real runs


def default_remote(root: Path) -> str | None:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.config["core"].get("remote")


def run(root: Path, extra: list[str]) -> int:
    """`dvc repro` with ``extra`` arguments, after a pull from the default remote."""
    load_params(root / "params.yaml")  # a bad params.yaml stops here, before any pull
    remote = default_remote(root)
    if remote:
        print(f"Pulling what the DVC remote {remote!r} has, so that nothing it holds is rebuilt:", flush=True)
        # --allow-missing: outputs the remote lacks are what `dvc repro` is for
        rc = _interruptible(["dvc", "pull", "--allow-missing"], root)
        if rc != 0:
            print(f"cnnbench: error: `dvc pull` from the remote {remote!r} failed (above); nothing was "
                  f"run. Fix the remote (`dvc remote list`), or run `dvc repro` to rebuild without it.",
                  file=sys.stderr)
            return rc
    print(plan(root), flush=True)
    return _interruptible(["dvc", "repro", *extra], root)


def demo_overrides(params_file: Path) -> list[str]:
    """`-S` settings: one epoch on the first DEMO_TRAIN_IMAGES images for every model, and
    a single-pass evaluation (test-time augmentation triples its time for no purpose
    here). ``++`` sets a key that an entry inherits from defaults rather than states."""
    params = load_params(params_file)
    settings = []
    for name in params.models:
        settings += ["-S", f"++models.{name}.epochs=1", "-S", f"++models.{name}.train_limit={DEMO_TRAIN_IMAGES}"]
    for name in params.evaluation:
        settings += ["-S", f"++evaluation.{name}.flip=false"]
    return settings


def demo(root: Path) -> int:
    name = time.strftime("demo-%Y%m%d-%H%M%S")
    models = load_params(root / "params.yaml").models
    print(f"Demo: {len(models)} models, one epoch each on {DEMO_TRAIN_IMAGES:,} training images, as the "
          f"temporary DVC experiment {name} (your workspace and main's results stay as they are). "
          f"MLflow experiment: {DEMO_EXPERIMENT}.", flush=True)
    start = time.monotonic()
    env = {**os.environ, "MLFLOW_EXPERIMENT_NAME": DEMO_EXPERIMENT}
    rc = _interruptible(["dvc", "exp", "run", "--temp", "-n", name, *demo_overrides(root / "params.yaml")],
                        root, env)
    if rc != 0:
        return rc
    ref = subprocess.run(["git", "for-each-ref", "--format=%(refname)", f"refs/exps/**/{name}"], cwd=root,
                         capture_output=True, text=True).stdout.split()
    board = subprocess.run(["git", "show", f"{ref[0]}:metrics/leaderboard.md"], cwd=root,
                           capture_output=True, text=True).stdout if ref else ""
    print(f"\nLeaderboard of {name} (one short epoch each: plumbing, not results):\n{board}")
    print(f"Done in {format_duration(time.monotonic() - start)}. See it with `dvc exp show`, "
          f"`dvc metrics diff main {name}`, and `make mlflow-ui` (experiment {DEMO_EXPERIMENT}); "
          f"`dvc exp remove {name}` forgets it.")
    return 0


def _interruptible(cmd: list[str], root: Path, env: dict | None = None) -> int:
    """Run ``cmd`` in a process group of its own; Ctrl-C or SIGTERM stop that whole group
    (DVC and the stage it runs) with SIGINT, as Ctrl-C at a terminal would, even where
    `make` got a SIGTERM that it passes on to its child alone."""
    # Ctrl-C back to its default in the child: a process started with SIGINT ignored (by a
    # shell for a background job, or a test runner) passes that on to DVC and the stage
    proc = subprocess.Popen(cmd, cwd=root, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stopped:  # the stage that was stopped has said what is kept (stages/train.py)
        return 130
    return rc
