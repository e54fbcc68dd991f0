"""`make run` and `make demo`: DVC's own commands, with what a person needs around them.

``run``: pull what the DVC remote has (when one is configured), print the plan, train
several models at once where there is room for them (CNNBENCH_JOBS, a GPU), then `dvc
repro`. ``demo``: every model of params.yaml for one epoch on a few thousand images, as a
temporary DVC experiment (`dvc exp run --temp`), so that main's results are not
touched. Ctrl-C or SIGTERM stops DVC and its stage together.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from dvc.repo import Repo

from cnnbench import CnnbenchError
from cnnbench.config import load_params
from cnnbench.plan import plan, stages_to_run
from cnnbench.train import format_duration

DEMO_TRAIN_IMAGES = 1000
DEMO_EXPERIMENT = "cnnbench-demo"  # the MLflow experiment, apart from the real runs


def default_remote(root: Path) -> str | None:
    with Repo(str(root)) as repo:
        return repo.config["core"].get("remote")


def run(root: Path, extra: list[str]) -> int:
    """`dvc repro` with ``extra`` arguments, after a pull from the default remote."""
    load_params(root / "params.yaml")  # a bad params.yaml stops here, before any pull
    jobs = jobs_setting()
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
    stages = stages_to_run(root)
    print(plan(root, stages=stages), flush=True)
    if not extra:
        rc = train_side_by_side(root, jobs, stages)
        if rc != 0:
            return rc
    return _interruptible(["dvc", "repro", *extra], root)


def jobs_setting() -> int:
    """How many trainings `make run` runs at once: ``CNNBENCH_JOBS``, else one on the CPU
    (one training already uses all its cores) and on a GPU one for every two CPU cores
    and every 4 GiB of GPU memory (a small CNN's process needs about one core to launch
    its kernels, and well under 4 GiB)."""
    setting = os.environ.get("CNNBENCH_JOBS", "auto")
    if setting != "auto":
        if not setting.isdigit() or int(setting) < 1:
            raise CnnbenchError(f"CNNBENCH_JOBS={setting!r} is not a number of trainings; give a "
                                f"whole number of 1 or more, or auto (the default)")
        return int(setting)
    if not torch.cuda.is_available():
        return 1
    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    return max(1, min((os.cpu_count() or 2) // 2, int(gpu_gib // 4)))


def train_side_by_side(root: Path, jobs: int, stages: list[str]) -> int:
    """With more than one model to train among ``stages`` (stages_to_run's) and ``jobs``
    above one, run the models' stages
    ``jobs`` at a time: each model's train then evaluate stage, with DVC's own command for
    it (dvc.yaml), recorded with `dvc commit` as soon as it succeeds, as `dvc repro` would
    record it. The data is prepared first, once; the `dvc repro` that follows finds these
    stages up to date and runs the rest. Each model trains in a process of its own in the
    workspace, so its results are those of its own run, and an interrupted training
    continues from its last finished epoch next time.

    Not DVC's queue: its experiments run in copies of the repository, and the stages' plain
    (uncached, non-metric) JSON outputs keep DVC from putting them in its run cache, so
    their results would not come back to the workspace without merging dvc.lock by hand."""
    models = [s.partition("@")[2] for s in stages if s.startswith("train@")]
    jobs = min(jobs, len(models))
    if jobs < 2:
        return 0
    downloads = [s for s in stages if s.startswith("download@")]
    if downloads and (rc := _interruptible(["dvc", "repro", *downloads], root)) != 0:
        return rc
    with Repo(str(root)) as repo:
        commands = {s.addressing: s.cmd for s in repo.index.stages}
    chains = [[s for s in (f"train@{m}", f"evaluate@{m}") if s in stages] for m in models]
    print(f"Training {len(models)} models, {jobs} at a time (CNNBENCH_JOBS); each line is "
          f"prefixed with its stage.", flush=True)
    runner = _SideBySide(root, commands)
    previous = {s: signal.signal(s, runner.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            failed = [chain[0] for chain in pool.map(runner.run_chain, chains) if chain]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if runner.stopped:
        return 130
    if failed:
        print(f"cnnbench: error: {', '.join(failed)} failed (above); the other models' stages are "
              f"recorded in dvc.lock. Fix it, then `make run` again: it runs only what is left.",
              file=sys.stderr)
        return 1
    return 0


class _SideBySide:
    """Runs chains of stages (a model's train, then its evaluate) in parallel threads,
    each stage's output prefixed with its name, each success recorded with `dvc commit`."""

    def __init__(self, root: Path, commands: dict[str, str]):
        self.root, self.commands = root, commands
        self.commit_lock = threading.Lock()  # `dvc commit` takes the repository's lock
        self.procs: list[subprocess.Popen] = []
        self.stopped = False

    def run_chain(self, chain: list[str]) -> list[str]:
        """The chain's stages from the first that failed on (empty: all succeeded)."""
        for i, stage in enumerate(chain):
            if self.stopped or self._run_stage(stage) != 0:
                return chain[i:]
            with self.commit_lock:
                committed = subprocess.run(["dvc", "commit", "--force", "--quiet", stage], cwd=self.root)
            if committed.returncode != 0:
                print(f"[{stage}] `dvc commit {stage}` failed (above)", flush=True)
                return chain[i:]
        return []

    def _run_stage(self, stage: str) -> int:
        proc = subprocess.Popen(self.commands[stage], shell=True, cwd=self.root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        start = time.monotonic()
        print(f"[{stage}] started", flush=True)
        for line in proc.stdout:
            print(f"[{stage}] {line}", end="", flush=True)
        rc = proc.wait()
        took = format_duration(time.monotonic() - start)
        print(f"[{stage}] {'done' if rc == 0 else f'failed (exit {rc})'} after {took}", flush=True)
        return rc

    def stop(self, signum, frame) -> None:
        """Ctrl-C or SIGTERM: every running stage gets SIGINT, as at a terminal (a training
        keeps its finished epochs), and no new stage starts."""
        self.stopped = True
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)


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
