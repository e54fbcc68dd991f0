"""MLflow runs kept in git (metrics/mlruns/): a run logged by the tracking code into a real
SQLite store, exported to MLflow's FileStore layout, and restored into a new store with
its id, params, tags, per-epoch history, artifacts and a model that loads back."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from cnnbench import runs, tracking
from cnnbench.models import create_model
from cnnbench.store import ARCHIVE, EXPERIMENT, kept_run_ids, restore
from conftest import REPO, free_port, log_made_up_evaluation, rest, start_server, stop_server

pytestmark = pytest.mark.slow  # make test-fast skips it


def log_run(tmp: Path, model: torch.nn.Module, seed: int) -> str:
    """A run as the train and evaluate stages leave it, with a real model logged."""
    curves = tmp / "curves" / "seed002_mnist.csv"
    curves.parent.mkdir(parents=True, exist_ok=True)
    curves.write_text("epoch,test_acc\n0,0.97\n1,0.98\n")
    with tracking.model_run("seed002_mnist", params={"epochs": 2, "seed": seed, "optimizer.lr": 0.003},
                            tags=tracking.run_tags("seed002_mnist", "mnist", "cpu")) as run:
        for epoch in range(2):
            run.log_epoch({"epoch": epoch, "test_acc": 0.97 + epoch / 100, "train_loss": 0.5 / (epoch + 1)},
                          step=epoch)
        run.log_training("| layer | params |", [curves], model, torch.zeros(1, 1, 28, 28))
        log_made_up_evaluation(run, 0.98)
        return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(the source store's URI, run ids, the model logged in the first run)."""
    tmp = tmp_path_factory.mktemp("store")
    torch.manual_seed(0)
    model = create_model("seed002_mnist", num_classes=10).eval()
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("CNNBENCH_TRACKING", "on")
        mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        ids = [log_run(tmp, model, seed) for seed in (0, 1)]
        yield uri, ids, model


@pytest.fixture()
def exported(store, tmp_path, monkeypatch):
    uri, ids, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "mlruns"
    assert runs.export_runs(ids, out) == (ids, [])
    return out


def test_export_writes_plain_text_in_mlflow_layout(store, exported):
    _, ids, _ = store
    assert kept_run_ids(exported) == set(ids)
    run_dir = next(exported.glob(f"*/{ids[0]}"))
    assert yaml.safe_load((run_dir.parent / "meta.yaml").read_text())["name"] == EXPERIMENT
    meta = yaml.safe_load((run_dir / "meta.yaml").read_text())
    assert (meta["run_id"], meta["status"], meta["artifact_uri"]) == (ids[0], "FINISHED", "")  # no machine path
    assert (run_dir / "params" / "optimizer.lr").read_text() == "0.003"
    assert (run_dir / "tags" / "model").read_text() == "seed002_mnist"
    history = [line.split() for line in (run_dir / "metrics" / "test_acc").read_text().splitlines()]
    assert [(float(v), int(s)) for _, v, s in history] == [(0.97, 0), (0.98, 1)]
    assert (run_dir / "artifacts" / "summary.md").read_text() == "| layer | params |"
    model_id = next((run_dir / "outputs").iterdir()).name
    assert (run_dir.parent / "models" / model_id / "artifacts" / "MLmodel").is_file()


def test_restore_brings_back_the_runs_under_their_ids(store, exported, tmp_path):
    from mlflow.tracking import MlflowClient

    uri, ids, model = store
    target = tmp_path / "clone" / "mlflow.db"
    assert restore(f"sqlite:///{target}", exported) == 2
    old, new = MlflowClient(uri), MlflowClient(f"sqlite:///{target}")
    for run_id in ids:
        a, b = old.get_run(run_id), new.get_run(run_id)
        assert (b.info.status, b.info.run_name, b.info.start_time) == ("FINISHED", a.info.run_name, a.info.start_time)
        assert (b.data.params, b.data.tags, b.data.metrics) == (a.data.params, a.data.tags, a.data.metrics)
        history = [(m.step, m.value, m.timestamp) for m in new.get_metric_history(run_id, "test_acc")]
        assert history == [(m.step, m.value, m.timestamp) for m in old.get_metric_history(run_id, "test_acc")]
        # the artifacts sit beside the new store, as its own runs' would
        assert b.info.artifact_uri == (target.parent / "mlartifacts" / run_id / "artifacts").as_uri()
        assert sorted(f.path for f in new.list_artifacts(run_id)) == sorted(f.path for f in old.list_artifacts(run_id))
    # as a new run would be: the experiment shown as model training, each run a registered version
    assert new.get_experiment_by_name(EXPERIMENT).tags["mlflow.experimentKind"] == "custom_model_development"
    versions = sorted(new.search_model_versions("name='seed002_mnist'"), key=lambda v: int(v.version))
    assert [v.run_id for v in versions] == list(ids)
    import mlflow.pytorch

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{target}")
        loaded = mlflow.pytorch.load_model(new.get_run(ids[0]).data.tags["model_uri"])
    x = torch.randn(1, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_a_real_mlflow_server_serves_the_restored_runs(store, exported, tmp_path):
    """What `make mlflow-ui` shows: the run, its artifacts and its logged model."""
    import urllib.request

    _, ids, _ = store
    db = tmp_path / "mlflow.db"
    restore(f"sqlite:///{db}", exported)
    port = free_port()
    server = start_server(db, tmp_path / "mlartifacts", port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert rest(url, f"runs/get?run_id={ids[0]}")["run"]["info"]["status"] == "FINISHED"
        summary = urllib.request.urlopen(f"{url}/get-artifact?path=summary.md&run_uuid={ids[0]}", timeout=10)
        assert summary.read() == b"| layer | params |"
        experiment = next(exported.glob("*/meta.yaml")).parent.name
        models = rest(url, "logged-models/search", {"experiment_ids": [experiment]})["models"]
        assert {m["info"]["source_run_id"] for m in models} == set(ids)
    finally:
        stop_server(server)


def test_restore_never_touches_an_existing_store(exported, tmp_path):
    target = tmp_path / "mlflow.db"
    target.write_bytes(b"someone's runs")
    with pytest.raises(tracking.TrackingError, match="exists.*move it aside"):
        restore(f"sqlite:///{target}", exported)
    assert target.read_bytes() == b"someone's runs" and not (tmp_path / "mlartifacts").exists()
    with pytest.raises(tracking.TrackingError, match="no runs kept"):
        restore(f"sqlite:///{tmp_path / 'new.db'}", tmp_path / "empty")
    with pytest.raises(tracking.TrackingError, match="SQLite store"):
        restore("http://127.0.0.1:5000", exported)


def test_export_draws_no_progress_bar_per_artifact(store, tmp_path, monkeypatch, capsys):
    uri, ids, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    runs.export_runs(ids, tmp_path / "mlruns")
    assert "Downloading artifacts" not in capsys.readouterr().err
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # the user's setting, untouched


def test_a_missing_run_is_named_and_nothing_is_written(store, tmp_path, monkeypatch):
    uri, ids, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "mlruns"
    with pytest.raises(tracking.TrackingError, match="0123456789abcdef0123456789abcdef not in the tracking"):
        runs.export_runs([ids[0], "0123456789abcdef0123456789abcdef"], out)
    assert not out.exists()
    assert runs.export_runs([ids[0], "0123456789abcdef0123456789abcdef"], out, skip_missing=True) == (
        [ids[0]], ["0123456789abcdef0123456789abcdef"])


def test_export_takes_the_short_ids_the_tables_print(store, tmp_path, monkeypatch):
    uri, ids, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "mlruns"
    assert runs.export_runs([ids[1][:8]], out) == ([ids[1]], [])
    assert kept_run_ids(out) == {ids[1]}
    with pytest.raises(tracking.TrackingError, match="0 runs .* starting with 'zzzzzzzz'; give more of the id"):
        runs.export_runs(["zzzzzzzz"], out)


def test_export_again_replaces_the_copy_and_keeps_one_experiment(store, exported, monkeypatch):
    uri, ids, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    stale = next(exported.glob(f"*/{ids[0]}")) / "params" / "stale"
    stale.write_text("from an earlier export")
    runs.export_runs([ids[0]], exported)
    assert not stale.exists() and kept_run_ids(exported) == set(ids)
    assert len(list(exported.glob("*/meta.yaml"))) == 1
    assert not [p for p in exported.rglob(".*")]  # no folder left from the swap


@pytest.mark.parametrize("empty_file", [False, True], ids=["no store", "0-byte store"])
def test_a_new_default_store_starts_with_the_kept_runs(exported, tmp_path, monkeypatch, store, empty_file):
    """A fresh clone: no mlflow.db yet, or an empty one (left by `touch` or a copy cut
    short, which holds no runs); the first connect() restores metrics/mlruns/."""
    project = tmp_path / "clone"
    (project / "metrics").mkdir(parents=True)
    if empty_file:
        (project / "mlflow.db").touch()
    exported.rename(project / ARCHIVE)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", str(project))
    mlflow = tracking.connect()
    assert {r.info.run_id for r in mlflow.search_runs(output_format="list")} == set(store[1])
    assert (project / "mlflow.db").is_file() and (project / "mlartifacts" / store[1][0] / "artifacts").is_dir()


def test_the_committed_archive_holds_the_runs_the_leaderboard_names_as_kept():
    import pandas as pd

    board = pd.read_csv(REPO / "metrics" / "leaderboard.csv")
    kept = kept_run_ids(REPO / ARCHIVE)
    assert (board["mlflow_run_kept"] == "yes").tolist() == board["mlflow_run_id"].isin(kept).tolist()
