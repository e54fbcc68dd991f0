"""How fast a trained model classifies, on the device it runs on: images per second at a
large batch (throughput, what scoring a data set costs) and the median time of one image
(latency, what one request waits). Timings vary from run to run, so they are kept apart
from the deterministic figures (metrics/inference/, not metrics/eval/)."""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

LARGE_BATCH = 1024


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3', or 'AMD EPYC 7B13 (AVX2)': the processor and the vector
    instructions torch's kernels use, which set CPU speed (and CPU results' last digits)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:  # not Linux
        model = ""
    return f"{model or platform.processor() or 'unknown'} ({torch.backends.cpu.get_cpu_capability()})"


def _timed(model: nn.Module, images: torch.Tensor, seconds: float, least: int) -> list[float]:
    """Seconds of each forward pass of ``images``, repeated for about ``seconds`` and at
    least ``least`` times, after one pass that warms the kernels and caches up."""
    sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)
    times: list[float] = []
    with torch.inference_mode():
        model(images)
        sync()
        while len(times) < least or sum(times) < seconds:
            start = time.perf_counter()
            model(images)
            sync()
            times.append(time.perf_counter() - start)
    return times


def inference_speed(model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                    batch: int = LARGE_BATCH, seconds: float = 1.0) -> dict:
    """Throughput at ``batch`` and latency at batch 1 of ``model`` (in eval mode, on
    ``device``), on random images of ``input_shape``: the time a convolution takes does
    not depend on the pixels."""
    model = model.eval()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, *input_shape, generator=generator).to(device, memory_format=torch.channels_last)
    large = _timed(model, images, seconds, least=2)
    single = _timed(model, images[:1].contiguous(memory_format=torch.channels_last), seconds, least=10)
    return {"device": device.type, "device_name": device_name(device),
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "batch": batch, "images_per_s": round(batch / statistics.median(large), 1),
            "latency_ms_batch1": round(1000 * statistics.median(single), 3)}
