"""The training loop: optimizers, LR schedules, per-epoch evaluation, checkpoints.

No MLflow or file formats here: the caller passes ``on_epoch`` to record each epoch.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnbench.config import ModelConfig, Schedule
from cnnbench.data import Dataset
from cnnbench.loader import DeviceSplit
from cnnbench.models import create_model
from cnnbench.models.keras import apply_keras_defaults

CURVE_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"]
EVAL_BATCH = 1000


class TrainError(RuntimeError):
    """A model cannot be trained or loaded as configured; the message says what to do."""


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The arch of ``cfg`` with its layer defaults (Keras's when ``keras_defaults``)."""
    model = create_model(cfg.arch, num_classes=num_classes)
    return apply_keras_defaults(model) if cfg.keras_defaults else model


def preflight(cfg: ModelConfig, meta: dict, strict_budgets: bool = False) -> list[str]:
    """Checks that need the model, before any data is loaded or time is spent: the
    arch must take the dataset's images and give one logit per class (else TrainError).
    Returns budget warnings (a model whose parameters or epochs already break its
    budget), which are a TrainError with ``strict_budgets``."""
    model = build_model(cfg, len(meta["classes"]))
    shape = tuple(meta["input_shape"])
    shown = "x".join(map(str, shape))
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *shape))
    except RuntimeError as e:
        raise TrainError(f"arch {cfg.arch!r} does not fit dataset {cfg.dataset!r} (images {shown}): "
                         f"{str(e).splitlines()[0]}. Choose an arch made for {shown} inputs "
                         f"(`cnnbench models` lists them with their dataset).") from e
    if tuple(out.shape) != (2, len(meta["classes"])):
        raise TrainError(f"arch {cfg.arch!r} gives outputs of shape {tuple(out.shape)[1:]} on "
                         f"{cfg.dataset!r}, not one logit per class ({len(meta['classes'])}).")
    warnings = []
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.budget.max_params and params > cfg.budget.max_params:
        warnings.append(f"{cfg.arch} has {params:,} trainable parameters, over its budget of "
                        f"{cfg.budget.max_params:,} (budget.max_params)")
    if cfg.budget.max_epochs and cfg.epochs > cfg.budget.max_epochs:
        warnings.append(f"epochs {cfg.epochs} is over the budget of {cfg.budget.max_epochs} (budget.max_epochs)")
    if warnings and strict_budgets:
        raise TrainError("; ".join(warnings) + " (strict budgets are on: CNNBENCH_STRICT_BUDGETS)")
    return warnings


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainError("device: cuda was requested but torch sees no CUDA GPU here; "
                         "use device: auto (the GPU where there is one) or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class Accel:
    """How training runs on its device, fast by construction.

    Everywhere: channels_last memory (faster convolutions on both CPU and GPU, measured
    in benchmarks/). On CUDA: bf16 autocast unless precision is fp32, cuDNN autotuning,
    fused optimizers, and torch.compile when asked. On the CPU: large tensors from glibc's
    heap (see ``keep_freed_memory_on_heap``). The CPU stays fp32 and eager unless asked
    otherwise, so CPU runs are bit-reproducible.
    """

    device: torch.device
    bf16: bool = False
    compile_mode: str | None = None

    @classmethod
    def for_config(cls, cfg: ModelConfig, device: torch.device) -> Accel:
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        return cls(device, bf16, None if cfg.compile == "off" else cfg.compile)

    def prepare(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(model, the callable to train): the model moved to the device in channels_last,
        and its compiled form when compiling (which shares its parameters)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # pick the fastest kernels for these shapes
        else:
            keep_freed_memory_on_heap()
        model = model.to(self.device, memory_format=torch.channels_last)
        return model, (torch.compile(model, mode=self.compile_mode) if self.compile_mode else model)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def keep_freed_memory_on_heap() -> bool:
    """Have glibc serve every block from its heap and keep freed memory there, for the rest
    of the process (False, and nothing changed, where the C library is not glibc or
    ``CNNBENCH_GLIBC_HEAP=off`` keeps its defaults, e.g. where memory is short).

    By default glibc maps each block over its mmap threshold (32 MiB at most) afresh and
    unmaps it on free, so every CPU training step faults in its activations as new zeroed
    pages: at seed003_sep's batch 1024 half the CPU time went to the kernel. From the heap,
    training ran 1.05x to 1.9x faster with the same results, for a higher peak RSS
    (seed003_sep: 8.4 GB instead of 5.1; benchmarks/results/cpu-allocator-2core.md).
    """
    if platform.libc_ver()[0] != "glibc" or os.environ.get("CNNBENCH_GLIBC_HEAP") == "off":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1))


class Plateau:
    """The LR factor of the plateau schedule: times gamma once step_size epochs in a row
    have not lowered the test loss by 1e-4 (Keras's ReduceLROnPlateau, min_delta 1e-4)."""

    def __init__(self, schedule: Schedule):
        self.gamma, self.patience = schedule.gamma, schedule.step_size
        self.best, self.wait, self.scale = math.inf, 0, 1.0

    def update(self, test_loss: float) -> None:
        if test_loss < self.best - 1e-4:
            self.best, self.wait = test_loss, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.scale *= self.gamma
            self.wait = 0

    def state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "scale": self.scale}


def lr_multiplier(schedule: Schedule, epochs: int, steps_per_epoch: int,
                  plateau: Plateau | None = None) -> Callable[[int], float]:
    """LR factor at optimizer step ``step`` (0-based); the LR is optimizer.lr * factor.
    The plateau schedule reads its factor from ``plateau``, which the epochs update."""
    total = epochs * steps_per_epoch

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        t = step / total
        if schedule.name == "constant":
            return 1.0
        if schedule.name == "plateau":
            return plateau.scale
        if schedule.name == "inverse_time":  # Keras LearningRateScheduler, set per epoch
            return 1.0 / (1.0 + schedule.decay * epoch)
        if schedule.name == "step":
            return schedule.gamma ** (epoch // schedule.step_size)
        if schedule.name == "onecycle":
            if t < schedule.pct_start:
                return 0.04 + 0.96 * t / schedule.pct_start  # from lr/25 up to lr
            return 0.5 * (1 + math.cos(math.pi * (t - schedule.pct_start) / (1 - schedule.pct_start)))
        # cosine, after an optional linear warm-up
        warm = schedule.warmup_epochs * steps_per_epoch
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1.0, total - warm)))

    return factor


def build_optimizer(model: nn.Module, cfg: ModelConfig) -> torch.optim.Optimizer:
    opt = cfg.optimizer
    # one fused kernel for all parameters on CUDA instead of several per parameter
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if opt.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                               nesterov=opt.nesterov, weight_decay=cfg.weight_decay, **fused)
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=opt.lr, eps=opt.eps, weight_decay=cfg.weight_decay, **fused)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate_split(model: nn.Module, split: DeviceSplit) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predicted labels) over a whole split, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=split.device)
    preds = []
    for x, y in split.batches(EVAL_BATCH):
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    acc = (pred == split.labels).float().mean()
    return loss_sum.item() / len(split), acc.item(), pred.cpu()


@dataclass
class Resume:
    """Where train() keeps its state after every epoch (model, optimizer, scheduler, RNG
    states, curves so far) so that a rerun after an interruption continues from the last
    finished epoch; ``extra`` travels with it (the MLflow run id)."""

    path: Path
    extra: dict = field(default_factory=dict)


def fingerprint(cfg: ModelConfig, meta: dict) -> str:
    """What a saved state must match to be resumed: the config and the data."""
    blob = json.dumps({"config": cfg.model_dump(), "data": meta["splits"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_resume_state(path: Path, cfg: ModelConfig, meta: dict) -> dict | None:
    """The state saved at ``path`` when it belongs to this config and data. A state from
    another config is deleted: that run starts fresh. One that cannot be read is a
    TrainError: it is written atomically, so it was damaged afterwards, and deciding to
    throw its epochs away is the user's."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
        saved_for = state["fingerprint"]
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways inside torch.load
        raise TrainError(f"{path}, the state saved after the last finished epoch, is damaged "
                         f"({type(e).__name__}); delete it to train from the first epoch") from None
    if saved_for != fingerprint(cfg, meta):
        path.unlink()
        return None
    return state


@dataclass
class TrainResult:
    model: nn.Module
    curves: list[dict] = field(default_factory=list)
    timings: list[dict] = field(default_factory=list)
    device: str = "cpu"

    def summary(self) -> dict:
        """metrics/train/<model>.json: what a reader wants to know about the run."""
        best = max(self.curves, key=lambda r: r["test_acc"])
        seconds = sum(t["seconds"] for t in self.timings)
        rates = [t["train_images_per_s"] for t in self.timings]
        return {"epochs": len(self.curves), "seconds": round(seconds, 1),
                "train_images_per_s": round(sum(rates) / len(rates), 1),
                "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
                "final_test_acc": self.curves[-1]["test_acc"], "device": self.device}


class Diverged(TrainError):
    """The loss stopped being a finite number."""


def train(cfg: ModelConfig, data: Dataset | Path,
          on_epoch: Callable[[dict, dict], None] | None = None,
          progress: bool = True, resume: Resume | None = None) -> TrainResult:
    """Train ``cfg`` on ``data`` (or the dataset in that folder); ``on_epoch(curve_row, timing_row)``
    is called after every epoch, with the results and the (non-deterministic) timings
    kept apart so that results are byte-identical between runs on the CPU.

    With ``resume``, the state is saved after every epoch and a matching saved state is
    continued from; the run ends as an uninterrupted one would, and removes the state.

    ``progress``: a live bar on a terminal; where stdout is not one (a log file, CI), one
    plain line per epoch instead, which a log keeps and a bar does not.

    A loss that is not finite at the end of an epoch raises Diverged, before that epoch
    is recorded or saved."""
    data = data if isinstance(data, Dataset) else Dataset.load(data)
    meta = data.meta
    device = resolve_device(cfg.device)
    accel = Accel.for_config(cfg, device)
    seed_everything(cfg.seed)
    model, train_model = accel.prepare(build_model(cfg, len(meta["classes"])))

    train_images, train_labels = data.train
    if cfg.train_limit:
        train_images, train_labels = train_images[:cfg.train_limit], train_labels[:cfg.train_limit]
    train_split = DeviceSplit(train_images, train_labels, meta["mean"], meta["std"], device)
    test_split = DeviceSplit(*data.test, meta["mean"], meta["std"], device)

    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    plateau = Plateau(cfg.schedule) if cfg.schedule.name == "plateau" else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(cfg.schedule, cfg.epochs, steps_per_epoch, plateau))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    augment = cfg.augment if cfg.augment != type(cfg.augment)() else None

    result = TrainResult(model=model, device=str(device))
    state = read_resume_state(resume.path, cfg, meta) if resume else None
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["generator"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if plateau:
            plateau.__dict__.update(state["plateau"])
        result.curves, result.timings = state["curves"], state["timings"]
    bar = _progress(progress and sys.stdout.isatty())
    log_lines = progress and not sys.stdout.isatty()
    with bar:
        for epoch in range(len(result.curves), cfg.epochs):
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                loss="", rate="")
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for step, (x, y) in enumerate(train_split.batches(cfg.batch_size, gen, augment)):
                with accel.autocast():
                    logits = train_model(accel.inputs(x))
                    loss = loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                # accumulate on the device: reading a value would stall the GPU every step
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                if step % 50 == 49 or step == steps_per_epoch - 1:
                    rate = (step + 1) * cfg.batch_size / (time.perf_counter() - start)
                    # reading the loss would make the host wait for the GPU: CPU only
                    shown = f"loss {loss.item():.4f}" if device.type == "cpu" else ""
                    bar.update(task, completed=step + 1, loss=shown, rate=f"{rate:,.0f} img/s")
            train_seconds = time.perf_counter() - start
            test_loss, test_acc, _ = evaluate_split(model, test_split)
            if plateau:  # the new LR from the next epoch's first step on, as in Keras
                plateau.update(test_loss)
                for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
                    group["lr"] = base_lr * plateau.scale
            row = {"epoch": epoch, "train_loss": round(loss_sum.item() / len(train_split), 6),
                   "train_acc": round(correct.item() / len(train_split), 6),
                   "test_loss": round(test_loss, 6), "test_acc": round(test_acc, 6), "lr": lr}
            if not all(math.isfinite(v) for v in (row["train_loss"], row["test_loss"], lr)):
                raise Diverged(
                    f"training diverged in epoch {epoch + 1}: train loss {row['train_loss']}, test "
                    f"loss {row['test_loss']} at learning rate {lr:g}. Nothing of this epoch is kept "
                    f"and no model is written; lower optimizer.lr or change the schedule, then rerun")
            timing = {"epoch": epoch, "seconds": round(time.perf_counter() - start, 3),
                      "train_images_per_s": round(len(train_split) / train_seconds, 1)}
            bar.update(task, description=f"epoch {epoch + 1}/{cfg.epochs} test acc {test_acc:.4f}")
            result.curves.append(row)
            result.timings.append(timing)
            if resume:
                _save_state(resume, cfg, meta, model, optimizer, scheduler, gen, result, plateau)
            if on_epoch:
                on_epoch(row, timing)
            if log_lines:  # after the save: an epoch in the log is an epoch kept
                print(epoch_line(row, timing, result.timings, cfg.epochs), flush=True)
    if resume:
        resume.path.unlink(missing_ok=True)  # finished: nothing stale to resume from later
    return result


def _save_state(resume: Resume, cfg, meta, model, optimizer, scheduler, gen, result, plateau) -> None:
    from cnnbench.files import write_torch

    write_torch(resume.path, {"fingerprint": fingerprint(cfg, meta), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(), "generator": gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "plateau": plateau.state() if plateau else None,
                "curves": result.curves, "timings": result.timings, "extra": resume.extra})


def epoch_line(row: dict, timing: dict, timings: list[dict], epochs: int) -> str:
    """One epoch as a line for a log: its results, speed and the time the rest will take
    at the mean pace so far."""
    left = (epochs - row["epoch"] - 1) * sum(t["seconds"] for t in timings) / len(timings)
    return (f"epoch {row['epoch'] + 1}/{epochs}: train loss {row['train_loss']:.4f} acc "
            f"{row['train_acc']:.4f}, test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f}, "
            f"{timing['train_images_per_s']:,.0f} img/s, {timing['seconds']:.0f} s, "
            f"{format_duration(left)} left")


def format_duration(seconds: float) -> str:
    """3 s, 4 min 05 s, 2 h 03 min: as precise as a person needs."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)


def save_checkpoint(path: Path, model: nn.Module, cfg: ModelConfig, meta: dict,
                    run_id: str | None) -> None:
    """Weights plus everything needed to rebuild and feed the model; plain types only,
    so it loads with ``torch.load(weights_only=True)``."""
    from cnnbench.files import write_torch

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
        raise TrainError(f"{path} does not exist: train the model first (`dvc repro train@{name}`), "
                         f"or restore it with `dvc checkout {path}`")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        missing = {"state_dict", "config", "classes", "input_shape", "mean", "std", "mlflow_run_id"} - set(ckpt)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        cfg = ModelConfig.model_validate(ckpt["config"])
        classes, weights = list(ckpt["classes"]), dict(ckpt["state_dict"])
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways inside torch.load
        # only the type: torch's own message advises weights_only=False, unsafe for any file
        raise TrainError(f"{path} is not a readable cnnbench checkpoint ({type(e).__name__}); {fix}") from None
    model = build_model(cfg, len(classes))
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise TrainError(f"{path} does not hold weights of arch {cfg.arch!r} "
                         f"({str(e).splitlines()[0]}); {fix}") from None
    bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise TrainError(f"{path} holds non-finite weights (NaN or infinity in {', '.join(bad[:3])}); "
                         f"{fix}")
    return model.to(device, memory_format=torch.channels_last).eval(), ckpt


def load_matching_checkpoint(path: Path, cfg: ModelConfig, name: str,
                             params_file: str = "params.yaml") -> tuple[nn.Module, dict]:
    """load_checkpoint, refusing a checkpoint trained with another config than ``cfg``
    (models.<name> of ``params_file``)."""
    model, ckpt = load_checkpoint(path)
    if ckpt["config"] != cfg.model_dump():
        raise TrainError(f"{path} was trained with another config than models.{name} in "
                         f"{params_file}; retrain it with `dvc repro train@{name}`")
    return model, ckpt
