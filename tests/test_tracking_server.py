"""A real `mlflow server` process on 127.0.0.1: runs, metric histories and the logged
model readable through its REST API; an unreachable server stops training early."""

import json
import subprocess
import time

import pytest
import torch

from conftest import REPO, free_port, rest, run, stage_workdir, start_server, stop_server, venv_env, wait_for_epochs

pytestmark = pytest.mark.slow  # make test-fast skips it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    proc = start_server(tmp / "server.db", tmp / "artifacts", port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


@pytest.fixture
def workdir(tmp_path, mnist_dir):
    return stage_workdir(tmp_path, mnist_dir, {"seed001_mnist": {"epochs": 2, "train_limit": 1000}})


def test_runs_and_model_through_a_real_server(server, workdir):
    # credentials in the URI (this server ignores them) must reach no param, tag or log line
    env = venv_env(MLFLOW_TRACKING_URI=server.replace("http://", "http://alice:s3cret@"))
    logs = [run(["python", str(REPO / f"stages/{stage}.py"), "seed001_mnist"], workdir, env)
            for stage in ("train", "evaluate")]
    leaks = [line for p in logs for line in (p.stdout + p.stderr).splitlines() if "s3cret" in line]
    assert not leaks

    exp = rest(server, "experiments/get-by-name?experiment_name=cnnbench")["experiment"]
    runs = rest(server, "runs/search", {"experiment_ids": [exp["experiment_id"]]})["runs"]
    assert [r["info"]["run_name"] for r in runs] == ["seed001_mnist seed=0"]
    run_id = runs[0]["info"]["run_id"]
    history = rest(server, f"metrics/get-history?run_id={run_id}&metric_key=test_acc")["metrics"]
    assert [m["step"] for m in history] == [0, 1]
    curves = (workdir / "metrics/curves/seed001_mnist.csv").read_text().splitlines()
    assert [m["value"] for m in history] == [float(line.split(",")[4]) for line in curves[1:]]
    final = {m["key"]: m["value"] for m in runs[0]["data"]["metrics"]}
    assert final["final_test_acc"] == json.loads((workdir / "metrics/eval/seed001_mnist.json").read_text())["test_acc"]

    import mlflow.pytorch

    from cnnbench.checkpoints import load_checkpoint

    tags = {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}
    params = {p["key"]: p["value"] for p in runs[0]["data"]["params"]}
    assert not any("s3cret" in v for v in [*tags.values(), *params.values()])
    mlflow.set_tracking_uri(server)
    logged = mlflow.pytorch.load_model(tags["model_uri"])  # a pt2 export: no .eval()
    model, _ = load_checkpoint(workdir / "models/seed001_mnist.pt")
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(logged(x), model(x))


def test_unreachable_server_is_reported_before_training(workdir):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.time()
    proc = run(["python", str(REPO / "stages/train.py"), "seed001_mnist"], workdir,
               venv_env(MLFLOW_TRACKING_URI=url), check=False)
    assert proc.returncode == 1
    assert f"MLflow tracking server at {url} cannot be reached" in proc.stderr
    assert not (workdir / "models").exists() and not (workdir / "metrics").exists()
    assert time.time() - started < 60


def test_credentials_never_reach_the_message(workdir):
    url = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    proc = run(["python", str(REPO / "stages/train.py"), "seed001_mnist"], workdir,
               venv_env(MLFLOW_TRACKING_URI=url), check=False)
    assert proc.returncode == 1 and "s3cret" not in proc.stderr and "***@127.0.0.1" in proc.stderr


def test_server_outage_during_training_loses_nothing(tmp_path, mnist_dir):
    """Stop the real server after the first epoch, start it again two epochs later:
    training goes on, the DVC outputs are written and the run ends complete."""
    workdir = stage_workdir(tmp_path / "work", mnist_dir, {"seed001_mnist": {"epochs": 5, "train_limit": 2000}})
    db, artifacts, port = tmp_path / "server.db", tmp_path / "artifacts", free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(db, artifacts, port)
    train = subprocess.Popen(["python", str(REPO / "stages/train.py"), "seed001_mnist"], cwd=workdir,
                             env=venv_env(MLFLOW_TRACKING_URI=url), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    curves = workdir / "metrics/curves/seed001_mnist.csv"

    try:
        wait_for_epochs(train, curves, 1)
        stop_server(server)
        wait_for_epochs(train, curves, 3)  # two epochs while the server is down
        server = start_server(db, artifacts, port)
        out, err = train.communicate(timeout=600)
    finally:
        train.kill()
        stop_server(server)
    assert train.returncode == 0, err
    assert "could not log" in err and "will retry" in err
    assert (workdir / "models/seed001_mnist.pt").is_file()
    assert len(curves.read_text().splitlines()) == 6

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    (r,) = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert r.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(r.info.run_id, "test_acc")] == [0, 1, 2, 3, 4]
    assert "model_uri" in r.data.tags
