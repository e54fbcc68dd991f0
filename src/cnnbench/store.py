"""The MLflow tracking store: where runs go, reaching it, and starting a new one.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store at the repository
root (``DVC_ROOT`` when DVC runs us: DVC points it at the real repository even inside
``dvc exp run --temp`` / ``--queue`` copies, which are deleted afterwards). Credentials in
an http(s) URI travel apart from it; a new SQLite store is set up under a lock. The
project's own store, when new, starts with the runs kept in git (metrics/mlruns/, MLflow's
FileStore layout, written by ``cnnbench runs export``): ``restore`` builds a new SQLite
store from that folder with MLflow's own FileStore migration, run ids unchanged, and
copies the artifacts beside it where the store's own runs keep theirs. The folder's
artifact locations are left empty: they are machine paths, written at restore time.

mlflow is imported inside the functions: it is slow to import.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import yaml

from cnnbench import CnnbenchError

EXPERIMENT = "cnnbench"
class TrackingError(CnnbenchError):
    pass


def project_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
        return Path(top)
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()


def default_tracking_uri() -> str:
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def artifact_root(db: Path) -> Path:
    """Where a SQLite store's runs keep their artifacts: beside the database, not in the
    working directory (a temp copy under dvc exp). New experiments and restored runs both
    use it."""
    return (db.parent / "mlartifacts").resolve()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def redact(uri: str) -> str:
    """The URI without user:password, for messages, params and tags."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host`` -> (``http://host``, user, pw). MLflow prints the URI it
    was given ("View run at ...") and urllib takes user:pw@ for part of the host name, so
    credentials travel separately: as MLFLOW_TRACKING_USERNAME/PASSWORD, or Basic auth."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or parts.username is None:
        return uri, None, None  # a database URI keeps its own credentials
    clean = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return clean, urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail now, before any training, when a tracking server does not answer."""
    uri = uri or tracking_uri()
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme
    if scheme == "sqlite" and not (uri.startswith("sqlite:///") and len(uri) > len("sqlite:///")):
        raise TrackingError(f"MLFLOW_TRACKING_URI {redact(uri)!r} is not a SQLite URI MLflow can "
                            f"open; write sqlite:///relative/path.db or sqlite:////absolute/path.db")
    if scheme in ("http", "https"):
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise TrackingError(f"MLFLOW_TRACKING_URI {redact(uri)!r} has a port that is not a "
                                f"number; write {scheme}://host:5000") from None
        clean, user, password = split_credentials(uri)
        request = urllib.request.Request(clean.rstrip("/") + "/health")
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            urllib.request.urlopen(request, timeout=timeout).read()
        except (urllib.error.URLError, OSError) as e:
            raise TrackingError(
                f"the MLflow tracking server at {redact(uri)} cannot be reached "
                f"({getattr(e, 'reason', e)}). Start it, fix MLFLOW_TRACKING_URI, or unset it "
                f"to use the local SQLite store.") from e
    elif scheme not in ("sqlite", "file", "") and not scheme.startswith(("postgresql", "mysql", "databricks")):
        raise TrackingError(f"MLFLOW_TRACKING_URI {redact(uri)!r} has an unknown scheme "
                            f"{scheme!r}; use http(s)://host:port or sqlite:///path/to/mlflow.db")


def connect():
    """mlflow, pointed at the tracking store and the experiment (created on first use);
    a server that does not answer fails here, with the URI in the message. The project's
    own store, when new, starts with the runs kept in metrics/mlruns/ (``restore_if_new``). Any
    store MLflow cannot open (a missing driver, a malformed URI) is one TrackingError."""
    uri = tracking_uri()
    check_reachable(uri)
    try:
        return _connect(uri)
    except TrackingError:
        raise
    except Exception as e:  # noqa: BLE001 - a store that cannot be opened fails in many ways
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        secret = split_credentials(uri)[2] or urllib.parse.urlsplit(uri).password
        if secret:
            reason = reason.replace(secret, "***")
        if isinstance(e, ImportError):
            reason = f"the database driver is not installed: {reason}; pip install it"
        raise TrackingError(f"MLflow cannot open the tracking store {redact(uri)} ({type(e).__name__}: "
                            f"{reason}). Fix MLFLOW_TRACKING_URI (sqlite:///path/to/mlflow.db, "
                            f"http://host:5000, postgresql://...) or unset it to use the project's "
                            f"own store") from None


def _connect(uri: str):
    import mlflow

    # fail fast inside a call and let ModelRun retry later, instead of mlflow's own
    # retries blocking training for minutes while a server is away
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    uri, user, password = split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    mlflow.set_tracking_uri(uri)
    name = experiment_name()
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    with _exclusive(db):
        if uri == default_tracking_uri():
            restore_if_new(db)  # a fresh clone's store starts with the runs kept in git
        if mlflow.get_experiment_by_name(name) is None:
            _create_experiment(mlflow, name, db)
        mlflow.set_experiment(name)
    return mlflow


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)


def experiment_id() -> str:
    """The id of the experiment the stages log into, in the store ``connect`` reaches."""
    return connect().get_experiment_by_name(experiment_name()).experiment_id


def register_version(client, name: str, source: str, run_id: str, model_id: str) -> None:
    """A run's logged model as the next version of the registered model ``name``."""
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    client.create_model_version(name, source=source, run_id=run_id, model_id=model_id)


def _create_experiment(mlflow, name: str, db: Path | None) -> None:
    """Trainers that start together on one server all find no experiment and all create
    it; the first wins and the others use it (a SQLite store is locked instead)."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow.create_experiment(name, artifact_location=db and artifact_root(db).as_uri())
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


@contextmanager
def _exclusive(db: Path | None):
    """Hold a lock beside a SQLite store while it is set up: MLflow creates a new store's
    tables on first contact, and two runs starting together (`dvc queue start -j 2`)
    would both try, one failing with 'table ... already exists'."""
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


SOURCE_TAG = "cnnbench.source_run_id"  # a copied run's id in the store it came from (`cnnbench runs push`)


def full_run_id(run_id: str) -> str:
    """The run a short id names (the tables print 8 characters): the one run in the
    store whose id starts with it, or, in a store the kept runs were pushed into, whose
    kept id does. A full 32-character id the store has is taken as it is."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if len(run_id) == 32:
        try:
            return mlflow.get_run(run_id).info.run_id
        except MlflowException:
            pass
    runs = mlflow.search_runs(search_all_experiments=True)
    ids = [r for r in runs.get("run_id", []) if r.startswith(run_id)]
    if not ids and f"tags.{SOURCE_TAG}" in runs:
        ids = [r for r, kept in zip(runs["run_id"], runs[f"tags.{SOURCE_TAG}"]) if str(kept).startswith(run_id)]
    if not ids and len(run_id) == 32:
        return run_id  # not here: the caller says so
    if len(ids) != 1:
        raise TrackingError(f"{len(ids)} runs in {redact(tracking_uri())} have an id starting with "
                            f"{run_id!r}; give more of the id (`cnnbench seeds <model>` lists them)")
    return ids[0]


# --- the runs kept in git, and a new store built from them -------------------------

ARCHIVE = Path("metrics") / "mlruns"
# MLflow 3's UI opens an experiment of this kind on its training runs (not on GenAI traces)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def run_name(model_name: str, params: dict | None, tags: dict | None) -> str:
    """'mnist_7k seed=1 exp=lofty-dace': the model and what tells its runs apart in a list,
    the random seed and the DVC experiment that ran it."""
    parts = [model_name]
    if params and params.get("seed") not in (None, ""):
        parts.append(f"seed={params['seed']}")
    if tags and tags.get("dvc_exp_name"):
        parts.append(f"exp={tags['dvc_exp_name']}")
    return " ".join(parts)


META = "meta.yaml"


def archive_dir() -> Path:
    return project_root() / ARCHIVE


def kept_run_ids(archive: Path) -> set[str]:
    """Ids of the runs in ``archive`` (one folder with a meta.yaml per run)."""
    return {p.parent.name for p in archive.glob(f"[0-9]*/*/{META}")
            if not p.parent.name.startswith(".")}  # not an export's folder in the making


# --- export: tracking store -> metrics/mlruns/ ---------------------------------------

def restore(target_uri: str | None = None, archive: Path | None = None) -> int:
    """Build the SQLite store ``target_uri`` (default: the project's) from ``archive``;
    returns the number of runs. The store must not exist yet: MLflow's migration fills
    only an empty one, and a store's own runs are never overwritten."""
    archive = archive or archive_dir()
    uri = target_uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        raise TrackingError(f"restoring builds a SQLite store, not {redact(uri)}; "
                            f"give one with --to sqlite:///path/to/new.db")
    db = Path(uri[len("sqlite:///"):])
    count = len(kept_run_ids(archive))
    if count == 0:
        raise TrackingError(f"no runs kept in {archive}; `cnnbench runs export` puts them there")
    if _holds_anything(db):
        raise TrackingError(f"{db} exists, and runs are restored only into a new store: move it "
                            f"aside (mv {db} {db}.bak) or restore elsewhere with --to sqlite:///other.db")
    from mlflow.store.fs2db import migrate

    artifacts = artifact_root(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    building = db.with_name(f".{db.name}.restoring")
    building.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _metadata_for(archive, Path(tmp), artifacts.as_uri())
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its per-table summary
                migrate(Path(tmp), f"sqlite:///{building}", progress=False)
            _leave_wal(building)
            _as_new_runs_are(f"sqlite:///{building}")
            for src, dst in _artifact_folders(archive, artifacts):
                shutil.copytree(src, dst, dirs_exist_ok=True)
            os.replace(building, db)
        finally:
            building.unlink(missing_ok=True)
    return count


def _as_new_runs_are(uri: str) -> None:
    """What tracking.py gives a new run: its name, the experiment's kind, and the run's
    logged model as a version of the registered model of its name, in the order the runs
    started."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for experiment in client.search_experiments():
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
        # where each kept logged model lies: a models:/ source would be looked up in the
        # store MLFLOW_TRACKING_URI names, which need not be this one
        kept_models = {m.model_id: m.artifact_location for m in client.search_logged_models([experiment.experiment_id])}
        for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
            model_id, name = run.data.tags.get("model_uri", "").removeprefix("models:/"), run.data.tags.get("model")
            if name:
                client.update_run(run.info.run_id, name=run_name(name, run.data.params, run.data.tags))
            if not (model_id in kept_models and name):
                continue
            register_version(client, name, kept_models[model_id], run.info.run_id, model_id)


def _holds_anything(db: Path) -> bool:
    """Whether a store file has content: an empty one (what `touch` or an interrupted copy
    leaves) has no runs to keep, and restoring replaces it."""
    return db.exists() and db.stat().st_size > 0


def _leave_wal(db: Path) -> None:
    """The migration switches the file to write-ahead logging, whose committed rows sit in
    a -wal file beside it until a checkpoint: fold them in and go back to SQLite's default
    journal, so that the one file moved into place holds everything."""
    import gc
    import sqlite3

    gc.collect()  # the migration's engine, and with it its pooled connections
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")


def restore_if_new(db: Path) -> None:
    """Seed the project's default store from metrics/mlruns/ when it does not exist yet."""
    archive = archive_dir()
    if _holds_anything(db) or not kept_run_ids(archive):
        return
    count = restore(f"sqlite:///{db}", archive)
    print(f"MLflow: new store {db} starts with the {count} run(s) kept in {ARCHIVE}/", file=sys.stderr)


def _metadata_for(archive: Path, out: Path, artifact_root: str) -> None:
    """The archive's text files under ``out`` (no artifacts), with the artifact locations a
    store at ``artifact_root`` gives its experiment, runs and logged models."""
    for exp_meta in archive.glob(f"[0-9]*/{META}"):
        exp_dir = exp_meta.parent
        for path in exp_dir.rglob("*"):
            rel = path.relative_to(archive)
            if path.is_file() and "artifacts" not in rel.parts:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, out / rel)
        _set_yaml(out / exp_dir.name / META, artifact_location=artifact_root)
        for run_meta in (out / exp_dir.name).glob(f"*/{META}"):
            if run_meta.parent.name != "models":
                _set_yaml(run_meta, artifact_uri=f"{artifact_root}/{run_meta.parent.name}/artifacts")
        for model_meta in (out / exp_dir.name).glob(f"models/*/{META}"):
            _set_yaml(model_meta, artifact_location=f"{artifact_root}/models/{model_meta.parent.name}/artifacts")


def _artifact_folders(archive: Path, artifact_root: Path):
    """(archived artifacts, where the restored store looks for them)."""
    for run_id in kept_run_ids(archive):
        for src in archive.glob(f"[0-9]*/{run_id}/artifacts"):
            yield src, artifact_root / run_id / "artifacts"
    for src in archive.glob("[0-9]*/models/*/artifacts"):
        yield src, artifact_root / "models" / src.parent.name / "artifacts"


def _set_yaml(path: Path, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=True))
