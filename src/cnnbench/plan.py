"""What `dvc repro` is about to run, on which device, and about how long it will take:
printed before the work starts, so that nobody learns from the clock that a 2-core CPU
needs a day.

The stages are DVC's own answer (``dvc status``) plus everything downstream of them. A
model's time comes from its committed per-epoch timings (metrics/timing/<model>.csv)
when they were measured on the same kind of device (CPU or CUDA) as the one it will
train on; otherwise it is unknown.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from cnnbench.accel import resolve_device
from cnnbench.config import ModelConfig, load_params
from cnnbench.outputs import model_outputs
from cnnbench.train import format_duration


@dataclass(frozen=True)
class TrainEstimate:
    model: str
    device: str
    epochs_left: int
    seconds: float | None  # None: no committed timing on this kind of device
    basis: str  # where the figure comes from


def stages_to_run(root: Path) -> list[str]:
    """The stages `dvc repro` would run, in the order it runs them: the changed ones and
    every stage downstream of one, ordered by DVC's own planner."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(root)) as repo:
        changed = set(repo.status())
        graph = get_active_graph(repo.index.graph)  # an edge runs from a stage to one it depends on
        order = plan_repro(graph, collect_stages(repo, ["dvc.yaml"]))
        to_run = set()
        for stage in order:
            if stage.addressing in changed:
                to_run |= {stage.addressing} | {s.addressing for s in nx.ancestors(graph, stage)}
    return [stage.addressing for stage in order if stage.addressing in to_run]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from cnnbench.tracking import cpu_name

    return f"CPU {cpu_name()}, {torch.get_num_threads()} threads"


def estimate(root: Path, name: str, cfg: ModelConfig) -> TrainEstimate:
    device = resolve_device(cfg.device)
    out = model_outputs(name, models=root / "models", metrics=root / "metrics")
    epochs_left = cfg.epochs - _epochs_done(out.resume_state)
    timing_csv, summary_json = out.timing, out.train_summary
    if not (timing_csv.is_file() and summary_json.is_file()):
        return TrainEstimate(name, device.type, epochs_left, None, "no committed timings")
    committed = json.loads(summary_json.read_text())
    if committed.get("device", "cpu").split(":")[0] != device.type:
        return TrainEstimate(name, device.type, epochs_left, None,
                             f"committed timings are from {committed.get('device')}, not {device.type}")
    per_epoch = statistics.median(pd.read_csv(timing_csv)["seconds"])
    threads = f", {committed['torch_threads']} thread(s)" if device.type == "cpu" else ""
    return TrainEstimate(name, device.type, epochs_left, epochs_left * per_epoch,
                         f"{per_epoch:,.0f} s an epoch in the committed run on {committed['device']}{threads}")


def _epochs_done(resume_state: Path) -> int:
    """Epochs an interrupted training has kept (models/.resume/), which a rerun skips."""
    if not resume_state.is_file():
        return 0
    try:
        return len(torch.load(resume_state, weights_only=True)["curves"])
    except Exception:  # noqa: BLE001 - an unreadable state is not resumed either
        return 0


def plan(root: Path, params: str = "params.yaml", stages: list[str] | None = None) -> str:
    """The plan as text: every stage to run (``stages``, else stages_to_run's), and each
    training's device and time. params.yaml is checked first: DVC's own reading of a bad
    one is a traceback."""
    models = load_params(root / params).models
    stages = stages_to_run(root) if stages is None else stages
    if not stages:
        return "dvc repro: everything is up to date; nothing to run."
    lines = [f"dvc repro will run {len(stages)} stage(s):"]
    total, unknown = 0.0, []
    for stage in stages:
        kind, _, name = stage.partition("@")
        if kind != "train" or name not in models:
            lines.append(f"  {stage}")
            continue
        est = estimate(root, name, models[name])
        if est.seconds is None:
            unknown.append(name)
        else:
            total += est.seconds
        time_left = "time unknown" if est.seconds is None else f"~{format_duration(est.seconds)}"
        lines.append(f"  {stage}: {est.epochs_left} epoch(s) on {est.device}, {time_left}: {est.basis}")
    devices = sorted({device_name(resolve_device(m.device)) for m in models.values()})
    lines.append(f"Training on: {', '.join(devices)}.")
    known = f"~{format_duration(total)}" if total else "unknown"
    if unknown and total:
        known += f", plus {len(unknown)} model(s) of unknown time ({', '.join(unknown)})"
    lines.append(f"Estimated training time: {known}. Ctrl-C stops it; finished epochs are kept "
                 f"and a rerun continues from there.")
    return "\n".join(lines)
