"""The seven architectures of the seed assignments (../shared/seeds/), rebuilt exactly:
same layers, same shapes, same parameter counts as their Keras summaries.

Keras counts BatchNorm moving mean/variance in "Total params"; in PyTorch they are
buffers, so each docstring gives both: trainable and Keras total.
Unstated details are chosen as the seed implies and noted where they are chosen.
"""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import Dropout, SeparableConv2d, conv_relu_bn


def _head(*layers: nn.Module) -> list[nn.Module]:
    """Logits come out flattened; softmax lives in the loss, not the model."""
    return [*layers, nn.Flatten()]


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


def _sep_bn_relu(in_ch: int, out_ch: int, padding: int) -> list[nn.Module]:
    return [SeparableConv2d(in_ch, out_ch, 3, padding=padding), nn.BatchNorm2d(out_ch), nn.ReLU()]


def _sep_trunk(first_padding: int, dropout: float) -> list[nn.Module]:
    layers: list[nn.Module] = []
    ch = 3
    for i, width in enumerate((48, 96, 192)):
        pad_first = first_padding if i == 0 else 1
        layers += [*_sep_bn_relu(ch, width, pad_first), *_sep_bn_relu(width, width, 0),
                   nn.MaxPool2d(2), Dropout(dropout)]
        ch = width
    return layers


@register("seed001_sep", dataset="cifar10")
def seed001_sep(num_classes: int = 10) -> nn.Module:
    """Seed 001 (001_ae77fa9c2fa4d891.txt), CIFAR-10, separable convolutions only.

    sep 48 valid, 48 valid, pool; 96 same, 96 valid, pool; 192 same, 192 valid, pool
    (each sep + BN + ReLU, dropout after pools; shapes 30, 28, 14, 14, 12, 6, 6, 4, 2
    as in the seed's summary); head: sep 2x2 valid to 10. 80,629 trainable, 81,973 Keras
    total. Reported 83.50% after 50 epochs, Adam, batch 128.

    The seed does not state its dropout rate. 0.25, the base network's, is what its log
    implies: with it (and the flip) our training and test accuracy follow the log's from
    epoch 20 within 0.03 pp on average; at 0.1 ours trained 3.5 pp higher (README).
    """
    return nn.Sequential(*_sep_trunk(first_padding=0, dropout=0.25),
                         *_head(SeparableConv2d(192, num_classes, 2)))


@register("seed000_sep", dataset="cifar10")
def seed000_sep(num_classes: int = 10) -> nn.Module:
    """Seed 000 (000_0c02c1ae10fabc45.txt), CIFAR-10, separable convolutions only.

    As seed 001 but the first conv is 'same' (32x32 as annotated in the seed), the
    head is sep 4x4 'same' to 10 followed by global average pooling, and dropout 0.1 (not
    stated; with it and the augmentation its log implies, ours follows the log, README).
    82,933 trainable, 84,277 Keras total. Reported 83.25% after 50 epochs, Adam, batch 32.
    """
    return nn.Sequential(*_sep_trunk(first_padding=1, dropout=0.1),
                         SeparableConv2d(192, num_classes, 4, padding="same"),
                         *_head(nn.AdaptiveAvgPool2d(1)))


@register("seed003_sep", dataset="cifar10")
def seed003_sep(num_classes: int = 10) -> nn.Module:
    """Seed 003 (003_ef0e2d4687154a56.txt), CIFAR-10, separable convolutions and 1x1
    transitions.

    sep 64, 128 (same, no bias, ReLU, BN, dropout 0.3), 1x1 conv to 32, pool; sep 128,
    128, 1x1 to 64, pool; sep 128, 256; sep 1x1 to 10; global average pooling. Receptive
    fields 3, 5, 5, 6, 10, 14, 14, 16, 24, 32, 32. 90,363 trainable, 92,027 Keras total.
    Reported 82.39% after 50 epochs of 48 steps (batch 1024). The optimizer is not
    stated: Adam at 0.003 (params.yaml), whose training accuracy follows the seed log's
    within 1.3 pp from epoch 5 on, where Adam's default 0.001 trains 2.8-5.9 pp lower. The
    seed's last two epochs follow a learning-rate drop (Keras's ReduceLROnPlateau, read
    off its log) that lifts it from 78.7% to 82.4%; params.yaml gives ours the same
    schedule (patience 5), which fires after epoch 48 as the seed's did (README, "seed003_sep").
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
                         *_head(nn.AdaptiveAvgPool2d(1)))


@register("seed004_sep", dataset="cifar10")
def seed004_sep(num_classes: int = 10, dropout: float = 0.1) -> nn.Module:
    """Seed 004 (004_cf6e990620dfe619.txt), CIFAR-10, separable convolutions.

    sep 16, 32, 32, 64, 128 (same, no bias; ReLU, dropout, BN in that order), 1x1 conv to
    16, pool; sep 16, 32, 32, 64, 128; sep 1x1 (with bias) to 10; global average pooling.
    31,173 trainable, 32,261 Keras total. Reported 63.83% after 50 epochs at batch 64,
    against its own target of 84%. The dropout rate is not stated; 0.1 is assumed. Nor is
    the optimizer: its first epoch (train 14.7%, test 18.3%) is what Keras's default SGD
    gives (lr 0.01, no momentum; 19.4% and 18.7% here after one epoch on recovered
    CIFAR-10), not Adam (38.9% and 46.1%), so params.yaml trains it with that SGD.

    Why it failed, from its log: it underfit. Its training accuracy is below its test
    accuracy at 49 of its 50 epochs (58.6% against 63.8% at epoch 50, loss still 1.15) and
    was still rising about 1 pp per 10 epochs at the end: plain SGD at 0.01 had not converged
    in 50 epochs. (Training accuracy below test accuracy is dropout's doing: it is on after
    all ten separable layers while training, off while testing.)

    Reproduced as a failure, not to its figure: the pipeline's run (recovered CIFAR-10, seed
    0, MLflow a65f5096) ends at 67.31%, 3.48 pp above the seed's 63.83%, far below the 84%
    target, and still rising (last five epochs 66.27%, sd 0.71 pp). The seed's own last five
    epochs swing from 57.5% to 64.3% (mean 61.47%, sd 3.15 pp), so its final figure is one
    noisy draw. From epoch 12 to 50 ours trains 10.6-11.7 pp higher than its log (70.2%
    against 58.6% at the end) but tests only 3.23 pp higher on average (sd 2.58 pp): the
    seed was held back harder while training, yet its test accuracy stayed above its
    training accuracy. Not by a higher dropout rate: 0.25 and 0.35 cost our test accuracy
    more than our training accuracy. Keras shifts of 0.2 with the flip, or cutout, hold
    training back to the log's but the test curve 4-5 pp below it (short runs, in
    benchmarks/results/first-epochs/README.md); what the seed did is still open.
    """

    def stack(in_ch: int) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for width in (16, 32, 32, 64, 128):
            layers += [SeparableConv2d(in_ch, width, 3, padding=1, bias=False), nn.ReLU(),
                       Dropout(dropout), nn.BatchNorm2d(width)]
            in_ch = width
        return layers

    return nn.Sequential(*stack(3), nn.Conv2d(128, 16, 1, bias=False), nn.MaxPool2d(2),
                         *stack(16), SeparableConv2d(128, num_classes, 1),
                         *_head(nn.AdaptiveAvgPool2d(1)))


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
        *_head())


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
        *_head())
