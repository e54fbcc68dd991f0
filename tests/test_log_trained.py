"""`python stages/train.py <model> --log-trained`: a model trained with tracking off (as
on a GPU box without mlflow) logged into MLflow afterwards from its DVC outputs, then
evaluated into that same run. Real MNIST, a real SQLite MLflow store."""

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, run, stage_workdir, venv_env

pytestmark = pytest.mark.slow  # make test-fast skips it

NAME = "seed002_mnist"
OUTPUTS = [f"models/{NAME}.pt", f"metrics/curves/{NAME}.csv", f"metrics/timing/{NAME}.csv",
           f"metrics/train/{NAME}.json"]


def stage(name: str, *args: str, cwd, tracking: bool = True, check: bool = True, **env_extra: str):
    env = (venv_env(MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'mlflow.db'}", **env_extra) if tracking
           else venv_env(CNNBENCH_TRACKING="off", **env_extra))
    return run(["python", str(REPO / "stages" / f"{name}.py"), *args], cwd, env, check=check)


def snapshot(root) -> dict:
    return {p: p.read_bytes() for d in ("models", "metrics") for p in (root / d).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """A workdir whose model was trained with tracking off."""
    root = stage_workdir(tmp_path_factory.mktemp("trained"), mnist_dir, {NAME: {"epochs": 2, "train_limit": 1200}})
    stage("train", NAME, cwd=root, tracking=False, OMP_NUM_THREADS="1")
    assert not (root / "mlflow.db").exists()
    return root


@pytest.fixture(scope="module")
def logged(trained, tmp_path_factory):
    """A copy of ``trained`` after --log-trained, and the outputs before it."""
    root = tmp_path_factory.mktemp("logged") / "w"
    shutil.copytree(trained, root, symlinks=True)
    before = snapshot(root)
    # logged with another thread count than the training's: the tag must be the training's
    proc = stage("train", NAME, "--log-trained", cwd=root, OMP_NUM_THREADS="3")
    return root, before, proc


def copy_of(trained, tmp_path):
    shutil.copytree(trained, tmp_path / "w", symlinks=True)
    return tmp_path / "w"


def mlflow_client(root):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_log_trained_fills_a_run_that_evaluate_then_completes(logged):
    import mlflow.pytorch

    from cnnbench.checkpoints import load_checkpoint
    from cnnbench.config import flatten, load_model_config

    root, before, proc = logged
    client = mlflow_client(root)
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert len(runs) == 1
    r = runs[0]
    run_id = r.info.run_id
    assert f"logged 2 epochs and the model into MLflow run {run_id}" in proc.stdout
    assert r.info.status == "FINISHED" and r.info.run_name == f"{NAME} seed=0"
    cfg = load_model_config(root / "params.yaml", NAME)
    assert r.data.params == {k: "" if v is None else str(v) for k, v in flatten(cfg).items()}
    assert r.data.params["train_limit"] == "1200" and r.data.params["epochs"] == "2"
    # every epoch, as training logs it: curve row and timing row, step = epoch
    curves = pd.read_csv(root / f"metrics/curves/{NAME}.csv")
    timing = pd.read_csv(root / f"metrics/timing/{NAME}.csv")
    for frame, metric in ((curves, "test_acc"), (curves, "lr"), (timing, "seconds")):
        history = client.get_metric_history(run_id, metric)
        assert [(m.step, m.value) for m in history] == list(zip(frame["epoch"], frame[metric])), metric
    tags = r.data.tags
    assert tags["logged_after_training"] == "true" and tags["device"] == "cpu"
    assert tags["torch_version"] == torch.__version__ and tags["cuda_version"] == str(torch.version.cuda)
    assert tags["torch_threads"] == "1"
    assert tags["cpu"] == "unknown"  # the train JSON does not say, and the logger's is not the training's
    assert tags["model"] == NAME and tags["dataset"] == "mnist"
    assert {"summary.md", "curves", "timing"} <= {a.path for a in client.list_artifacts(run_id)}
    for folder in ("curves", "timing"):  # both files are called <model>.csv: neither hides the other
        logged_csv = client.download_artifacts(run_id, f"{folder}/{NAME}.csv", str(root / "downloads"))
        assert Path(logged_csv).read_bytes() == (root / f"metrics/{folder}/{NAME}.csv").read_bytes()

    # the logged model predicts what the checkpoint predicts
    mlflow.set_tracking_uri(client.tracking_uri)
    model, ckpt = load_checkpoint(root / f"models/{NAME}.pt")
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(mlflow.pytorch.load_model(tags["model_uri"])(x), model(x))

    # the run id went into the checkpoint and the train JSON, and nothing else changed
    old_ckpt = torch.load(root / f"models/{NAME}.pt", weights_only=True)
    assert ckpt["mlflow_run_id"] == old_ckpt["mlflow_run_id"] == run_id
    previous = torch.load(io.BytesIO(before[root / f"models/{NAME}.pt"]), weights_only=True)
    assert previous["mlflow_run_id"] is None
    assert {k: v for k, v in previous.items() if k not in ("mlflow_run_id", "state_dict")} == {
        k: v for k, v in old_ckpt.items() if k not in ("mlflow_run_id", "state_dict")}
    assert all(torch.equal(previous["state_dict"][k], v) for k, v in old_ckpt["state_dict"].items())
    summary = json.loads((root / f"metrics/train/{NAME}.json").read_text())
    assert summary == {**json.loads(before[root / f"metrics/train/{NAME}.json"]), "mlflow_run_id": run_id}
    assert summary["torch_version"] == torch.__version__ and summary["torch_threads"] == 1
    for name in OUTPUTS[1:3]:  # the curves are untouched
        assert (root / name).read_bytes() == before[root / name]

    # evaluate finds the run through the checkpoint and logs into it
    stage("evaluate", NAME, cwd=root)
    metrics = json.loads((root / f"metrics/eval/{NAME}.json").read_text())
    r = client.get_run(run_id)
    assert r.data.metrics["final_test_acc"] == pytest.approx(metrics["test_acc"])
    assert "evaluation" in {a.path for a in client.list_artifacts(run_id)}
    assert len(client.search_runs([r.info.experiment_id])) == 1


def test_a_second_log_trained_is_an_error_and_changes_nothing(logged):
    root = logged[0]
    run_id = torch.load(root / f"models/{NAME}.pt", weights_only=True)["mlflow_run_id"]
    before = snapshot(root)
    proc = stage("train", NAME, "--log-trained", cwd=root, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"train@{NAME}: error: models/{NAME}.pt is already logged in MLflow run {run_id}" in proc.stderr
    assert snapshot(root) == before
    client = mlflow_client(root)
    assert len(client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])) == 1


def test_a_missing_output_is_an_error_before_any_run(trained, tmp_path):
    root = copy_of(trained, tmp_path)
    (root / f"metrics/timing/{NAME}.csv").unlink()
    before = snapshot(root)
    proc = stage("train", NAME, "--log-trained", cwd=root, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (f"train@{NAME}: error: metrics/timing/{NAME}.csv does not exist: the train stage must "
            f"run first (`dvc repro train@{NAME}`") in proc.stderr
    assert snapshot(root) == before and not (root / "mlflow.db").exists()


def test_a_changed_config_or_tracking_off_is_an_error_before_any_run(trained, tmp_path):
    root = copy_of(trained, tmp_path)
    before = snapshot(root)
    proc = stage("train", NAME, "--log-trained", cwd=root, tracking=False, check=False)
    assert proc.returncode == 1 and "--log-trained logs into MLflow, but CNNBENCH_TRACKING" in proc.stderr
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"][NAME]["seed"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage("train", NAME, "--log-trained", cwd=root, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (f"train@{NAME}: error: models/{NAME}.pt was trained with another config than "
            f"models.{NAME} in params.yaml") in proc.stderr
    assert snapshot(root) == before and not (root / "mlflow.db").exists()
