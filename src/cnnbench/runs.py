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
import tempfile
from pathlib import Path

import yaml

from cnnbench.files import read_torch
from cnnbench.outputs import metrics_folder, model_outputs
from cnnbench.store import META, TrackingError, archive_dir, connect, full_run_id, project_root, redact, tracking_uri


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
