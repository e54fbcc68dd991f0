"""The base network of the seeds' CIFAR-10 assignment (../shared/seeds/)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import Dropout


@register("cifar_base", dataset="cifar10")
def cifar_base(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """The base network every CIFAR-10 seed had to beat (seeds 000, 001, 003, 004).

    conv3x3 48 same, 48 valid, pool, dropout .25; 96 same, 96 valid, pool, .25;
    192 same, 192 valid, pool, .25; flatten 768; dense 512, .5; 256, .5; 10. ReLU, biases,
    no BatchNorm. 1,172,410 parameters (Keras total the same). Reported: 82.48% (seed
    000), 81.16% (seed 003), 84% quoted by seed 004; Adam, 50 epochs.
    """
    layers: list[nn.Module] = []
    ch = in_channels
    for width in (48, 96, 192):
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(width, width, 3), nn.ReLU(),
                   nn.MaxPool2d(2), Dropout(0.25)]
        ch = width
    layers += [nn.Flatten(),
               nn.Linear(192 * 2 * 2, 512), nn.ReLU(), Dropout(0.5),
               nn.Linear(512, 256), nn.ReLU(), Dropout(0.5),
               nn.Linear(256, num_classes)]
    return nn.Sequential(*layers)
