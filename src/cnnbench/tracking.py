"""What an MLflow run records: one run per model, its params, tags, per-epoch metrics,
artifacts and model, and a run that never stops the pipeline when the server goes away.
Where the runs go is store.py's. ``CNNBENCH_TRACKING=off`` turns tracking off (e.g. on a
GPU box without mlflow).

mlflow is imported inside the functions: it is slow to import and stages that do not
track should not pay for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from cnnbench.outputs import model_outputs
from cnnbench.speed import device_name

# the stages reach the store through this module
from cnnbench.store import EXPERIMENT_KIND, TrackingError, connect, redact, run_name, tracking_uri  # noqa: F401

RUN_ID_KEY = "mlflow_run_id"


def enabled() -> bool:
    return os.environ.get("CNNBENCH_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_name() -> str:
    """'AMD EPYC 7B13 (AVX2)': the processor and the vector instructions torch's kernels use."""
    return device_name(torch.device("cpu"))


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


class ModelRun:
    """One model's MLflow run, which never stops the pipeline: what the tracking server
    does not take (it went away) is kept, retried after every epoch and at the end, and
    named in one message if it never gets through. The DVC outputs are written anyway."""

    def __init__(self, run, model_name: str, retry_seconds: float):
        self.run = run
        self.model_name = model_name
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
        self.log("the model", lambda: _log_model(model, example, self.model_name))

    def log_evaluation(self, metrics: dict, speed: dict, labels: torch.Tensor, pred: torch.Tensor,
                       classes: list[str], files: list[Path]) -> None:
        """Final figures, linked to the logged model too so that its page agrees with the
        run's, and evaluate's files. The headline, under one name in every run, is
        final_test_acc: the figure the leaderboard shows (with test-time augmentation where
        the model is scored so), test_acc_single_pass beside it; test_acc and test_loss
        are the per-epoch history's. Per-class accuracy and the confusion matrix are
        tables and figures, not metrics."""
        import mlflow

        from cnnbench.figures import confusion_figure, confusion_matrix, per_class_figure, per_class_table

        final = {"final_test_acc": metrics["test_acc"], "test_acc_single_pass": metrics["test_acc_single_pass"],
                 "final_test_loss": metrics["test_loss"], "errors": metrics["errors"],
                 "test_images": metrics["test_images"], "params": metrics["params"], "macs": metrics["macs"],
                 "checkpoint_bytes": metrics["checkpoint_bytes"], "inference_images_per_s": speed["images_per_s"],
                 "latency_ms_batch1": speed["latency_ms_batch1"]}
        final = {k: float(v) for k, v in final.items()}
        model_id = self.run.data.tags.get("model_uri", "").removeprefix("models:/") or None
        self.log("final test metrics", lambda: mlflow.log_metrics(final, model_id=model_id))
        tags = {"test_time_aug": metrics["test_time_aug"], "inference_device": speed["device_name"]}
        self.log("evaluation tags", lambda: mlflow.set_tags(tags))
        matrix = confusion_matrix(labels, pred, classes)
        self.log("the per-class accuracy", lambda: mlflow.log_table(
            per_class_table(matrix), "evaluation/per_class_accuracy.json"))
        self.log("the per-class accuracy figure", lambda: mlflow.log_figure(
            per_class_figure(matrix), "evaluation/per_class_accuracy.png"))
        self.log("the confusion matrix", lambda: mlflow.log_table(
            matrix.reset_index(), "evaluation/confusion_matrix.json"))
        self.log("the confusion matrix figure", lambda: mlflow.log_figure(
            confusion_figure(matrix), "evaluation/confusion_matrix.png"))
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
    run = ModelRun(mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name(model_name, params, tags)),
                   model_name, retry_seconds=retry_seconds)
    run.log("the experiment's kind", lambda: mlflow.set_experiment_tag(*EXPERIMENT_KIND))
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
            f"starts over in a new run once {model_outputs(model_name).resume_state} is deleted") from None


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


def _log_model(model: torch.nn.Module, example: torch.Tensor, model_name: str) -> None:
    """Log the model under its name with an input example so that it loads back, and
    register it: each run is one version of the registered model ``model_name``, so the
    Model Registry answers which weights were behind a figure. Its URI goes in the tag
    model_uri. MLflow 3 saves it as a torch.export program (no pickle to load)."""
    import mlflow.pytorch

    info = mlflow.pytorch.log_model(
        model.cpu().eval(), name=model_name, registered_model_name=model_name,
        input_example=example.cpu().numpy(),
        # explicit requirements: inferring them starts a slow subprocess
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    mlflow.set_tag("model_uri", info.model_uri)
