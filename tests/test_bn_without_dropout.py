"""benchmarks/bn_without_dropout.py: BatchNorm statistics recomputed with dropout off."""

import sys

import pytest
import torch
from torch import nn

from cnnbench.loader import DeviceSplit, normalize
from cnnbench.models.keras import apply_keras_defaults
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from bn_without_dropout import recompute_batchnorm  # noqa: E402


def test_recomputed_statistics_are_those_of_the_dropout_free_activations():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    model = apply_keras_defaults(nn.Sequential(conv, nn.Dropout(0.5), nn.BatchNorm2d(4)))
    images = torch.randint(0, 256, (2000, 3, 8, 8), dtype=torch.uint8)  # two batches of 1,000
    split = DeviceSplit(images, torch.zeros(2000, dtype=torch.long), [0.5] * 3, [0.25] * 3,
                        torch.device("cpu"))
    model.train()
    model(normalize(images[:64], split.mean, split.std))  # statistics of a training step
    recompute_batchnorm(model, split)
    with torch.no_grad():
        plain = conv(normalize(images, split.mean, split.std))
    bn = model[2]
    assert not model.training and not bn.training
    assert torch.allclose(bn.running_mean, plain.mean((0, 2, 3)), atol=1e-5)
    # dropout left on would also move the variance; the two batches' unbiased variances
    # average to the whole set's within a fraction of a percent
    assert bn.running_var == pytest.approx(plain.var((0, 2, 3)), rel=5e-3)
