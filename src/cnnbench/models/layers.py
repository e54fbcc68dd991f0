"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on the CPU; the same thing on other devices.

    On the CPU, PyTorch draws dropout's mask one element at a time on one thread
    (``bernoulli_``): 37% of a training step of seed004_sep, 38% of seed003_sep. Here each
    element takes 16 bits of 64-bit random words, drawn in bulk, so an element is dropped
    with probability ``p`` rounded to 1/65536. A training step is 1.06x (seed001_sep) to
    1.46x (seed003_sep) faster on a 2-core CPU (benchmarks/dropout.py, results in
    benchmarks/results/dropout-cpu-2core.md). On a GPU, PyTorch's fused dropout kernel is already fast and
    is used as it is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p in (0.0, 1.0) or x.device.type != "cpu":
            return super().forward(x)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)  # all 64 bits
        bits = words.view(torch.int16)[:n]  # uniform over -32768..32767
        # the mask in x's own memory layout (channels_last stays channels_last)
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        bits = bits.as_strided(x.shape, x.stride()) if dense else bits.view(x.shape)
        keep = bits >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))


class SeparableConv2d(nn.Sequential):
    """Keras ``SeparableConv2D``: a depthwise kxk convolution (no bias) followed by a
    pointwise 1x1 convolution (bias unless ``bias=False``).

    It is one layer for summaries and receptive fields, as it is in Keras.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, padding: int | str = 0,
                 stride: int = 1, bias: bool = True):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size, stride=stride, padding=padding,
                                   groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=bias)


def conv_relu_bn(in_ch: int, out_ch: int, kernel_size: int = 3, padding: int = 0,
                 dropout: float = 0.0) -> list[nn.Module]:
    """conv -> ReLU -> BN (-> dropout): Keras Conv2D(activation="relu") then BatchNormalization,
    the layer order of the MNIST seeds."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding),
                               nn.ReLU(), nn.BatchNorm2d(out_ch)]
    if dropout:
        layers.append(Dropout(dropout))
    return layers


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 3, padding: int = 0) -> list[nn.Module]:
    """conv -> BN -> ReLU, the order of cnnbench's own nets; no bias: the BatchNorm has one."""
    return [nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=False),
            nn.BatchNorm2d(out_ch), nn.ReLU()]


def head(*layers: nn.Module) -> list[nn.Module]:
    """Logits come out flattened; softmax lives in the loss, not the model."""
    return [*layers, nn.Flatten()]


def sep_trunk(first_padding: int, dropout: float) -> list[nn.Module]:
    """The trunk seeds 000 and 001 share: separable 48, 48, pool; 96, 96, pool; 192, 192,
    pool (each sep + BN + ReLU, the second of each pair 'valid', dropout after each pool)."""
    layers: list[nn.Module] = []
    ch = 3
    for i, width in enumerate((48, 96, 192)):
        pad_first = first_padding if i == 0 else 1
        layers += [SeparableConv2d(ch, width, 3, padding=pad_first), nn.BatchNorm2d(width), nn.ReLU(),
                   SeparableConv2d(width, width, 3, padding=0), nn.BatchNorm2d(width), nn.ReLU(),
                   nn.MaxPool2d(2), Dropout(dropout)]
        ch = width
    return layers
