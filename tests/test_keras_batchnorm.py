"""keras_defaults' BatchNorm keeps its running statistics debiased, as Keras on
TensorFlow does (zero_debias): what seed 003's early epochs need (docs/results.md, "seed003_sep")."""

import pytest
import torch
from torch import nn

from cnnbench.models.keras import apply_keras_defaults
from test_accel import real_batch


def keras_bn(channels: int = 1) -> nn.BatchNorm2d:
    return apply_keras_defaults(nn.Sequential(nn.BatchNorm2d(channels)))[0].train()


def batches(mnist_dir, n: int):
    """n real MNIST batches of 32, shifted and scaled apart so that their statistics
    differ from each other and from the starting mean 0 and variance 1."""
    x, _ = real_batch(mnist_dir, 32 * n)
    return [(0.5 + 0.1 * i) * chunk + 2 - 0.05 * i for i, chunk in enumerate(x.split(32))]


def test_running_statistics_are_the_batches_own_from_the_first_step(mnist_dir):
    x = batches(mnist_dir, 1)[0]
    keras, plain = keras_bn(), nn.BatchNorm2d(1, momentum=0.01).train()
    for _ in range(3):
        keras(x), plain(x)
    mean, var = x.mean(), x.var()  # BatchNorm keeps the unbiased variance
    assert torch.allclose(keras.running_mean, mean.reshape(1), rtol=1e-5)
    assert torch.allclose(keras.running_var, var.reshape(1), rtol=1e-5)
    # PyTorch's own still hold 97% of their starting 0 and 1
    assert plain.running_mean.item() < 0.05 * mean.item() and plain.running_var.item() > 3 * var.item()


def test_running_statistics_follow_tensorflows_zero_debiased_average(mnist_dir):
    """TensorFlow's update, written out: a biased average from zero, divided by 1 - 0.99**t."""
    bn, biased_mean, biased_var = keras_bn(), 0.0, 0.0
    for t, x in enumerate(batches(mnist_dir, 20), start=1):
        bn(x)
        biased_mean = 0.99 * biased_mean + 0.01 * x.mean().item()
        biased_var = 0.99 * biased_var + 0.01 * x.var().item()
        assert bn.running_mean.item() == pytest.approx(biased_mean / (1 - 0.99**t), rel=1e-5)
        assert bn.running_var.item() == pytest.approx(biased_var / (1 - 0.99**t), rel=1e-5)
    assert bn.num_batches_tracked.item() == 20


def test_after_2000_steps_they_match_plain_averages_and_evaluation_leaves_them(mnist_dir):
    """Past 2,000 steps what is left of PyTorch's starting values (0.99**t < 2e-9) is
    negligible, so a seed model trained that long ends with the statistics it had before
    the debiasing; evaluation steps neither move them nor count."""
    stream = batches(mnist_dir, 10)
    keras, plain = keras_bn(), nn.BatchNorm2d(1, momentum=0.01).train()
    for step in range(2100):
        keras(stream[step % 10]), plain(stream[step % 10])
    assert keras.momentum == 0.01
    assert torch.allclose(keras.running_mean, plain.running_mean, rtol=1e-6)
    assert torch.allclose(keras.running_var, plain.running_var, rtol=1e-6)
    before = keras.state_dict()
    keras.eval()(stream[0])
    assert all(torch.equal(before[k], v) for k, v in keras.state_dict().items())


def test_a_resumed_run_continues_the_same_average(mnist_dir):
    """The step count travels in BatchNorm's num_batches_tracked, which checkpoints hold."""
    stream = batches(mnist_dir, 10)
    whole = keras_bn()
    for x in stream:
        whole(x)
    first = keras_bn()
    for x in stream[:4]:
        first(x)
    resumed = keras_bn()
    resumed.load_state_dict(first.state_dict())
    for x in stream[4:]:
        resumed(x)
    for k, v in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
