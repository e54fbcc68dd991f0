"""The training loop: optimizers, LR schedules, per-epoch test scores, resuming.

No MLflow or file formats here: the caller passes ``on_epoch`` to record each epoch.
The device and its settings are accel.py's; checkpoints and saved states checkpoints.py's.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from cnnbench import CnnbenchError
from cnnbench.accel import Accel, resolve_device
from cnnbench.checkpoints import Resume
from cnnbench.config import ModelConfig, Schedule
from cnnbench.data import Dataset
from cnnbench.evaluate import evaluate_split
from cnnbench.loader import DeviceSplit
from cnnbench.models import create_model
from cnnbench.steps import graphs_wanted, make_step

CURVE_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"]


class TrainError(CnnbenchError):
    """A model cannot be trained as configured; the message says what to do."""


def preflight(cfg: ModelConfig, meta: dict, strict_budgets: bool = False) -> list[str]:
    """Checks that need the model, before any data is loaded or time is spent: the
    arch must take the dataset's images and give one logit per class (else TrainError).
    Returns budget warnings (a model whose parameters or epochs already break its
    budget), which are a TrainError with ``strict_budgets``."""
    model = create_model(cfg.arch, num_classes=len(meta["classes"]), keras_defaults=cfg.keras_defaults)
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


def build_optimizer(model: nn.Module, cfg: ModelConfig, capturable: bool = False) -> torch.optim.Optimizer:
    """``capturable``: Adam's step count kept on the device, so that a CUDA graph can
    record the optimizer step (steps.GraphedStep)."""
    opt = cfg.optimizer
    # one fused kernel for all parameters on CUDA instead of several per parameter
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if opt.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=opt.lr, momentum=opt.momentum,
                               nesterov=opt.nesterov, weight_decay=cfg.weight_decay, **fused)
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=opt.lr, eps=opt.eps, weight_decay=cfg.weight_decay,
               **fused, **({"capturable": True} if capturable else {}))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


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
          progress: bool = True, resume: Resume | None = None,
          device: torch.device | None = None) -> TrainResult:
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
    device = device or resolve_device(cfg.device)
    accel = Accel.for_config(cfg, device)
    seed_everything(cfg.seed)
    model, train_model = accel.prepare(
        create_model(cfg.arch, num_classes=len(meta["classes"]), keras_defaults=cfg.keras_defaults))

    train_images, train_labels = data.train
    if cfg.train_limit:
        train_images, train_labels = train_images[:cfg.train_limit], train_labels[:cfg.train_limit]
    train_split = DeviceSplit(train_images, train_labels, meta["mean"], meta["std"], device)
    test_split = DeviceSplit(*data.test, meta["mean"], meta["std"], device)

    optimizer = build_optimizer(model, cfg, capturable=graphs_wanted(accel))
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    plateau = Plateau(cfg.schedule) if cfg.schedule.name == "plateau" else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_multiplier(cfg.schedule, cfg.epochs, steps_per_epoch, plateau))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    augment = cfg.augment if cfg.augment != type(cfg.augment)() else None

    result = TrainResult(model=model, device=str(device))
    state = resume.read(cfg, meta) if resume else None
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
    train_step = make_step(train_model, optimizer, loss_fn, accel, cfg.batch_size)
    bar = _progress(progress and sys.stdout.isatty())
    log_lines = progress and not sys.stdout.isatty()
    with bar:
        for epoch in range(len(result.curves), cfg.epochs):
            task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                loss="", rate="")
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            model.train()
            train_step.start_epoch()
            for step, (x, y) in enumerate(train_split.batches(cfg.batch_size, gen, augment)):
                loss = train_step(x, y)
                scheduler.step()
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
            loss_sum, correct = train_step.sums()
            row = {"epoch": epoch, "train_loss": round(loss_sum / len(train_split), 6),
                   "train_acc": round(correct / len(train_split), 6),
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
                resume.save(cfg, meta, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                    "generator": gen.get_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "plateau": plateau.state() if plateau else None,
                    "curves": result.curves, "timings": result.timings})
            if on_epoch:
                on_epoch(row, timing)
            if log_lines:  # after the save: an epoch in the log is an epoch kept
                print(epoch_line(row, timing, result.timings, cfg.epochs), flush=True)
    if resume:
        resume.finish()
    return result


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
