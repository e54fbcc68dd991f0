"""Keras's layer defaults on a PyTorch model, for reproducing the Keras seeds faithfully.

What it changes from PyTorch's defaults (Keras 2 / tf.keras values):
- BatchNorm: momentum 0.99 for the running statistics (0.01 in PyTorch's convention,
  where 0.1 is the default) and epsilon 1e-3 (PyTorch: 1e-5);
- BatchNorm's running statistics debiased as Keras on TensorFlow keeps them
  (``zero_debias=True`` since early 2018, keras-team/keras#9003): after t steps they are
  the batches' statistics weighted 0.01 * 0.99**(t-i) and divided by 1 - 0.99**t, with
  nothing left of a starting value. PyTorch's instead keep 0.99**t of their starting 0
  and 1, which over seed 003's short first epochs (48 steps each) held its test accuracy
  down (docs/results.md#seed003_sep). Only evaluation reads these statistics, and after
  2,000 steps the two differ by less than 0.99**2000 < 2e-9, far below BatchNorm's
  epsilon, so a model trained longer scores the same;
- Conv2d and Linear weights: Glorot (Xavier) uniform (PyTorch: Kaiming uniform with
  a=sqrt(5)); biases zero (PyTorch: uniform in +-1/sqrt(fan_in)).
Glorot's bound depends on fan_in + fan_out, which Keras and PyTorch count alike for
depthwise kernels too (k*k*(channels + 1)), so one rule serves every conv.
Adam's epsilon (Keras 1e-7, PyTorch 1e-8) is the optimizer's: see ModelConfig.keras_defaults.
'Same' padding needs nothing here: the models ask for it with padding="same", which
pads an even kernel as Keras does (the extra row and column at the bottom and right).
"""

from __future__ import annotations

from torch import nn

MOMENTUM = 0.01  # Keras's momentum=0.99, in PyTorch's convention
_DEBIAS_STEPS = 2000  # 0.99**2000 < 2e-9: what debiasing would still change, negligible


def apply_keras_defaults(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # 1.0 is the first step's debiased momentum; the hook sets each later step's
            module.momentum, module.eps = 1.0, 1e-3
            module.register_forward_pre_hook(_debiased_momentum)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _debiased_momentum(bn: nn.modules.batchnorm._BatchNorm, _inputs) -> None:
    """Before a training step: the momentum that turns PyTorch's running average into the
    debiased one. With m = MOMENTUM, step t's debiased average is
    (1 - m/(1 - (1-m)**t)) * previous + m/(1 - (1-m)**t) * batch, so that momentum starts at
    1 (the first batch's statistics, whole) and falls to m. The step count comes from
    BatchNorm's own num_batches_tracked, which checkpoints and resumed runs carry; reading
    it syncs a GPU, so once the momentum has reached m the hook leaves it there (a model
    is built fresh before a checkpoint is loaded into it, never loaded back in time)."""
    if bn.training and bn.momentum != MOMENTUM:
        step = int(bn.num_batches_tracked) + 1  # BatchNorm counts this step after the hook
        bn.momentum = MOMENTUM / (1 - (1 - MOMENTUM) ** step) if step < _DEBIAS_STEPS else MOMENTUM
