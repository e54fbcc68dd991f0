"""MLflow runs kept in git (metrics/mlruns/), so that the runs behind the committed
figures outlive the machine that made them: ``cnnbench runs export`` and ``park``.

The tracking store (mlflow.db and mlartifacts/) is git-ignored and lives on one machine;
a fresh clone, or a reset workspace, has the leaderboard's run ids and no runs. So:

- ``export_runs`` copies runs from the tracking store into ``metrics/mlruns/`` in MLflow's
  own FileStore layout: plain text a person can read and git can diff (params/, tags/,
  metrics/ with one "timestamp value step" line per logged value), the run's artifacts and
  its logged model. A new store is built from that folder by ``store.restore``.
- ``park`` keeps an unfinished training the same way: its run so far goes into the
  folder, and its resume state (models/.resume/<model>.pt) is committed beside it, so that
  a clone on another machine continues the training, in the same run, where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from cnnbench.files import read_torch
from cnnbench.outputs import metrics_folder, model_outputs
from cnnbench.store import (
    META,
    SOURCE_TAG,
    TrackingError,
    archive_dir,
    connect,
    full_run_id,
    project_root,
    redact,
    register_version,
    tracking_uri,
)


def leaderboard_runs(metrics_dir: Path) -> dict[str, str]:
    """{model: run id} of every model trained here (metrics/train/<model>.json)."""
    runs = {}
    for path in sorted(metrics_folder("train", metrics_dir).glob("*.json")):
        run_id = json.loads(path.read_text()).get("mlflow_run_id")
        if run_id:
            runs[path.stem] = run_id
    return runs


def export_runs(run_ids: list[str], archive: Path | None = None,
                skip_missing: bool = False) -> tuple[list[str], list[str]]:
    """Copy ``run_ids`` (full ids, or the 8-character ones the tables print) from the
    tracking store into ``archive``, replacing earlier copies; returns (the full ids
    exported, those missing). Every run is looked up before anything is written: one
    missing is an error naming it, unless ``skip_missing``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    archive = archive or archive_dir()
    connect()
    client = MlflowClient()
    runs, missing = [], []
    for run_id in run_ids:
        try:
            runs.append(client.get_run(full_run_id(run_id)))
        except MlflowException:
            missing.append(run_id)
    if missing and not skip_missing:
        raise TrackingError(f"run(s) {', '.join(missing)} not in the tracking store "
                            f"{redact(tracking_uri())}; `cnnbench seeds <model>` lists the runs it has")
    with _no_download_bars():
        for run in runs:
            _export_run(client, run, archive)
    return [run.info.run_id for run in runs], missing


def _export_run(client, run, archive: Path) -> None:
    experiment = client.get_experiment(run.info.experiment_id)
    exp_dir = archive / _experiment_folder(archive, experiment.name, experiment.experiment_id)
    _write_yaml(exp_dir / META, {"experiment_id": exp_dir.name, "name": experiment.name,
                                 "artifact_location": "", "lifecycle_stage": "active",
                                 "creation_time": experiment.creation_time,
                                 "last_update_time": experiment.last_update_time})
    _replace_dir(exp_dir / run.info.run_id, lambda tmp: _write_run(client, run, tmp, exp_dir.name))
    for output in run.outputs.model_outputs if run.outputs else []:
        model = client.get_logged_model(output.model_id)
        _replace_dir(exp_dir / "models" / model.model_id,
                     lambda tmp, model=model: _write_model(model, tmp, exp_dir.name))


@contextlib.contextmanager
def _no_download_bars():
    """MLflow draws a progress bar for every artifact download: a screenful of bars for
    copies that take milliseconds, where the export prints one summary line. A user's
    own MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR still wins."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        del os.environ[key]


def _experiment_folder(archive: Path, name: str, source_id: str) -> str:
    """The archive's folder of experiment ``name``: the one it has, else the source store's
    id when free, else the next free number (ids differ between stores; names may not)."""
    folders = {p.parent.name: yaml.safe_load(p.read_text()).get("name") for p in archive.glob(f"[0-9]*/{META}")}
    for folder, folder_name in folders.items():
        if folder_name == name:
            return folder
    if source_id not in folders:
        return source_id
    return str(max(int(f) for f in folders) + 1)


def _write_run(client, run, run_dir: Path, experiment_id: str) -> None:
    info = run.info
    _write_yaml(run_dir / META, {
        "run_id": info.run_id, "run_uuid": info.run_id, "run_name": info.run_name,
        "experiment_id": experiment_id, "user_id": info.user_id, "status": info.status,
        "start_time": info.start_time, "end_time": info.end_time,
        "lifecycle_stage": info.lifecycle_stage, "artifact_uri": ""})
    _write_values(run_dir / "params", run.data.params)
    _write_values(run_dir / "tags", run.data.tags)
    for key in run.data.metrics:
        history = client.get_metric_history(info.run_id, key)
        _write_file(run_dir / "metrics" / key, "".join(f"{m.timestamp} {m.value!r} {m.step}\n" for m in history))
    for output in run.outputs.model_outputs if run.outputs else []:
        _write_yaml(run_dir / "outputs" / output.model_id / META, {"step": output.step})
    (run_dir / "artifacts").mkdir()
    client.download_artifacts(info.run_id, "", str(run_dir / "artifacts"))


def _write_model(model, model_dir: Path, experiment_id: str) -> None:
    import mlflow.artifacts

    _write_yaml(model_dir / META, {
        "model_id": model.model_id, "experiment_id": experiment_id, "name": model.name,
        "artifact_location": "", "creation_timestamp": model.creation_timestamp,
        "last_updated_timestamp": model.last_updated_timestamp, "status": model.status.to_int(),
        "model_type": model.model_type, "source_run_id": model.source_run_id,
        "status_message": model.status_message, "lifecycle_stage": "active"})
    _write_values(model_dir / "params", model.params)
    _write_values(model_dir / "tags", model.tags)
    # MLflow 3 links the metrics logged after the model to it too (the run's id on each line)
    lines: dict[str, str] = {}
    for m in model.metrics or []:
        lines[m.key] = lines.get(m.key, "") + f"{m.timestamp} {m.value!r} {m.step} {m.run_id}\n"
    for key, text in lines.items():
        _write_file(model_dir / "metrics" / key, text)
    # the download keeps the location's last folder name (artifacts/ in MLflow's layout)
    got = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(model_dir)))
    if got != model_dir / "artifacts":
        got.rename(model_dir / "artifacts")


def _replace_dir(final: Path, fill) -> None:
    """Fill a new folder beside ``final`` and swap it in: an export that fails leaves the
    earlier copy, never half of one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(tmp)
        old = final.with_name(f".{final.name}.old")
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_values(folder: Path, values: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in values.items():
        _write_file(folder / key, str(value))


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)  # keys may hold "/" (FileStore's layout too)
    path.write_text(text)


def _write_yaml(path: Path, data: dict) -> None:
    _write_file(path, yaml.safe_dump(data, sort_keys=True))


# --- push: the kept runs into another store, a team's server ---------------------------

def push_runs(run_ids: list[str] | None = None, archive: Path | None = None) -> list[tuple[str, str, str]]:
    """Copy the runs kept in ``archive`` into the tracking store MLFLOW_TRACKING_URI names
    (a team's server), with their params, per-epoch histories, tags, artifacts and logged
    models, each model a version of its registered model: all of them, or those of
    ``run_ids`` (full or 8-character). Returns (name, kept id, id in the store). A server
    gives new ids; each copy carries its kept id in the tag ``cnnbench.source_run_id``, so
    ``full_run_id`` finds it by the id the leaderboard shows, and a push again copies only
    what is not there yet."""
    from mlflow.tracking import MlflowClient

    from cnnbench.store import experiment_id as target_experiment
    from cnnbench.store import restore

    experiment_id = target_experiment()  # connects: the store, credentials, reachability
    target = MlflowClient()
    there = {r.data.tags[SOURCE_TAG]: r.info.run_id for r in target.search_runs(
        [experiment_id], filter_string=f"tags.`{SOURCE_TAG}` != ''", max_results=10000)}
    copied = []
    with tempfile.TemporaryDirectory() as tmp, _no_download_bars():
        kept = f"sqlite:///{tmp}/kept.db"
        restore(kept, archive)
        source = MlflowClient(kept)
        for run in source.search_runs([e.experiment_id for e in source.search_experiments()],
                                      order_by=["attributes.start_time ASC"]):
            kept_id = run.info.run_id
            if run_ids and not any(kept_id.startswith(r) for r in run_ids):
                continue
            if kept_id not in there:
                with contextlib.redirect_stdout(sys.stderr):  # MLflow's "View run at" lines
                    there[kept_id] = _copy_run(source, target, run, experiment_id, Path(tmp) / kept_id)
            copied.append((run.info.run_name, kept_id, there[kept_id]))
    return copied


def _copy_run(source, target, run, experiment_id: str, tmp: Path) -> str:
    import mlflow.artifacts
    from mlflow.entities import LoggedModelOutput, Metric, Param

    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
    new_id = target.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name,
                               tags={**tags, SOURCE_TAG: run.info.run_id}).info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    metrics = [Metric(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics
               for m in source.get_metric_history(run.info.run_id, key)]
    for i in range(0, len(params), 100):  # the REST API's limits on one batch
        target.log_batch(new_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        target.log_batch(new_id, metrics=metrics[i:i + 1000])
    (tmp / "run").mkdir(parents=True)
    source.download_artifacts(run.info.run_id, "", str(tmp / "run"))
    target.log_artifacts(new_id, str(tmp / "run"))
    for output in run.outputs.model_outputs if run.outputs else []:
        model = source.get_logged_model(output.model_id)
        new = target.create_logged_model(experiment_id, name=model.name, source_run_id=new_id, tags=model.tags,
                                         params=model.params, model_type=model.model_type)
        local = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp / "model"))
        target.log_model_artifacts(new.model_id, local)
        target.finalize_logged_model(new.model_id, "READY")
        target.log_outputs(new_id, [LoggedModelOutput(new.model_id, output.step)])
        for m in model.metrics or []:  # the final figures its page shows
            target.log_metric(new_id, m.key, m.value, timestamp=m.timestamp, step=m.step, model_id=new.model_id)
        if run.data.tags.get("model_uri") == f"models:/{model.model_id}":
            target.set_tag(new_id, "model_uri", f"models:/{new.model_id}")
            if run.data.tags.get("model"):
                register_version(target, run.data.tags["model"], f"models:/{new.model_id}", new_id, new.model_id)
    target.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    return new_id


# --- park: an unfinished training, to continue on another machine --------------------

def park(model: str) -> tuple[Path, int, str | None]:
    """Export the MLflow run of ``model``'s unfinished training into the archive; returns
    (its resume state, to commit beside the archive; the epochs it holds; the run id, None
    where it trained with tracking off). The training may still be running: its state is
    replaced whole after every epoch, and the run is exported first, so the state committed
    after it holds at least the run's epochs (a resumed run logs the ones it lacks)."""
    state_path = model_outputs(model).resume_state
    if not (project_root() / state_path).is_file():
        raise TrackingError(f"{model} has no unfinished training here ({state_path} does not exist): "
                            f"it is saved after every epoch of `dvc repro train@{model}` until the end")
    state = read_torch(project_root() / state_path, f"delete it and train {model} again",
                       required=("extra", "curves"))
    run_id = state["extra"].get("mlflow_run_id")
    if run_id:
        export_runs([run_id])
    return state_path, len(state["curves"]), run_id


# --- restore: metrics/mlruns/ -> a new SQLite store -----------------------------------
