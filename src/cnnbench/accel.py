"""How training runs on its device: which device, precision, memory layout, compilation,
and on the CPU the C library's allocator."""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from dataclasses import dataclass

import torch
from torch import nn

from cnnbench import CnnbenchError
from cnnbench.config import ModelConfig


class DeviceError(CnnbenchError):
    """The device a config asks for is not here."""


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device: cuda was requested but torch sees no CUDA GPU here; "
                          "use device: auto (the GPU where there is one) or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass(frozen=True)
class Accel:
    """How training runs on its device, fast by construction.

    Everywhere: channels_last memory (faster convolutions on both CPU and GPU, measured
    in benchmarks/). On CUDA: bf16 autocast unless precision is fp32, cuDNN autotuning,
    fused optimizers, and torch.compile when asked. On the CPU: large tensors from glibc's
    heap (see ``keep_freed_memory_on_heap``). The CPU stays fp32 and eager unless asked
    otherwise, so CPU runs are bit-reproducible.
    """

    device: torch.device
    bf16: bool = False
    compile_mode: str | None = None

    @classmethod
    def for_config(cls, cfg: ModelConfig, device: torch.device) -> Accel:
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        return cls(device, bf16, None if cfg.compile == "off" else cfg.compile)

    def prepare(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(model, the callable to train): the model moved to the device in channels_last,
        and its compiled form when compiling (which shares its parameters)."""
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # pick the fastest kernels for these shapes
        else:
            keep_freed_memory_on_heap()
        model = model.to(self.device, memory_format=torch.channels_last)
        return model, (torch.compile(model, mode=self.compile_mode) if self.compile_mode else model)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    def autocast(self, cache: bool = True):
        """bf16 autocast when asked; ``cache=False`` for a step recorded in a CUDA graph."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache)


def keep_freed_memory_on_heap() -> bool:
    """Have glibc serve every block from its heap and keep freed memory there, for the rest
    of the process (False, and nothing changed, where the C library is not glibc or
    ``CNNBENCH_GLIBC_HEAP=off`` keeps its defaults, e.g. where memory is short).

    By default glibc maps each block over its mmap threshold (32 MiB at most) afresh and
    unmaps it on free, so every CPU training step faults in its activations as new zeroed
    pages: at seed003_sep's batch 1024 half the CPU time went to the kernel. From the heap,
    training ran 1.05x to 1.9x faster with the same results, for a higher peak RSS
    (seed003_sep: 8.4 GB instead of 5.1; benchmarks/results/cpu-allocator-2core.md).
    """
    if platform.libc_ver()[0] != "glibc" or os.environ.get("CNNBENCH_GLIBC_HEAP") == "off":
        return False
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1))
