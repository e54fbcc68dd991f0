"""Seed 004's CIFAR-10 network (../shared/seeds/004_cf6e990620dfe619.txt)."""

from __future__ import annotations

from torch import nn

from cnnbench.models import register
from cnnbench.models.layers import Dropout, SeparableConv2d, head


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
    0, MLflow be32c69d) ends at 67.31%, 3.48 pp above the seed's 63.83%, far below the 84%
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
                         *head(nn.AdaptiveAvgPool2d(1)))
