"""Keras's layer defaults on a PyTorch model, for reproducing the Keras seeds faithfully.

What it changes from PyTorch's defaults (Keras 2 / tf.keras values):
- BatchNorm: momentum 0.99 for the running statistics (0.01 in PyTorch's convention,
  where 0.1 is the default) and epsilon 1e-3 (PyTorch: 1e-5);
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


def apply_keras_defaults(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum, module.eps = 0.01, 1e-3
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
