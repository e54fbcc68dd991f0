"""Seed 003's CIFAR-10 network (../shared/seeds/003_ef0e2d4687154a56.txt)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import Dropout, SeparableConv2d, head


@register("seed003_sep", dataset="cifar10")
def seed003_sep(num_classes: int = 10) -> nn.Module:
    """Seed 003 (003_ef0e2d4687154a56.txt), CIFAR-10, separable convolutions and 1x1
    transitions.

    sep 64, 128 (same, no bias, ReLU, BN, dropout 0.3), 1x1 conv to 32, pool; sep 128,
    128, 1x1 to 64, pool; sep 128, 256; sep 1x1 to 10; global average pooling. Receptive
    fields 3, 5, 5, 6, 10, 14, 14, 16, 24, 32, 32. 90,363 trainable, 92,027 Keras total.
    Reported 82.39% after 50 epochs of 48 steps (batch 1024). The optimizer is not
    stated: Adam at 0.003 (params.yaml), whose training accuracy follows the seed log's
    closer than Adam's default 0.001. The seed's last two epochs follow a learning-rate
    drop (Keras's ReduceLROnPlateau, read off its log); params.yaml gives ours the same
    schedule (patience 5). Evidence: docs/results.md#seed003_sep.
    """

    def block(in_ch: int, out_ch: int) -> list[nn.Module]:
        return [SeparableConv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.ReLU(),
                nn.BatchNorm2d(out_ch), Dropout(0.3)]

    def transition(in_ch: int, out_ch: int) -> list[nn.Module]:
        return [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 64), *block(64, 128), *transition(128, 32),
                         *block(32, 128), *block(128, 128), *transition(128, 64),
                         *block(64, 128), *block(128, 256),
                         SeparableConv2d(256, num_classes, 1, bias=False),
                         *head(nn.AdaptiveAvgPool2d(1)))
