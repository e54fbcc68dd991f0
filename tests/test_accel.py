"""The fast path (channels_last, bf16 autocast, fused optimizers, cuDNN autotuning, glibc's
heap on the CPU) and the Keras-compatible defaults: both change how a model runs, neither
may change what it computes beyond the precision it asks for."""

import math
import os
import platform
import subprocess
import sys

import pytest
import torch

from cnnbench.accel import Accel
from cnnbench.checkpoints import load_checkpoint, save_checkpoint
from cnnbench.config import ModelConfig
from cnnbench.data import load_meta, load_split
from cnnbench.loader import normalize
from cnnbench.models import create_model
from cnnbench.models.keras import apply_keras_defaults
from cnnbench.train import train

ARCHS = ["seed001_mnist", "mnist_7k"]  # a separable net and a plain one


def real_batch(mnist_dir, n=256):
    meta = load_meta(mnist_dir)
    images, labels = load_split(mnist_dir, "train")
    return normalize(images[:n], meta["mean"], meta["std"]), labels[:n]


def loss_and_grads(model, accel: Accel, x, y):
    model, step_model = accel.prepare(model)
    with accel.autocast():
        loss = torch.nn.functional.cross_entropy(step_model(accel.inputs(x.to(accel.device))),
                                                 y.to(accel.device))
    loss.backward()
    grads = torch.cat([p.grad.flatten().float().cpu() for p in model.parameters()])
    return loss.item(), grads


def compare_fast_to_fp32(arch, mnist_dir, device):
    torch.manual_seed(0)
    weights = create_model(arch).state_dict()
    x, y = real_batch(mnist_dir)
    results = []
    for accel in (Accel(torch.device("cpu")), Accel(device, bf16=True)):
        model = create_model(arch).train()
        model.load_state_dict(weights)
        results.append(loss_and_grads(model, accel, x, y))
    (ref_loss, ref_grads), (fast_loss, fast_grads) = results
    # bf16 keeps 8 bits of mantissa: about 0.4% per operation, much less after the
    # fp32 accumulation autocast keeps for reductions
    assert fast_loss == pytest.approx(ref_loss, rel=2e-2), (fast_loss, ref_loss)
    cosine = torch.nn.functional.cosine_similarity(ref_grads, fast_grads, dim=0).item()
    assert cosine > 0.95, cosine  # a wrong layout or a lost gradient gives about 0
    return ref_loss, fast_loss


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_path_gives_the_fp32_loss_and_gradients_on_the_cpu(arch, mnist_dir):
    ref_loss, fast_loss = compare_fast_to_fp32(arch, mnist_dir, torch.device("cpu"))
    assert fast_loss != ref_loss  # bf16 really was used: the comparison is not vacuous


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("arch", ARCHS)
def test_fast_path_gives_the_fp32_loss_and_gradients_on_the_gpu(arch, mnist_dir):
    compare_fast_to_fp32(arch, mnist_dir, torch.device("cuda"))


def test_accel_follows_the_config():
    cfg = ModelConfig(arch="mnist_7k", dataset="mnist", epochs=1, batch_size=8)
    assert Accel.for_config(cfg, torch.device("cpu")) == Accel(torch.device("cpu"))
    assert Accel.for_config(cfg, torch.device("cuda")).bf16  # auto: bf16 on CUDA
    fp32 = cfg.model_copy(update={"precision": "fp32", "compile": "reduce-overhead"})
    accel = Accel.for_config(fp32, torch.device("cuda"))
    assert not accel.bf16 and accel.compile_mode == "reduce-overhead"


def test_bf16_training_follows_fp32_training_on_the_cpu(mnist_dir):
    """The trainer's own loop with bf16 on: a few steps track the fp32 run (bf16 is slow on
    this CPU, so the test is short; the GPU is where it pays)."""
    cfg = ModelConfig(arch="mnist_7k", dataset="mnist", epochs=1, batch_size=64,
                      train_limit=640, optimizer={"lr": 0.01}, device="cpu")
    fp32 = train(cfg, mnist_dir, progress=False).curves[0]
    bf16 = train(cfg.model_copy(update={"precision": "bf16"}), mnist_dir, progress=False).curves[0]
    assert bf16["train_loss"] == pytest.approx(fp32["train_loss"], rel=5e-2)
    assert bf16["train_loss"] != fp32["train_loss"]


def test_keras_defaults_change_exactly_what_they_say():
    torch.manual_seed(0)
    model = apply_keras_defaults(create_model("seed001_mnist"))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # momentum 1.0 is the debiased average's first step (tests/test_keras_batchnorm.py)
    assert bns and all(m.momentum == 1.0 and m.eps == 1e-3 for m in bns)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            assert m.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
            # Glorot's bound is reached: not PyTorch's smaller Kaiming(a=sqrt 5) bound
            assert m.weight.abs().max() > 0.9 * math.sqrt(6 / (fan_in + fan_out)) or m.weight.numel() < 100
            assert m.bias is None or not m.bias.any()
    plain = create_model("seed001_mnist")
    assert all(m.eps == 1e-5 for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_keras_defaults_set_adam_epsilon_unless_given():
    base = dict(arch="seed001_mnist", dataset="mnist", epochs=1, batch_size=8)
    assert ModelConfig(**base).optimizer.eps == 1e-8
    assert ModelConfig(**base, keras_defaults=True).optimizer.eps == 1e-7
    assert ModelConfig(**base, keras_defaults=True, optimizer={"eps": 1e-4}).optimizer.eps == 1e-4


def test_keras_checkpoint_loads_with_its_batchnorm_epsilon(mnist_dir, tmp_path):
    cfg = ModelConfig(arch="seed001_mnist", dataset="mnist", epochs=1, batch_size=64,
                      train_limit=500, keras_defaults=True)
    result = train(cfg, mnist_dir, progress=False)
    path = tmp_path / "k.pt"
    save_checkpoint(path, result.model, cfg, load_meta(mnist_dir), run_id=None)
    model, _ = load_checkpoint(path)
    x, _ = real_batch(mnist_dir, 16)
    assert torch.equal(model(x), result.model.cpu().eval()(x))  # trained on the GPU where there is one
    assert create_model(cfg.arch, num_classes=10, keras_defaults=cfg.keras_defaults)[2].eps == 1e-3


# In a fresh process: glibc's mallinfo2() counts the bytes it holds in mmapped blocks
# (hblkhd), which a 64 MiB tensor adds to by default and must not once the CPU fast path
# is prepared. It prints the growth before and after.
HEAP_PROBE = """
import ctypes, torch
from torch import nn
from cnnbench.accel import Accel

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mmapped_growth():
    before = libc.mallinfo2().hblkhd
    x = torch.ones(2**24)  # 64 MiB
    growth = libc.mallinfo2().hblkhd - before
    del x
    return growth

first = mmapped_growth()
Accel(torch.device("cpu")).prepare(nn.Linear(2, 2))
print(first, mmapped_growth())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's allocator's")
@pytest.mark.parametrize("switch", [None, "off"], ids=["default", "CNNBENCH_GLIBC_HEAP=off"])
def test_cpu_fast_path_keeps_large_tensors_off_mmap(switch):
    env = {k: v for k, v in os.environ.items() if k != "CNNBENCH_GLIBC_HEAP"}
    if switch:
        env["CNNBENCH_GLIBC_HEAP"] = switch
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE], check=True, capture_output=True,
                         text=True, env=env)
    before, after = map(int, out.stdout.split())
    assert before >= 2**26  # glibc's default: the tensor had a mapping of its own
    if switch == "off":
        assert after >= 2**26  # glibc left as it was
    else:
        assert after == 0  # prepared: it came from the heap
