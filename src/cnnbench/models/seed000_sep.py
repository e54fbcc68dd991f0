"""Seed 000's CIFAR-10 network (../shared/seeds/000_0c02c1ae10fabc45.txt)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import SeparableConv2d, head, sep_trunk


@register("seed000_sep", dataset="cifar10")
def seed000_sep(num_classes: int = 10) -> nn.Module:
    """Seed 000 (000_0c02c1ae10fabc45.txt), CIFAR-10, separable convolutions only.

    As seed 001 but the first conv is 'same' (32x32 as annotated in the seed), the
    head is sep 4x4 'same' to 10 followed by global average pooling, and dropout 0.1 (not
    stated; with it and the augmentation its log implies, ours follows the log:
    docs/results.md#seed000_sep).
    82,933 trainable, 84,277 Keras total. Reported 83.25% after 50 epochs, Adam, batch 32.
    """
    return nn.Sequential(*sep_trunk(first_padding=1, dropout=0.1),
                         SeparableConv2d(192, num_classes, 4, padding="same"),
                         *head(nn.AdaptiveAvgPool2d(1)))
