"""Everything MLflow: where runs go, one run per model, what each run records.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store at the repository
root (``DVC_ROOT`` when DVC runs us: DVC points it at the real repository even inside
``dvc exp run --temp`` / ``--queue`` copies, which are deleted afterwards).
``CNNBENCH_TRACKING=off`` turns tracking off (e.g. on a GPU box without mlflow).

mlflow is imported inside the functions: it is slow to import and stages that do not
track should not pay for it.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

EXPERIMENT = "cnnbench"
RUN_ID_KEY = "mlflow_run_id"


class TrackingError(RuntimeError):
    pass


def enabled() -> bool:
    return os.environ.get("CNNBENCH_TRACKING", "on").lower() not in ("off", "0", "false", "no")


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


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_name() -> str:
    """'AMD EPYC (AVX2)': the processor and the vector instructions torch's kernels use."""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:  # not Linux
        model = ""
    import platform

    return f"{model or platform.processor() or 'unknown'} ({torch.backends.cpu.get_cpu_capability()})"


def run_tags(model_name: str, dataset: str, device: str) -> dict[str, str]:
    tags = {"model": model_name, "dataset": dataset, "device": device,
            "torch_version": torch.__version__,
            "cuda_version": str(torch.version.cuda),
            # CPU results repeat only at the same thread count (it sets the order of sums)
            # and on the same kind of processor (the kernels torch and oneDNN pick)
            "torch_threads": str(torch.get_num_threads()), "cpu": cpu_name(),
            "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no")))}
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def trained_run_tags(model_name: str, dataset: str, train_summary: dict) -> dict[str, str]:
    """run_tags for a model trained with tracking off and logged afterwards, maybe on
    another machine: device, torch and CUDA versions and thread count are the training's,
    from its metrics/train/<model>.json ("unknown" where an older one lacks them)."""
    tags = run_tags(model_name, dataset, str(train_summary.get("device", "unknown")))
    tags.update({k: str(train_summary.get(k, "unknown"))
                 for k in ("torch_version", "cuda_version", "torch_threads", "cpu")})
    return {**tags, "logged_after_training": "true"}


def connect():
    """mlflow, pointed at the tracking store and the experiment (created on first use);
    a server that does not answer fails here, with the URI in the message. The project's
    own store, when new, starts with the runs kept in metrics/mlruns/ (archive.py). Any
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
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
    with _exclusive(db):
        if uri == default_tracking_uri():
            from cnnbench.archive import restore_if_new

            restore_if_new(db)  # a fresh clone's store starts with the runs kept in git
        if mlflow.get_experiment_by_name(name) is None:
            mlflow.create_experiment(name, artifact_location=db and artifact_root(db).as_uri())
        mlflow.set_experiment(name)
    return mlflow


def full_run_id(run_id: str) -> str:
    """The run a short id names (the tables print 8 characters): the one run in the
    store whose id starts with it. A full 32-character id is taken as it is."""
    if len(run_id) == 32:
        return run_id
    import mlflow

    ids = [r for r in mlflow.search_runs(search_all_experiments=True).get("run_id", []) if r.startswith(run_id)]
    if len(ids) != 1:
        raise TrackingError(f"{len(ids)} runs in {redact(tracking_uri())} have an id starting with "
                            f"{run_id!r}; give more of the id (`cnnbench seeds <model>` lists them)")
    return ids[0]


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


class ModelRun:
    """One model's MLflow run, which never stops the pipeline: what the tracking server
    does not take (it went away) is kept, retried after every epoch and at the end, and
    named in one message if it never gets through. The DVC outputs are written anyway."""

    def __init__(self, run, retry_seconds: float):
        self.run = run
        self.run_id = run.info.run_id
        self.retry_seconds = retry_seconds
        self.pending: list[tuple[str, Callable[[], object]]] = []
        self.warned = False  # one warning per run, not one per failed epoch
        self.rerun = "rerun the stage with `dvc repro --force <stage>`"  # how to log what never got through

    def log(self, what: str, fn: Callable[[], object]) -> None:
        """Queue ``fn`` (described as ``what``) and send everything queued, in order."""
        self.pending.append((what, fn))
        self._flush()

    def log_epoch(self, metrics: dict, step: int) -> None:
        import mlflow

        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch"}
        self.log(f"epoch {step} metrics", lambda: mlflow.log_metrics(values, step=step))

    def log_missing_epochs(self, curves: list[dict], timings: list[dict]) -> None:
        """After a resume: log the saved epochs this run does not have yet (the process
        may have died between saving an epoch and logging it)."""
        from mlflow.tracking import MlflowClient

        try:
            logged = {m.step for m in MlflowClient().get_metric_history(self.run_id, "test_acc")}
        except Exception:  # noqa: BLE001 - server away: assume nothing, log all
            logged = set()
        for row, timing in zip(curves, timings):
            if row["epoch"] not in logged:
                self.log_epoch({**row, **timing}, step=row["epoch"])

    def _flush(self) -> bool:
        while self.pending:
            what, fn = self.pending[0]
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - any client error means "not now"
                if not self.warned:
                    print(f"MLflow: could not log {what} to {redact(tracking_uri())} "
                          f"({type(e).__name__}); training goes on, will retry", file=sys.stderr)
                    self.warned = True
                return False
            self.pending.pop(0)
        return True

    def close(self, status: str = "FINISHED") -> None:
        """Send what is left, waiting up to ``retry_seconds`` for the server; end the run
        with ``status`` (FAILED when something could not be sent)."""
        import mlflow

        deadline = time.monotonic() + self.retry_seconds
        while not self._flush() and time.monotonic() < deadline:
            time.sleep(2)
        try:
            mlflow.end_run(status if not self.pending else "FAILED")
        except Exception:  # noqa: BLE001
            self.pending.append(("the run's end", lambda: None))
        if self.pending:
            print(f"MLflow: run {self.run_id} at {redact(tracking_uri())} is incomplete; not "
                  f"logged: {', '.join(what for what, _ in self.pending)}. The DVC outputs "
                  f"are complete; {self.rerun} to log them.",
                  file=sys.stderr)


    def log_training(self, summary_md: str, curve_files: list[Path], model: torch.nn.Module,
                     example: torch.Tensor) -> None:
        """What the train stage leaves in its run besides the per-epoch metrics. Each
        curve file goes under its folder's name (curves/, timing/): they share a file name."""
        import mlflow

        self.log("the layer summary", lambda: mlflow.log_text(summary_md, "summary.md"))
        for path in curve_files:
            self.log(str(path), lambda p=path: mlflow.log_artifact(str(p), p.parent.name))
        self.log("the model", lambda: _log_model(model, example))

    def log_evaluation(self, metrics: dict, files: list[Path]) -> None:
        """Final test metrics (per-class accuracy as test_acc.<class>) and evaluate's files.
        test_acc/test_loss become final_*: the per-epoch history owns the plain names."""
        import mlflow

        flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        flat.update({f"test_acc.{c}": v for c, v in metrics["per_class_acc"].items() if v is not None})
        final = {("final_" + k if k in ("test_acc", "test_loss") else k): float(v) for k, v in flat.items()}
        self.log("final test metrics", lambda: mlflow.log_metrics(final))
        tags = {k: v for k, v in metrics.items() if isinstance(v, str)}  # e.g. test_time_aug
        if tags:
            self.log("evaluation tags", lambda: mlflow.set_tags(tags))
        for path in files:
            self.log(str(path), lambda p=path: mlflow.log_artifact(str(p), "evaluation"))


@contextmanager
def model_run(model_name: str, run_id: str | None = None, params: dict | None = None,
              tags: dict | None = None):
    """The ModelRun of ``model_name``: a new one with ``params`` and ``tags``, or
    ``run_id`` reopened (evaluate logs into the run that trained the model). Yields None
    when tracking is off. The server is checked before anything runs."""
    if not enabled():
        yield None
        return
    retry_seconds = _retry_seconds()
    mlflow = connect()
    if run_id:
        _require_run(run_id, model_name)
    run = ModelRun(mlflow.start_run(run_id=run_id, run_name=None if run_id else model_name),
                   retry_seconds=retry_seconds)
    if params:
        flat = {k: ("" if v is None else v) for k, v in params.items()}
        run.log("params", lambda: mlflow.log_params(flat))
    if tags:
        run.log("tags", lambda: mlflow.set_tags(tags))
    previous = sigterm_raises()
    try:
        yield run
    except BaseException as e:
        # Ctrl-C or SIGTERM: KILLED, and a rerun resumes this same run; anything else FAILED,
        # with the cause in the run's description (the note MLflow's UI shows) and a tag
        killed = isinstance(e, (KeyboardInterrupt, Terminated))
        if not killed:
            cause = f"{type(e).__name__}: {e}"[:5000]
            run.log("the cause of the failure", lambda: mlflow.set_tags(
                {"failure": cause, "mlflow.note.content": f"Failed: {cause}"}))
        run.close("KILLED" if killed else "FAILED")
        raise
    else:
        run.close()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _retry_seconds() -> float:
    """CNNBENCH_TRACKING_RETRY_S: how long a run's end waits for a server that went away."""
    value = os.environ.get("CNNBENCH_TRACKING_RETRY_S", "120")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise TrackingError(f"CNNBENCH_TRACKING_RETRY_S={value!r} is not a number of seconds; "
                            f"set it to e.g. 120, or unset it")
    return seconds


def _require_run(run_id: str, model_name: str) -> None:
    """A run to reopen must be in the store: a resume state or checkpoint carried to
    another machine without its run names one that store never had."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"MLflow run {run_id} of {model_name} is not in {redact(tracking_uri())}. A run kept in "
            f"git (metrics/mlruns/, e.g. by `cnnbench runs park {model_name}`) comes back with "
            f"`cnnbench runs restore` into a new store; an unfinished training whose run is lost "
            f"starts over in a new run once models/.resume/{model_name}.pt is deleted") from None


class Terminated(BaseException):
    """SIGTERM arrived (a scheduler or `kill` stopping the stage)."""


def sigterm_raises():
    """Make SIGTERM an exception, so that an open run is closed as KILLED and its pending
    logs are sent, instead of the process vanishing with the run left RUNNING. Returns
    the previous handler (None off the main thread, where Python allows no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def raise_terminated(signum, frame):
        raise Terminated(f"signal {signum}")

    return signal.signal(signal.SIGTERM, raise_terminated)


def _log_model(model: torch.nn.Module, example: torch.Tensor) -> None:
    """Log the model with an input example so that it loads back; its URI goes in the
    tag model_uri. MLflow 3 saves it as a torch.export program (no pickle to load)."""
    import mlflow.pytorch

    info = mlflow.pytorch.log_model(
        model.cpu().eval(), name="model", input_example=example.cpu().numpy(),
        # explicit requirements: inferring them starts a slow subprocess
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    mlflow.set_tag("model_uri", info.model_uri)
