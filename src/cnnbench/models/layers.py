"""Building blocks shared by the architectures."""

from __future__ import annotations

from torch import nn


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
        layers.append(nn.Dropout(dropout))
    return layers
