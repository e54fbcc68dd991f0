"""cnnbench's separable CIFAR-10 network: under 100,000 parameters, 90%, 50 epochs."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import SeparableConv2d


def _sep_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [SeparableConv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]


class _Residual(nn.Module):
    """x + f(x): the ResNet shortcut, which lets a deep stack of thin layers train fast."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.body(x)


@register("sep_cifar_94k", dataset="cifar10")
def sep_cifar_94k(num_classes: int = 10) -> nn.Module:
    """Depthwise-separable only, under 100,000 parameters, for CIFAR-10's 90%.

    The layout of ResNet-9 (the fast CIFAR-10 training recipes): a stem, then three
    stages of widen + pool, the first two followed by a residual pair; every layer a
    depthwise 3x3 then a pointwise 1x1 conv with BN and ReLU. Widths 32; 64 (32->16);
    128 (16->8); 256 (8->4); global average pooling; linear to the classes. No full kxk
    convolution anywhere: every kxk is depthwise, every channel mix is 1x1. 93,861
    trainable parameters (95,589 Keras total).

    Why 256 at the end: the last stage feeds the classifier and runs at 8x8, so widening
    it from 192 buys capacity for little compute (docs/results.md#sep_cifar_94k).
    """
    return nn.Sequential(
        *_sep_bn_relu(3, 32),
        *_sep_bn_relu(32, 64), nn.MaxPool2d(2),
        _Residual(*_sep_bn_relu(64, 64), *_sep_bn_relu(64, 64)),
        *_sep_bn_relu(64, 128), nn.MaxPool2d(2),
        _Residual(*_sep_bn_relu(128, 128), *_sep_bn_relu(128, 128)),
        *_sep_bn_relu(128, 256), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, num_classes))
