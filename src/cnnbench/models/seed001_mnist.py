"""Seed 001's MNIST network (../shared/seeds/001_ae77fa9c2fa4d891.txt)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import SeparableConv2d, conv_relu_bn, head


@register("seed001_mnist", dataset="mnist")
def seed001_mnist(num_classes: int = 10) -> nn.Module:
    """Seed 001 (001_ae77fa9c2fa4d891.txt), MNIST, 99.4% under 15k parameters.

    conv 16, 32, 1x1 16, pool, sep 16, conv 16, sep 16, conv 16, conv 4x4 10, BN (ReLU
    after every conv but the last; BN where the seed's summary has one). 13,582
    trainable, 13,794 Keras total. Reported 99.42% after 20 epochs: Adam lr 0.003,
    lr = 0.003/(1+0.319*epoch), batch 64.
    """
    return nn.Sequential(
        *conv_relu_bn(1, 16), *conv_relu_bn(16, 32),
        nn.Conv2d(32, 16, 1), nn.ReLU(), nn.MaxPool2d(2),
        SeparableConv2d(16, 16, 3), nn.ReLU(), nn.BatchNorm2d(16),
        nn.Conv2d(16, 16, 3), nn.ReLU(),
        SeparableConv2d(16, 16, 3), nn.ReLU(), nn.BatchNorm2d(16),
        *conv_relu_bn(16, 16),
        nn.Conv2d(16, num_classes, 4), nn.BatchNorm2d(num_classes),
        *head())
