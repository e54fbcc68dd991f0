"""Seed 001's CIFAR-10 network (../shared/seeds/001_ae77fa9c2fa4d891.txt)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import SeparableConv2d, head, sep_trunk


@register("seed001_sep", dataset="cifar10")
def seed001_sep(num_classes: int = 10) -> nn.Module:
    """Seed 001 (001_ae77fa9c2fa4d891.txt), CIFAR-10, separable convolutions only.

    sep 48 valid, 48 valid, pool; 96 same, 96 valid, pool; 192 same, 192 valid, pool
    (each sep + BN + ReLU, dropout after pools; shapes 30, 28, 14, 14, 12, 6, 6, 4, 2
    as in the seed's summary); head: sep 2x2 valid to 10. 80,629 trainable, 81,973 Keras
    total. Reported 83.50% after 50 epochs, Adam, batch 128.

    The seed does not state its dropout rate. 0.25, the base network's, is what its log
    implies: with it (and the flip) our training and test accuracy follow the log's
    (docs/results.md#seed001_sep).
    """
    return nn.Sequential(*sep_trunk(first_padding=0, dropout=0.25),
                         *head(SeparableConv2d(192, num_classes, 2)))
