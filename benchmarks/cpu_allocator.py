"""CPU training speed under glibc's default allocator and two ways around its page faults.

A training step allocates and frees activation tensors of many megabytes. glibc serves
each block over 32 MiB at most (its mmap threshold) from a fresh mmap and unmaps it on
free, so every step faults in new, zeroed 4 KiB pages: seed003_sep's training at batch
1024 took about 390,000 minor faults a second here, with half the CPU time in the kernel.
Two settings avoid that without changing what is computed; train() applies the first
itself (``cnnbench.accel.keep_freed_memory_on_heap``), measured as ``cnnbench``:

- ``glibc heap``: MALLOC_MMAP_MAX_=0 and a huge MALLOC_TRIM_THRESHOLD_: every block comes
  from the heap, and freed memory stays there for the next step instead of going back
  to the kernel.
- ``THP``: THP_MEM_ALLOC_ENABLE=1, PyTorch's own switch: blocks of 2 MiB and more are
  put on transparent huge pages, 512 times fewer faults (needs THP "madvise" or
  "always" in /sys/kernel/mm/transparent_hugepage/enabled).

Each trial is a fresh process running cnnbench's train() on synthetic images (the
cnnbench side of throughput.py); settings alternate, the table gives medians, and
minor faults are the whole process's (setup included).

    python benchmarks/cpu_allocator.py --models seed003_sep sep_cifar_94k --trials 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
from pathlib import Path

import torch
from throughput import print_table, trial

# CNNBENCH_GLIBC_HEAP=off: train() leaves glibc's allocator as the environment sets it;
# "cnnbench" is what train() does by itself (the heap, through mallopt)
SETTINGS = {
    "default": {"CNNBENCH_GLIBC_HEAP": "off"},
    "glibc heap": {"CNNBENCH_GLIBC_HEAP": "off", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)},
    "THP": {"CNNBENCH_GLIBC_HEAP": "off", "THP_MEM_ALLOC_ENABLE": "1"},
    "cnnbench": {},
}


def environment(setting: str) -> dict[str, str]:
    """Ours without any of the settings' variables, plus this setting's."""
    names = {name for env in SETTINGS.values() for name in env}
    return {k: v for k, v in os.environ.items() if k not in names} | SETTINGS[setting]


def timed_trial(child: list[str], setting: str) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    result = trial("cnnbench", child, environment(setting))
    return {**result, "minor_faults": resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["seed003_sep", "sep_cifar_94k", "mnist_7k"])
    p.add_argument("--images", type=int, default=6400, help="images per timed epoch")
    p.add_argument("--trials", type=int, default=2, help="trials per setting, alternating")
    p.add_argument("--out", help="also write the markdown table here")
    args = p.parse_args()

    from cnnbench.config import load_params
    from cnnbench.models import model_dataset

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml").models
    rows = []
    for name in args.models:
        cfg = params[name]
        child = [cfg.arch, model_dataset(cfg.arch), str(cfg.batch_size),
                 str(max(args.images, 4 * cfg.batch_size)), "cpu", "off", "0"]
        results = {setting: [] for setting in SETTINGS}
        for _ in range(args.trials):
            for setting in SETTINGS:  # A B C A B C: drift in the machine hits all alike
                results[setting].append(timed_trial(child, setting))
        default_speed = statistics.median(r["images_per_s"] for r in results["default"])
        for setting, runs in results.items():
            speed = statistics.median(r["images_per_s"] for r in runs)
            rows.append({"model": name, "batch": cfg.batch_size, "setting": setting, "img/s": speed,
                         "speed-up": round(speed / default_speed, 2),
                         "minor faults (M)": round(statistics.median(r["minor_faults"] for r in runs) / 1e6, 2),
                         "peak RSS MB": statistics.median(r["peak_rss_mb"] for r in runs)})
            print(rows[-1], flush=True)

    header = (f"command: `python benchmarks/cpu_allocator.py {' '.join(sys.argv[1:])}`\n\n"
              f"device: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
              f"{torch.get_num_threads()} threads; torch {torch.__version__}, python {platform.python_version()}; "
              f"glibc {platform.libc_ver()[1]}; {args.trials} alternating trials per setting, medians\n\n")
    print_table(header, rows, args.out)


if __name__ == "__main__":
    main()
