"""Seed 002's MNIST network (../shared/seeds/002_381e2cce1e674155.txt)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import conv_relu_bn, head


@register("seed002_mnist", dataset="mnist")
def seed002_mnist(num_classes: int = 10, dropout: float = 0.1) -> nn.Module:
    """Seed 002 (002_381e2cce1e674155.txt), MNIST, 99.4% under 15k parameters.

    conv 10, 15, 20, pool, 1x1 10, conv 15, 20, 1x1 10, conv 7x7 10; ReLU, BN and dropout
    after every conv but the last. 13,800 trainable, 14,000 Keras total. Reported 99.45%
    after 20 epochs with seed 001's schedule. Neither the dropout rate nor the batch size
    is stated: dropout 0.1 and batch 64 (seed 001's) are assumed.
    """
    return nn.Sequential(
        *conv_relu_bn(1, 10, dropout=dropout), *conv_relu_bn(10, 15, dropout=dropout),
        *conv_relu_bn(15, 20, dropout=dropout), nn.MaxPool2d(2),
        *conv_relu_bn(20, 10, 1, dropout=dropout), *conv_relu_bn(10, 15, dropout=dropout),
        *conv_relu_bn(15, 20, dropout=dropout), *conv_relu_bn(20, 10, 1, dropout=dropout),
        nn.Conv2d(10, num_classes, 7),
        *head())
