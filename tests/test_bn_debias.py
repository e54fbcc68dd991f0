"""benchmarks/bn_debias.py: reading Keras's debiased BatchNorm statistics back from
PyTorch's running ones, as the README's seed003_sep result cites it."""

import importlib.util

import torch
from torch import nn

from conftest import REPO
from test_accel import real_batch


def load_script():
    spec = importlib.util.spec_from_file_location("bn_debias", REPO / "benchmarks" / "bn_debias.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_debiased_statistics_are_the_batches_own_after_a_few_steps(mnist_dir):
    """Three steps on the same real batch: PyTorch's running statistics are still mostly
    the starting 0 and 1, the debiased ones are the batch's mean and (unbiased) variance."""
    x, _ = real_batch(mnist_dir, 128)
    x = 0.5 * x + 2  # statistics far from the starting 0 and 1 (standardized pixels are near them)
    bn = nn.BatchNorm2d(1, momentum=0.01).train()
    for _ in range(3):
        bn(x)
    mean, var = x.mean(), x.var()
    assert bn.running_mean.item() < 0.05 * mean.item() and bn.running_var.item() > 3 * var.item()
    load_script().debias(bn)
    assert torch.allclose(bn.running_mean, mean.reshape(1), rtol=1e-4)
    assert torch.allclose(bn.running_var, var.reshape(1), rtol=1e-4)
