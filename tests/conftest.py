"""Shared fixtures: the real offline datasets and MNIST prepared through the mirror.

The datasets folder is ``CNNBENCH_TEST_DATASETS`` or ``../shared/datasets`` beside the
repository (as on the team's machines and in CI). Its absence is a failure, not a skip:
these tests are about real data.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path:
    path = Path(os.environ.get("CNNBENCH_TEST_DATASETS", REPO.parent / "shared" / "datasets"))
    assert (path / "mnist").is_dir(), (
        f"real datasets not found at {path}; set CNNBENCH_TEST_DATASETS to the folder "
        f"holding mnist/ and cifar10-subset.npz")
    return path.resolve()


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    return shared_datasets()


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory, datasets_dir) -> Path:
    """data/mnist built from the real files through the mirror code path."""
    from cnnbench.data import MIRROR_ENV, prepare

    out = tmp_path_factory.mktemp("data") / "mnist"
    old = os.environ.get(MIRROR_ENV)
    os.environ[MIRROR_ENV] = str(datasets_dir)
    try:
        prepare("mnist", out)
    finally:
        os.environ.pop(MIRROR_ENV) if old is None else os.environ.__setitem__(MIRROR_ENV, old)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this interpreter's bin first (python, dvc,
    mlflow), tracking settings of the developer's shell removed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "DVC_", "CNNBENCH_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True, timeout: int = 600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def mnist_params(models: dict[str, dict]) -> dict:
    """The default params.yaml cut to MNIST and the given {model: overrides}."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"] = {"mnist": params["datasets"]["mnist"]}
    params["models"] = {name: {**params["models"][name], **overrides} for name, overrides in models.items()}
    params["evaluation"] = {name: how for name, how in params["evaluation"].items() if name in models}
    return params


def stage_workdir(root: Path, mnist_dir: Path, models: dict[str, dict]) -> Path:
    """A folder to run stage scripts in: params.yaml and data/mnist, as DVC would see them."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "mnist").symlink_to(mnist_dir)
    (root / "params.yaml").write_text(yaml.safe_dump(mnist_params(models)))
    return root


def make_project(root: Path, datasets_dir: Path, models: dict[str, dict]) -> tuple[dict, callable]:
    """A git + DVC repository holding a copy of the project, cut to the given MNIST
    models; returns the environment to run dvc in and a git helper."""
    import shutil

    for name in ("dvc.yaml", "stages", "src", ".gitignore"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(mnist_params(models), sort_keys=False))
    (root / "metrics" / "mlruns").mkdir(parents=True)  # the report stage reads the runs kept in git
    shutil.copy(REPO / "metrics" / "mlruns" / "README.md", root / "metrics" / "mlruns")
    # PYTHONPATH: the stages import the copy, so the project under test is the copy
    env = venv_env(CNNBENCH_DATA_MIRROR=str(datasets_dir), PYTHONPATH=str(root / "src"))

    def git(*args: str):
        return run(["git", *args], root, env)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "test@example.com")
    git("config", "user.name", "test")
    run(["dvc", "init", "-q"], root, env)
    git("add", "-A")
    git("commit", "-qm", "project")
    return env, git


# a real `mlflow server` on 127.0.0.1 (test_tracking_server, test_archive)
def start_server(db, artifacts, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(artifacts)],
        env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise AssertionError("mlflow server did not start")


def wait_for_epochs(train: subprocess.Popen, curves: Path, n: int, timeout: float = 300) -> None:
    """Until the training process ``train`` has written ``n`` epochs to ``curves``."""
    deadline = time.time() + timeout
    while time.time() < deadline and train.poll() is None:
        if curves.exists() and len(curves.read_text().splitlines()) > n:
            return
        time.sleep(0.2)
    raise AssertionError(f"training did not reach epoch {n}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (a process group of their own)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def rest(url: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}",
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=10).read())


def log_made_up_evaluation(run, test_acc: float) -> None:
    """What evaluate@ logs into a run, for tests of what reads runs back: ten MNIST-like
    classes, every image right but as many as ``test_acc`` leaves wrong."""
    import torch

    labels = torch.arange(1000) % 10
    wrong = round((1 - test_acc) * len(labels))
    pred = labels.clone()
    pred[:wrong] = (pred[:wrong] + 1) % 10
    metrics = {"test_acc": test_acc, "test_acc_single_pass": test_acc, "test_time_aug": "none",
               "test_loss": 0.1, "errors": wrong, "test_images": len(labels), "params": 100,
               "keras_params": 100, "macs": 1000, "checkpoint_bytes": 5000}
    speed = {"device_name": "a test CPU", "images_per_s": 1000.0, "latency_ms_batch1": 1.0}
    run.log_evaluation(metrics, speed, labels, pred, [str(c) for c in range(10)], files=[])
