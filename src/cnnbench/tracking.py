"""Everything MLflow: where runs go, one run per model, what each run records.

Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store at the repository
root (``DVC_ROOT`` when DVC runs us: DVC points it at the real repository even inside
``dvc exp run --temp`` / ``--queue`` copies, which are deleted afterwards).
``CNNBENCH_TRACKING=off`` turns tracking off (e.g. on a GPU box without mlflow).

mlflow is imported inside the functions: it is slow to import and stages that do not
track should not pay for it.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request
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


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def redact(uri: str) -> str:
    """The URI without user:password, for messages, params and tags."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail now, before any training, when a tracking server does not answer."""
    uri = uri or tracking_uri()
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
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


def run_tags(model_name: str, dataset: str, device: str) -> dict[str, str]:
    tags = {"model": model_name, "dataset": dataset, "device": device,
            "torch_version": torch.__version__,
            "cuda_version": str(torch.version.cuda),
            "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no")))}
    for env, tag in (("DVC_EXP_NAME", "dvc_exp_name"), ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def _setup():
    import mlflow

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    if mlflow.get_experiment_by_name(name) is None:
        artifacts = None
        if uri.startswith("sqlite:///"):
            # beside the database, not in the working directory (a temp copy under dvc exp)
            artifacts = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        try:
            mlflow.create_experiment(name, artifact_location=artifacts)
        except Exception:  # created meanwhile by a parallel run
            if mlflow.get_experiment_by_name(name) is None:
                raise
    mlflow.set_experiment(name)
    return mlflow


@contextmanager
def model_run(model_name: str, run_id: str | None = None, params: dict | None = None,
              tags: dict | None = None):
    """An MLflow run for ``model_name``: a new one with ``params``, or ``run_id``
    reopened (evaluate logs into the run that trained the model). Yields None when
    tracking is off. The server is checked before anything runs."""
    if not enabled():
        yield None
        return
    mlflow = _setup()
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else model_name) as run:
        if params:
            mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
        if tags:
            mlflow.set_tags(tags)
        yield run


def log_metrics(metrics: dict, step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()
                        if isinstance(v, (int, float)) and k != "epoch"}, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)


def log_model(model: torch.nn.Module, example: torch.Tensor) -> str:
    """Log the model with an input example so that it loads back; returns its URI."""
    import mlflow.pytorch

    info = mlflow.pytorch.log_model(
        model.cpu().eval(), name="model", input_example=example.cpu().numpy(),
        # explicit requirements: inferring them starts a slow subprocess
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def log_training(summary_md: str, curve_files: list[Path], model: torch.nn.Module,
                 example: torch.Tensor) -> None:
    """What the train stage leaves in its run besides the per-epoch metrics."""
    import mlflow

    mlflow.log_text(summary_md, "summary.md")
    for path in curve_files:
        mlflow.log_artifact(str(path), "curves")
    log_model(model, example)


def log_evaluation(metrics: dict, files: list[Path]) -> None:
    """Final test metrics (per-class accuracy as test_acc.<class>) and evaluate's files."""
    import mlflow

    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    flat.update({f"test_acc.{c}": v for c, v in metrics["per_class_acc"].items() if v is not None})
    mlflow.log_metrics({("final_" + k if k in ("test_acc", "test_loss") else k): float(v)
                        for k, v in flat.items()})
    for path in files:
        mlflow.log_artifact(str(path), "evaluation")
