"""Where the pipeline's files go, named once. dvc.yaml spells the same paths for DVC;
tests/test_dvc_yaml.py checks that the two agree."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

DATA, MODELS, METRICS = Path("data"), Path("models"), Path("metrics")


def data_dir(dataset: str, data: Path = DATA) -> Path:
    """A prepared dataset: train.pt, test.pt and meta.json (download@<dataset>)."""
    return data / dataset


def metrics_folder(kind: str, metrics: Path = METRICS) -> Path:
    """One kind of per-model metrics file: curves, timing, train, eval, confusion,
    misclassified, inference, scores."""
    return metrics / kind


class ModelOutputs(NamedTuple):
    checkpoint: Path     # train@: the trained model (DVC cache)
    resume_state: Path   # train@: the state after the last finished epoch, outside DVC's outputs
    curves: Path         # train@: per-epoch results (deterministic on the CPU)
    timing: Path         # train@: per-epoch seconds and images/s
    train_summary: Path  # train@: timing summary, device, versions, MLflow run id
    eval_metrics: Path   # evaluate@: final test metrics
    confusion: Path      # evaluate@: one (actual, predicted) row per test image
    mistakes: Path       # evaluate@: misclassified test images
    inference: Path      # evaluate@: inference speed on the device it ran on
    scores: Path         # report: the figures people compare, what `dvc metrics show` shows

    @property
    def of_training(self) -> tuple[Path, Path, Path, Path]:
        """What train@<model> leaves for DVC (the resume state is its own)."""
        return self.checkpoint, self.curves, self.timing, self.train_summary


def model_outputs(name: str, models: Path = MODELS, metrics: Path = METRICS) -> ModelOutputs:
    def per_model(kind: str, suffix: str) -> Path:
        return metrics_folder(kind, metrics) / f"{name}.{suffix}"

    return ModelOutputs(
        checkpoint=models / f"{name}.pt", resume_state=models / ".resume" / f"{name}.pt",
        curves=per_model("curves", "csv"), timing=per_model("timing", "csv"),
        train_summary=per_model("train", "json"), eval_metrics=per_model("eval", "json"),
        confusion=per_model("confusion", "csv"), mistakes=per_model("misclassified", "png"),
        inference=per_model("inference", "json"), scores=per_model("scores", "json"))
