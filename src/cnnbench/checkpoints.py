"""What training leaves on disk: the checkpoint a trained model is evaluated and logged
from, and the state saved after every epoch that an interrupted training resumes from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnbench import CnnbenchError
from cnnbench.config import ModelConfig
from cnnbench.files import read_torch, write_torch
from cnnbench.models import create_model


class CheckpointError(CnnbenchError):
    """A checkpoint or saved state is missing, damaged or from another config."""


def fingerprint(cfg: ModelConfig, meta: dict) -> str:
    """What a saved state must match to be resumed: the config and the data."""
    blob = json.dumps({"config": cfg.model_dump(), "data": meta["splits"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


_UNREAD = object()


@dataclass
class Resume:
    """Where train() keeps its state after every epoch (model, optimizer, scheduler, RNG
    states, curves so far) so that a rerun after an interruption continues from the last
    finished epoch; ``extra`` travels with it (the MLflow run id)."""

    path: Path
    extra: dict = field(default_factory=dict)
    _state: object = field(default=_UNREAD, repr=False)

    def read(self, cfg: ModelConfig, meta: dict) -> dict | None:
        """The saved state when it belongs to this config and data, read once until the
        next save. A state from another config is deleted: that run starts fresh. One that
        cannot be read is a CheckpointError: it is written atomically, so it was damaged
        afterwards, and deciding to throw its epochs away is the user's."""
        if self._state is _UNREAD:
            self._state = self._read(cfg, meta)
        return self._state

    def _read(self, cfg: ModelConfig, meta: dict) -> dict | None:
        if not self.path.is_file():
            return None
        state = read_torch(self.path, "it is the state saved after the last finished epoch: delete it "
                                      "to train from the first epoch", required=("fingerprint",))
        if state["fingerprint"] != fingerprint(cfg, meta):
            self.path.unlink()
            return None
        return state

    def save(self, cfg: ModelConfig, meta: dict, state: dict) -> None:
        write_torch(self.path, {"fingerprint": fingerprint(cfg, meta), **state, "extra": self.extra})
        self._state = _UNREAD  # a later read() (a rerun in this process) reads what is on disk

    def finish(self) -> None:
        """Finished: nothing stale to resume from later."""
        self.path.unlink(missing_ok=True)
        self._state = _UNREAD


def save_checkpoint(path: Path, model: nn.Module, cfg: ModelConfig, meta: dict,
                    run_id: str | None) -> None:
    """Weights plus everything needed to rebuild and feed the model; plain types only,
    so it loads with ``torch.load(weights_only=True)``."""
    write_torch(path, {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                "config": cfg.model_dump(), "classes": meta["classes"],
                "input_shape": meta["input_shape"], "mean": meta["mean"], "std": meta["std"],
                "mlflow_run_id": run_id})


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The model saved by ``save_checkpoint`` and the checkpoint; a missing, damaged or
    foreign file is a TrainError saying how to get the right one."""
    name = Path(path).stem
    fix = f"restore it with `dvc checkout {path}`, or train it again with `dvc repro train@{name}`"
    if not Path(path).is_file():
        raise CheckpointError(f"{path} does not exist: train the model first (`dvc repro train@{name}`), "
                         f"or restore it with `dvc checkout {path}`")
    ckpt = read_torch(path, fix, map_location=device, required=(
        "state_dict", "config", "classes", "input_shape", "mean", "std", "mlflow_run_id"))
    try:
        cfg = ModelConfig.model_validate(ckpt["config"])
        classes, weights = list(ckpt["classes"]), dict(ckpt["state_dict"])
    except (ValueError, TypeError) as e:  # a ValidationError is a ValueError
        raise CheckpointError(f"{path} is not a cnnbench checkpoint ({type(e).__name__}); {fix}") from None
    model = create_model(cfg.arch, num_classes=len(classes), keras_defaults=cfg.keras_defaults)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not hold weights of arch {cfg.arch!r} "
                         f"({str(e).splitlines()[0]}); {fix}") from None
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights (NaN or infinity in {', '.join(bad[:3])}); "
                         f"{fix}")
    return model.to(device, memory_format=torch.channels_last).eval(), ckpt


def load_matching_checkpoint(path: Path, cfg: ModelConfig, name: str,
                             params_file: str = "params.yaml") -> tuple[nn.Module, dict]:
    """load_checkpoint, refusing a checkpoint trained with another config than ``cfg``
    (models.<name> of ``params_file``)."""
    model, ckpt = load_checkpoint(path)
    if ckpt["config"] != cfg.model_dump():
        raise CheckpointError(f"{path} was trained with another config than models.{name} in "
                         f"{params_file}; retrain it with `dvc repro train@{name}`")
    return model, ckpt
