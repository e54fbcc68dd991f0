"""Resume after interruption: in process (Ctrl-C), and by SIGKILL or SIGTERM of a real
`dvc repro`."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cnnbench.config import ModelConfig, load_params
from cnnbench.train import Resume, train
from conftest import make_project, run

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


@pytest.mark.parametrize("sig, status_after_kill", [(signal.SIGKILL, "RUNNING"), (signal.SIGTERM, "KILLED")])
def test_kill_of_dvc_repro_mid_epoch_then_rerun(sig, status_after_kill, tmp_path, datasets_dir, mnist_dir):
    """SIGKILL gives no chance to clean up; SIGTERM closes the MLflow run as KILLED. Either
    way the rerun continues after the last finished epoch, in the same MLflow run."""
    from mlflow.tracking import MlflowClient

    root = tmp_path / "project"
    root.mkdir()
    env, _ = make_project(root, datasets_dir, {"seed002_mnist": CUT})
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
    assert killed.info.status == status_after_kill

    rerun = run(["dvc", "repro", "train@seed002_mnist"], root, env)
    assert "resuming after epoch 1" in rerun.stderr

    reference = train(load_params(root / "params.yaml").models["seed002_mnist"], mnist_dir, progress=False)
    rows = curves.read_text().splitlines()
    assert len(rows) == 4
    assert [float(line.split(",")[4]) for line in rows[1:]] == [r["test_acc"] for r in reference.curves]
    ckpt = torch.load(root / "models/seed002_mnist.pt", weights_only=True)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(ckpt["state_dict"][k], v.cpu()), k
    assert not (root / "models/.resume/seed002_mnist.pt").exists()

    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == ckpt["mlflow_run_id"] == killed.info.run_id
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_acc")] == [0, 1, 2]
