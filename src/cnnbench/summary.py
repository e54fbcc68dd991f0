"""Per-layer table of a model: output shape, parameters, receptive field, jump, MACs.

Everything is measured from the model itself: a forward pass with hooks gives the
shapes, the modules' own kernel/stride settings give receptive field and jump.
A Keras-style separable convolution counts as one layer, as in the seeds' summaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from cnnbench.models.layers import SeparableConv2d

COLUMNS = ["layer", "type", "output_shape", "params", "receptive_field", "jump", "macs"]


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, Keras "Total params").

    Keras counts BatchNorm moving mean and variance as (non-trainable) parameters;
    PyTorch keeps them as buffers, so they are added back here.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    bn_stats = sum(m.running_mean.numel() + m.running_var.numel()
                   for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return trainable, trainable + frozen + bn_stats


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules, except that a SeparableConv2d is one unit."""
    found = []

    def walk(prefix: str, module: nn.Module) -> None:
        children = list(module.named_children())
        if isinstance(module, SeparableConv2d) or not children:
            found.append((prefix or type(module).__name__, module))
            return
        for name, child in children:
            walk(f"{prefix}.{name}" if prefix else name, child)

    walk("", model)
    return found


def _pair(v) -> int:
    return v[0] if isinstance(v, tuple) else v


def _window(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, int]:
    """(effective kernel, stride) of a layer along one spatial axis; (1, 1) when it
    does not mix neighbouring pixels."""
    if isinstance(module, SeparableConv2d):
        module = module.depthwise
    if isinstance(module, nn.Conv2d):
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        return d * (k - 1) + 1, _pair(module.stride)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        return k, _pair(module.stride or k)
    spatial = len(in_shape) == 4 and in_shape[-1] > 1
    if spatial and isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)):
        # global pooling and flattening see the whole remaining map
        return in_shape[-1], in_shape[-1]
    return 1, 1


def _macs(module: nn.Module, out_shape: tuple[int, ...]) -> int:
    convs = [module.depthwise, module.pointwise] if isinstance(module, SeparableConv2d) else [module]
    total = 0
    for conv in convs:
        if isinstance(conv, nn.Conv2d):
            out_pixels = out_shape[-1] * out_shape[-2]
            k = _pair(conv.kernel_size) * conv.kernel_size[-1]
            total += out_pixels * conv.out_channels * (conv.in_channels // conv.groups) * k
        elif isinstance(conv, nn.Linear):
            total += conv.in_features * conv.out_features
    return total


@dataclass
class Summary:
    table: pd.DataFrame
    trainable: int
    keras_total: int
    input_shape: tuple[int, ...]

    def to_text(self, fmt: str = "markdown") -> str:
        table = self.table.copy()
        table["output_shape"] = table["output_shape"].map(lambda s: "x".join(map(str, s)))
        totals = (f"trainable params: {self.trainable:,}; Keras total (with BatchNorm running "
                  f"stats): {self.keras_total:,}; MACs: {int(self.table['macs'].sum()):,}")
        if fmt == "csv":
            return table.to_csv(index=False)
        if fmt == "markdown":
            return table.to_markdown(index=False) + "\n\n" + totals + "\n"
        raise ValueError(f"unknown format {fmt!r}; use csv or markdown")


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> Summary:
    """Trace ``model`` on one zero image of ``input_shape`` (C, H, W)."""
    units = _units(model)
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, i=i: shapes.__setitem__(i, (tuple(inp[0].shape), tuple(out.shape))))
        for i, (_, m) in enumerate(units)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    rows, rf, jump = [], 1, 1
    for i, (name, module) in enumerate(units):
        if i not in shapes:  # a module that forward() never called
            continue
        in_shape, out_shape = shapes[i]
        kernel, stride = _window(module, in_shape)
        rf += (kernel - 1) * jump
        jump *= stride
        rows.append({
            "layer": name, "type": type(module).__name__, "output_shape": out_shape[1:],
            "params": sum(p.numel() for p in module.parameters()),
            "receptive_field": rf, "jump": jump, "macs": _macs(module, out_shape),
        })
    trainable, keras_total = count_params(model)
    return Summary(pd.DataFrame(rows, columns=COLUMNS), trainable, keras_total, tuple(input_shape))
