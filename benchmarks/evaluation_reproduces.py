"""Does the code in this tree still produce a model's committed evaluation? The evidence
for `dvc commit evaluate@<name>` after a change to a file the evaluate stage depends on,
in a workspace without models/*.pt (they live in the DVC cache of the machine that
trained them).

The weights come from the model's MLflow logged model kept in git
(metrics/mlruns/<experiment>/models/<id>/artifacts/data/model.pt2, a torch.export
program whose state_dict loads strictly into the architecture), saved as the checkpoint
the train stage would have written. stages/evaluate.py then runs on it, tracking off, in
a scratch folder, with this tree's code and, with ``--against DIR``, also with the code
of another checkout (e.g. a `git worktree` of the commit dvc.lock recorded). Exit 0 when
metrics/eval, metrics/confusion and metrics/misclassified come out byte for byte as
committed (or, with --against, as the other code's), 1 when not. A figure the committed
metrics/eval file lacks (one that newer code adds) is left out of the comparison, and
metrics/inference (timings) is never compared.

With ``--write``, the outputs of this tree's code replace the workspace's when they
reproduce: the way to record what a new evaluation adds without the checkpoint. With
``--log``, this tree's evaluation also logs into the model's MLflow run, in the store
MLFLOW_TRACKING_URI names (e.g. one `cnnbench runs restore --to` built from the archive).

    python benchmarks/evaluation_reproduces.py seed001_mnist [--against ../old] [--write] [--log]

Evaluation is fp32 on the CPU; a model evaluated on another kind of processor may differ
from its committed files in the last digit, which --against tells apart from a change.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from cnnbench import CnnbenchError
from cnnbench.checkpoints import save_checkpoint
from cnnbench.config import load_model_config
from cnnbench.data import load_meta
from cnnbench.models import create_model
from cnnbench.outputs import data_dir, model_outputs
from cnnbench.store import ARCHIVE

ROOT = Path(__file__).resolve().parents[1]


def logged_weights(run_id: str) -> dict[str, torch.Tensor]:
    """The state_dict of the model that MLflow run ``run_id`` logged, from the archive."""
    for meta in sorted((ROOT / ARCHIVE).glob("*/models/*/meta.yaml")):
        if f"source_run_id: {run_id}" in meta.read_text():
            return torch.export.load(str(meta.parent / "artifacts" / "data" / "model.pt2")).state_dict
    raise SystemExit(f"no logged model of run {run_id} in {ARCHIVE}/; `cnnbench runs export` keeps it")


def rebuild_checkpoint(name: str, dest: Path) -> None:
    cfg = load_model_config(ROOT / "params.yaml", name)
    run_id = json.loads((ROOT / model_outputs(name).train_summary).read_text())["mlflow_run_id"]
    meta = load_meta(ROOT / data_dir(cfg.dataset))
    model = create_model(cfg.arch, num_classes=len(meta["classes"]), keras_defaults=cfg.keras_defaults)
    model.load_state_dict(logged_weights(run_id), strict=True)
    save_checkpoint(dest, model, cfg, meta, run_id)


def evaluate(name: str, code: Path, checkpoint: Path, work: Path, log: bool = False) -> list[bytes]:
    """evaluate@<name> with the code in ``code``, in ``work``; its deterministic outputs."""
    out = model_outputs(name)
    (work / out.checkpoint).parent.mkdir(parents=True)
    shutil.copy(checkpoint, work / out.checkpoint)
    (work / "data").symlink_to(ROOT / "data")
    shutil.copy(ROOT / "params.yaml", work / "params.yaml")
    env = {**os.environ, "CNNBENCH_TRACKING": "on" if log else "off", "PYTHONPATH": str(code / "src")}
    proc = subprocess.run([sys.executable, str(code / "stages" / "evaluate.py"), name], cwd=work, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate@{name} with {code} failed:\n{proc.stderr[-2000:]}")
    return [(work / path).read_bytes() for path in (out.eval_metrics, out.confusion, out.mistakes)]


def same_evaluation(new: bytes, old: bytes) -> bool:
    """The old metrics JSON's figures, all of them and as written, in the new one."""
    old_figures = json.loads(old)
    return new == old or json.dumps({k: json.loads(new).get(k) for k in old_figures}) == json.dumps(old_figures)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--against", type=Path, help="another checkout whose code must give the same files")
    p.add_argument("--write", action="store_true", help="put this code's outputs in the workspace if they reproduce")
    p.add_argument("--log", action="store_true", help="log this code's evaluation into the model's MLflow run")
    args = p.parse_args()
    out = model_outputs(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            rebuild_checkpoint(args.model, tmp / "model.pt")
        except CnnbenchError as e:
            print(f"evaluation_reproduces: error: {e}", file=sys.stderr)
            return 2
        ours = evaluate(args.model, ROOT, tmp / "model.pt", tmp / "ours", log=args.log)
        if args.against:
            expected = evaluate(args.model, args.against.resolve(), tmp / "model.pt", tmp / "theirs")
            against = str(args.against)
        else:
            expected = [(ROOT / path).read_bytes() for path in (out.eval_metrics, out.confusion, out.mistakes)]
            against = "the committed files"
        same = [same_evaluation(ours[0], expected[0])] + [a == b for a, b in zip(ours[1:], expected[1:])]
        # the checkpoint's size is a figure of the evaluation: the rebuilt one must be the trained one's
        recorded = next(o["size"] for o in yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
                        [f"train@{args.model}"]["outs"] if o["path"] == out.checkpoint.as_posix())
        if (tmp / "model.pt").stat().st_size != recorded:
            print(f"{args.model}: the rebuilt checkpoint is not {recorded} bytes as dvc.lock records; not written")
            args.write = False
        if args.write and all(same):
            for path in (out.eval_metrics, out.inference, out.confusion, out.mistakes):
                (ROOT / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(tmp / "ours" / path, ROOT / path)
    for path, ok in zip((out.eval_metrics, out.confusion, out.mistakes), same):
        print(f"{args.model}: {path} {'byte-identical to' if ok else 'DIFFERENT from'} {against}")
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
