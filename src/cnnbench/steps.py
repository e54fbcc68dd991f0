"""One training step (forward, backward, optimizer), run kernel by kernel or replayed
from a CUDA graph.

At the reference models' batch sizes (32 to 128) a small CNN's step on a GPU is a few
hundred kernels of microseconds each, and the GPU waits for Python to launch them. A CUDA
graph records the whole step once and replays it with one launch. Both kinds of step
keep the epoch's loss and accuracy sums on the device, so no step waits for the GPU.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from cnnbench.accel import Accel
from cnnbench.models.keras import MOMENTUM


class EagerStep:
    """The step as PyTorch runs it, one kernel launch at a time: the CPU's path, and the
    GPU's where graphs are off."""

    def __init__(self, train_model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: nn.Module, accel: Accel):
        self.train_model, self.optimizer, self.loss_fn, self.accel = train_model, optimizer, loss_fn, accel
        self.loss_sum = torch.zeros((), device=accel.device)
        self.correct = torch.zeros((), device=accel.device, dtype=torch.long)
        self.set_grads_to_none = True
        self.autocast_cache = True

    def start_epoch(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()

    def sums(self) -> tuple[float, int]:
        """The epoch's summed training loss and number of correct predictions (waits for
        the device)."""
        return self.loss_sum.item(), self.correct.item()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step on the batch; returns its (device) loss."""
        with self.accel.autocast(cache=self.autocast_cache):
            logits = self.train_model(self.accel.inputs(x))
            loss = self.loss_fn(logits, y)
        self.optimizer.zero_grad(set_to_none=self.set_grads_to_none)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        return loss


class GraphedStep(EagerStep):
    """Full batches replayed from one CUDA graph of the whole step.

    The first ``WARMUP`` steps, and every step while Keras-style BatchNorm still debiases
    its momentum (a Python value per step, models/keras.py), run eagerly: cuDNN picks its
    kernels and the optimizer creates its state before the capture. Batches of another
    size (an epoch's last, short one) run eagerly too, on the same weights, gradients and
    optimizer state, so nothing is captured twice. The learning rate lives in a device
    tensor that the graph reads and each replay refreshes from the optimizer's float,
    which the schedule keeps setting as usual.

    ``capture=False`` runs the same code without recording a graph (the CPU has none):
    tests use it to check everything around the capture against the plain step.
    """

    WARMUP = 3

    def __init__(self, train_model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: nn.Module, accel: Accel, batch_size: int, capture: bool = True):
        super().__init__(train_model, optimizer, loss_fn, accel)
        self.batch_size, self.capture = batch_size, capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.recorded = False  # the step was recorded (a graph, or its stand-in without capture)
        self.eager_steps = self.replays = 0
        self.autocast_cache = False  # bf16 weight copies cached across a capture would go stale

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if len(y) != self.batch_size or (not self.recorded and not self._ready()):
            self.eager_steps += 1
            return super().__call__(x, y)
        if not self.recorded:
            self._record(x, y)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            lr.fill_(group["lr"])
        self._replay()
        self.replays += 1
        return self.static_loss

    def _ready(self) -> bool:
        return self.eager_steps >= self.WARMUP and not debiasing(self.train_model)

    def _record(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x, self.static_y = x.clone(), y.clone()
        self.lrs = [torch.tensor(float(g["lr"]), device=self.accel.device) for g in self.optimizer.param_groups]
        if self.capture:
            self.graph = torch.cuda.CUDAGraph()
            torch.cuda.synchronize()
            # the gradients are made inside the graph's memory, then kept
            with self._lr_from_tensors(), torch.cuda.graph(self.graph):
                self.static_loss = super().__call__(self.static_x, self.static_y)
        self.recorded = True
        # eager steps from now on zero the graph's gradient tensors instead of dropping them
        self.set_grads_to_none = False

    def _replay(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        # no capture: the recorded step's code, run on the static buffers and the LR tensors
        with self._lr_from_tensors():
            self.static_loss = EagerStep.__call__(self, self.static_x, self.static_y)

    @contextlib.contextmanager
    def _lr_from_tensors(self):
        """Inside: the optimizer reads its learning rates from ``self.lrs`` (what a graph
        records); outside it keeps the floats the schedule sets."""
        floats = [group["lr"] for group in self.optimizer.param_groups]
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            group["lr"] = lr
        try:
            yield
        finally:
            for group, lr in zip(self.optimizer.param_groups, floats):
                group["lr"] = lr


def graphs_wanted(accel: Accel) -> bool:
    """CUDA graphs for the whole step: on CUDA unless torch.compile does its own
    (``compile: reduce-overhead``) or ``CNNBENCH_CUDA_GRAPHS=off`` says not to."""
    return (accel.device.type == "cuda" and not accel.compile_mode
            and os.environ.get("CNNBENCH_CUDA_GRAPHS", "on") != "off")


def make_step(train_model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
              accel: Accel, batch_size: int) -> EagerStep:
    if graphs_wanted(accel):
        return GraphedStep(train_model, optimizer, loss_fn, accel, batch_size)
    return EagerStep(train_model, optimizer, loss_fn, accel)


def debiasing(model: nn.Module) -> bool:
    """Whether a Keras-style BatchNorm of ``model`` still changes its momentum from step to
    step: models/keras.py's forward pre-hook sets it in Python, which a CUDA graph would
    freeze, at each step until it settles at keras.MOMENTUM (its first 2,000 steps)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m._forward_pre_hooks
               and m.momentum != MOMENTUM for m in model.modules())

