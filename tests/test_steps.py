"""The training step replayed from a CUDA graph trains as the plain fp32 step does.

The CPU has no CUDA graphs, so the CPU tests run GraphedStep with ``capture=False``: the
same static input buffers, learning-rate tensors refreshed before each "replay", eager
short batches and device-side sums, with the recorded step's code run instead of a
graph replay. The capture itself is checked by the GPU test, which skips without CUDA.
"""

import pytest
import torch
from torch import nn

from cnnbench import train as train_module
from cnnbench.accel import Accel
from cnnbench.config import ModelConfig
from cnnbench.models import create_model
from cnnbench.models.keras import MOMENTUM
from cnnbench.steps import EagerStep, GraphedStep, graphs_wanted
from cnnbench.train import build_optimizer, train

# 1,000 images at batch 64: 15 full batches and a short one of 40 in every epoch. The LR
# falls tenfold each epoch, so a graph that kept reading the first epoch's LR would train
# the later epochs ten and a hundred times too fast.
CFG = ModelConfig(arch="mnist_7k", dataset="mnist", epochs=3, batch_size=64, train_limit=1000,
                  optimizer={"lr": 0.01}, schedule={"name": "step", "step_size": 1, "gamma": 0.1},
                  device="cpu")


def uncaptured_steps(made: list):
    def make(train_model, optimizer, loss_fn, accel, batch_size):
        made.append(GraphedStep(train_model, optimizer, loss_fn, accel, batch_size, capture=False))
        return made[-1]
    return make


def test_the_recorded_step_trains_as_the_plain_step(mnist_dir, monkeypatch):
    plain = train(CFG, mnist_dir, progress=False).curves
    made: list[GraphedStep] = []
    monkeypatch.setattr(train_module, "make_step", uncaptured_steps(made))
    recorded = train(CFG, mnist_dir, progress=False).curves
    step = made[0]
    # every full batch after the warm-up came from the recorded step; each short one not
    assert step.replays == 3 * 15 - GraphedStep.WARMUP
    assert step.eager_steps == GraphedStep.WARMUP + 3
    assert [r["lr"] for r in recorded] == [r["lr"] for r in plain] == pytest.approx([0.01, 0.001, 0.0001])
    for mine, ref in zip(recorded, plain):
        # the LR as a float32 tensor rounds differently from Python's float: not bit for bit
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-3, abs=2e-3), (key, mine, ref)
    # the later epochs learn little, at their small LR: as in the plain run, not ten times more
    assert abs(recorded[2]["train_loss"] - recorded[1]["train_loss"]) < 0.1


def test_a_keras_batchnorm_is_recorded_only_once_its_momentum_settles():
    torch.manual_seed(0)
    model = create_model("seed001_mnist", keras_defaults=True).train()
    cfg = ModelConfig(arch="seed001_mnist", dataset="mnist", epochs=1, batch_size=8, keras_defaults=True)
    step = GraphedStep(model, build_optimizer(model, cfg), nn.CrossEntropyLoss(),
                       Accel(torch.device("cpu")), batch_size=8, capture=False)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for _ in range(GraphedStep.WARMUP + 2):
        step(x, y)
    assert step.replays == 0  # still debiasing: its momentum changes every step
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.momentum = MOMENTUM  # as after its first 2,000 steps
    step(x, y)
    assert step.replays == 1


def test_graphs_are_for_cuda_without_torch_compile(monkeypatch):
    assert not graphs_wanted(Accel(torch.device("cpu")))
    assert graphs_wanted(Accel(torch.device("cuda")))
    assert not graphs_wanted(Accel(torch.device("cuda"), compile_mode="reduce-overhead"))
    monkeypatch.setenv("CNNBENCH_CUDA_GRAPHS", "off")
    assert not graphs_wanted(Accel(torch.device("cuda")))


def test_the_cpu_trains_with_the_plain_step(mnist_dir, monkeypatch):
    made: list = []
    real = train_module.make_step
    monkeypatch.setattr(train_module, "make_step", lambda *a: made.append(real(*a)) or made[-1])
    train(CFG.model_copy(update={"epochs": 1}), mnist_dir, progress=False)
    assert type(made[0]) is EagerStep


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_graph_trains_as_the_eager_step_on_the_gpu(mnist_dir, monkeypatch):
    cfg = CFG.model_copy(update={"device": "cuda", "precision": "fp32"})
    made: list = []
    real = train_module.make_step
    monkeypatch.setattr(train_module, "make_step", lambda *a: made.append(real(*a)) or made[-1])
    graphed = train(cfg, mnist_dir, progress=False).curves
    assert isinstance(made[0], GraphedStep) and made[0].graph is not None
    assert made[0].replays == 3 * 15 - GraphedStep.WARMUP
    monkeypatch.setenv("CNNBENCH_CUDA_GRAPHS", "off")
    eager = train(cfg, mnist_dir, progress=False).curves
    assert type(made[-1]) is EagerStep
    for mine, ref in zip(graphed, eager):
        for key in ("train_loss", "test_loss", "test_acc"):
            assert mine[key] == pytest.approx(ref[key], rel=2e-2, abs=5e-3), (key, mine, ref)
