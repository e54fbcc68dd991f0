"""Resume after interruption: in process (Ctrl-C), by SIGKILL or SIGTERM of a real
`dvc repro`, and on another machine (a git clone) from a training parked in git."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnbench.checkpoints import Resume
from cnnbench.config import ModelConfig, load_model_config
from cnnbench.train import train
from conftest import REPO, make_project, mnist_params, run, stage_workdir, venv_env

pytestmark = pytest.mark.slow  # make test-fast skips it

CUT = {"epochs": 3, "train_limit": 2000, "augment": {"crop_padding": 2, "cutout": 4}}


def cfg(**kw) -> ModelConfig:
    return ModelConfig(arch="seed002_mnist", dataset="mnist", batch_size=64, **{**CUT, **kw})


class Interrupt(KeyboardInterrupt):
    pass


def interrupted(config, mnist_dir, resume, after_epoch):
    def stop(row, timing):
        if row["epoch"] == after_epoch:
            raise Interrupt  # as Ctrl-C would, between two epochs' bookkeeping
    with pytest.raises(Interrupt):
        train(config, mnist_dir, on_epoch=stop, progress=False, resume=resume)


def test_ctrl_c_then_rerun_ends_as_an_uninterrupted_run(mnist_dir, tmp_path):
    reference = train(cfg(), mnist_dir, progress=False)
    resume = Resume(tmp_path / "state.pt", extra={"mlflow_run_id": "r1"})
    interrupted(cfg(), mnist_dir, resume, after_epoch=1)
    state = torch.load(resume.path, weights_only=True)
    assert [r["epoch"] for r in state["curves"]] == [0, 1] and state["extra"] == {"mlflow_run_id": "r1"}

    seen = []
    resumed = train(cfg(), mnist_dir, on_epoch=lambda r, t: seen.append(r["epoch"]), progress=False, resume=resume)
    assert seen == [2]  # no epoch twice, none missing
    assert resumed.curves == reference.curves
    for a, b in zip(resumed.model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not resume.path.exists()  # a finished run leaves nothing to resume from


def test_a_changed_config_starts_fresh(mnist_dir, tmp_path):
    resume = Resume(tmp_path / "state.pt")
    interrupted(cfg(), mnist_dir, resume, after_epoch=0)
    seen = []
    changed = cfg(seed=5)
    result = train(changed, mnist_dir, on_epoch=lambda r, t: seen.append(r["epoch"]), progress=False, resume=resume)
    assert seen == [0, 1, 2]
    assert result.curves == train(changed, mnist_dir, progress=False).curves


def wait_for_process_group(pgid: int, timeout: float) -> None:
    """Wait until no live process is left in process group ``pgid``. DVC exits at once on
    SIGTERM, while the stage's own process (same group) is still closing its MLflow run."""
    def alive() -> bool:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()  # after the command name
            except OSError:
                continue  # ended while we looked
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp; zombies are done
                return True
        return False

    deadline = time.time() + timeout
    while alive():
        assert time.time() < deadline, f"processes of group {pgid} still running after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def reference(mnist_dir, tmp_path_factory):
    """seed002_mnist with CUT trained without interruption: what every resumed run must end as."""
    params = tmp_path_factory.mktemp("reference") / "params.yaml"
    params.write_text(yaml.safe_dump(mnist_params({"seed002_mnist": CUT})))
    return train(load_model_config(params, "seed002_mnist"), mnist_dir, progress=False)


def assert_ends_as(reference, root: Path):
    rows = (root / "metrics/curves/seed002_mnist.csv").read_text().splitlines()
    assert len(rows) == 4
    assert [float(line.split(",")[4]) for line in rows[1:]] == [r["test_acc"] for r in reference.curves]
    ckpt = torch.load(root / "models/seed002_mnist.pt", weights_only=True)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v.cpu()), k
    assert not (root / "models/.resume/seed002_mnist.pt").exists()
    return ckpt


def kill_training_in_epoch_2(root: Path, env: dict, sig: int):
    """Start `dvc repro train@seed002_mnist`, send ``sig`` to it once two epochs are done;
    returns its MLflow run."""
    from mlflow.tracking import MlflowClient

    run(["dvc", "repro", "download@mnist"], root, env)
    curves = root / "metrics/curves/seed002_mnist.csv"
    proc = subprocess.Popen(["dvc", "repro", "train@seed002_mnist"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (curves.exists() and len(curves.read_text().splitlines()) == 3):  # epochs 0 and 1 done
        assert proc.poll() is None and time.time() < deadline, "training ended before the kill"
        time.sleep(0.1)
    time.sleep(1.0)  # into epoch 2
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    wait_for_process_group(proc.pid, timeout=120)
    assert (root / "models/.resume/seed002_mnist.pt").is_file()
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    [killed] = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    return killed


def finished_run(root: Path):
    """The one run of the project's store, which must have all three epochs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    [finished] = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert finished.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(finished.info.run_id, "test_acc")] == [0, 1, 2]
    return finished


@pytest.mark.parametrize("sig, status_after_kill", [(signal.SIGKILL, "RUNNING"), (signal.SIGTERM, "KILLED")])
def test_kill_of_dvc_repro_mid_epoch_then_rerun(sig, status_after_kill, tmp_path, datasets_dir, reference):
    """SIGKILL gives no chance to clean up; SIGTERM closes the MLflow run as KILLED. Either
    way the rerun continues after the last finished epoch, in the same MLflow run."""
    root = tmp_path / "project"
    root.mkdir()
    env, _ = make_project(root, datasets_dir, {"seed002_mnist": CUT})
    killed = kill_training_in_epoch_2(root, env, sig)
    assert killed.info.status == status_after_kill

    rerun = run(["dvc", "repro", "train@seed002_mnist"], root, env)
    assert "resuming after epoch 2" in rerun.stderr  # two epochs were finished
    ckpt = assert_ends_as(reference, root)
    assert finished_run(root).info.run_id == ckpt["mlflow_run_id"] == killed.info.run_id


def test_a_training_parked_in_git_continues_in_a_fresh_clone(tmp_path, datasets_dir, reference):
    """The machine goes away mid-training: `cnnbench runs park` and a commit carry the
    state and the run so far; a clone elsewhere (no data, no store) finishes the same run."""
    root = tmp_path / "project"
    root.mkdir()
    env, git = make_project(root, datasets_dir, {"seed002_mnist": CUT})
    killed = kill_training_in_epoch_2(root, env, signal.SIGTERM)
    parked = run(["cnnbench", "runs", "park", "seed002_mnist"], root, env)
    assert "2 epoch(s) done" in parked.stdout
    git("add", "-f", "models/.resume/seed002_mnist.pt", "metrics/mlruns")
    git("commit", "-qm", "park seed002_mnist")

    clone = tmp_path / "elsewhere"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    assert not (clone / "mlflow.db").exists() and not (clone / "data").exists()
    clone_env = {**env, "PYTHONPATH": str(clone / "src")}
    rerun = run(["dvc", "repro", "train@seed002_mnist"], clone, clone_env)
    assert "resuming after epoch 2" in rerun.stderr  # two epochs were finished
    ckpt = assert_ends_as(reference, clone)
    assert finished_run(clone).info.run_id == ckpt["mlflow_run_id"] == killed.info.run_id


def test_park_without_an_unfinished_training_says_so(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    env, _ = make_project(root, datasets_dir, {"seed002_mnist": CUT})
    parked = run(["cnnbench", "runs", "park", "seed002_mnist"], root, env, check=False)
    assert parked.returncode == 2
    assert "seed002_mnist has no unfinished training here" in parked.stderr
    assert not any((root / "metrics" / "mlruns").glob("[0-9]*"))  # nothing exported


def test_a_state_carried_without_its_run_is_a_clear_error_before_training(tmp_path, mnist_dir):
    """A resume state copied to a machine whose store lacks its MLflow run (parked without
    `cnnbench runs park`, say): the stage says which run and how to get it back or start
    over, trains nothing and keeps the state."""
    root = stage_workdir(tmp_path / "project", mnist_dir, {"seed002_mnist": CUT})
    config = load_model_config(root / "params.yaml", "seed002_mnist")
    state = root / "models/.resume/seed002_mnist.pt"
    interrupted(config, root / "data/mnist", Resume(state, extra={"mlflow_run_id": "0" * 32}), after_epoch=0)
    saved = state.read_bytes()
    env = venv_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'other.db'}")
    proc = run(["python", str(REPO / "stages" / "train.py"), "seed002_mnist"], root, env, check=False)
    assert proc.returncode == 1
    assert (f"MLflow run {'0' * 32} of seed002_mnist is not in sqlite:///{tmp_path / 'other.db'}"
            in proc.stderr), proc.stderr[-2000:]
    assert "cnnbench runs restore" in proc.stderr and "models/.resume/seed002_mnist.pt is deleted" in proc.stderr
    assert state.read_bytes() == saved
    assert not (root / "metrics/curves/seed002_mnist.csv").exists()
