"""DVC stage train@<model>: train one model of params.yaml and track it in MLflow.

Writes models/<model>.pt, metrics/curves/<model>.csv (per epoch, deterministic),
metrics/timing/<model>.csv (per-epoch seconds) and metrics/train/<model>.json (timing
summary, device, torch and CUDA versions, and the MLflow run id).
After every epoch the state goes to models/.resume/<model>.pt (outside DVC's outputs,
which DVC deletes before a rerun): a rerun after an interruption continues from there,
in the same MLflow run.

With --log-trained it does not train: it logs a model trained with CNNBENCH_TRACKING=off
(e.g. on a GPU box without mlflow) into a new MLflow run from those four outputs, as
training would have, and writes the run id into the checkpoint and the train JSON, so
that evaluate@<model> logs into that run. Then `dvc commit train@<model>`.
"""

import argparse
import json
import os
import sys

import pandas as pd
import torch

from cnnbench import CnnbenchError, tracking
from cnnbench.accel import resolve_device
from cnnbench.checkpoints import Resume, load_matching_checkpoint, save_checkpoint
from cnnbench.config import ModelConfig, flatten, load_model_config
from cnnbench.data import Dataset
from cnnbench.files import check_writable, write_csv, write_json, write_torch
from cnnbench.loader import normalize
from cnnbench.outputs import data_dir, model_outputs
from cnnbench.summary import summarize
from cnnbench.train import TrainError, preflight, train


def input_example(data: Dataset) -> torch.Tensor:
    """What the logged model is logged with: four test images, as the model sees them."""
    return normalize(data.test[0][:4], data.meta["mean"], data.meta["std"])


def train_and_track(name: str, cfg: ModelConfig) -> str:
    """Everything that can be checked is checked before the MLflow run opens: the data
    byte for byte, the arch against it, the device, the output folders, a saved state."""
    out = model_outputs(name)
    data = Dataset.load(data_dir(cfg.dataset))
    meta = data.meta
    for warning in preflight(cfg, meta, strict_budgets=bool(os.environ.get("CNNBENCH_STRICT_BUDGETS"))):
        print(f"train@{name}: warning: {warning}", file=sys.stderr)
    device = resolve_device(cfg.device)
    tags = tracking.run_tags(name, cfg.dataset, str(device))
    check_writable(*(path.parent for path in out.of_training), out.resume_state.parent)
    resume = Resume(out.resume_state)
    had_state = resume.path.is_file()
    saved = resume.read(cfg, meta) or {"curves": [], "timings": [], "extra": {}}
    if had_state and not saved["curves"]:
        print(f"train@{name}: {resume.path} was saved for another config or data and is deleted; "
              f"training starts from the first epoch", file=sys.stderr)
    run_id = saved["extra"].get("mlflow_run_id")
    with tracking.model_run(name, run_id=run_id, params=flatten(cfg), tags=tags) as run:
        curves, timings = list(saved["curves"]), list(saved["timings"])
        if curves:
            print(f"train@{name}: resuming after epoch {curves[-1]['epoch'] + 1}", file=sys.stderr)
        if run:
            resume.extra["mlflow_run_id"] = run.run_id
            run.log_missing_epochs(curves, timings)

        def on_epoch(row: dict, timing: dict) -> None:
            curves.append(row)
            timings.append(timing)
            write_csv(out.curves, curves)  # rewritten every epoch: progress survives a crash
            write_csv(out.timing, timings)
            if run:
                run.log_epoch({**row, **timing}, step=row["epoch"])

        result = train(cfg, data, on_epoch=on_epoch, resume=resume, device=device)
        save_checkpoint(out.checkpoint, result.model, cfg, meta, run.run_id if run else None)
        summary = summarize(result.model.cpu(), tuple(meta["input_shape"]))
        # run id, versions and thread count sit with the timings, apart from the results, which
        # stay byte-identical; they let a run trained with tracking off be logged later
        write_json(out.train_summary, {
            "params": summary.trainable, **result.summary(), "torch_version": tags["torch_version"],
            "cuda_version": tags["cuda_version"], "torch_threads": int(tags["torch_threads"]),
            "mlflow_run_id": run.run_id if run else None})
        if run:
            run.log_training(summary.to_text("markdown"), [out.curves, out.timing], result.model,
                             input_example(data))
    s = result.summary()
    return (f"train@{name}: test acc {s['final_test_acc']:.4f} after {s['epochs']} epochs "
            f"(best {s['best_test_acc']:.4f} at epoch {s['best_epoch'] + 1}), {s['seconds']:.0f} s")


def log_trained(name: str, cfg: ModelConfig, params_file: str) -> str:
    """--log-trained: everything is checked before the run opens; the outputs change
    (the run id only) once the run has everything."""
    out = model_outputs(name)
    for path in out.of_training:
        if not path.is_file():
            raise TrainError(f"{path} does not exist: the train stage must run first "
                             f"(`dvc repro train@{name}`, with CNNBENCH_TRACKING=off where mlflow is missing)")
    if not tracking.enabled():
        raise tracking.TrackingError("--log-trained logs into MLflow, but CNNBENCH_TRACKING turns "
                                     "tracking off; unset it")
    data = Dataset.load(data_dir(cfg.dataset))
    model, ckpt = load_matching_checkpoint(out.checkpoint, cfg, name, params_file)
    if ckpt["mlflow_run_id"] is not None:
        raise tracking.TrackingError(f"{out.checkpoint} is already logged in MLflow run {ckpt['mlflow_run_id']}")
    curves, timings = (pd.read_csv(p).to_dict("records") for p in (out.curves, out.timing))
    if not ([r["epoch"] for r in curves] == [t["epoch"] for t in timings] == list(range(cfg.epochs))):
        raise TrainError(f"{out.curves} and {out.timing} do not hold epochs 0 to {cfg.epochs - 1} of "
                         f"{out.checkpoint}'s training; run the train stage again")
    summary = json.loads(out.train_summary.read_text())
    example = input_example(data)
    tags = tracking.trained_run_tags(name, cfg.dataset, summary)
    with tracking.model_run(name, params=flatten(cfg), tags=tags) as run:
        run.rerun = f"rerun `python stages/train.py {name} --log-trained`"
        run.log_missing_epochs(curves, timings)  # all of them: the run is new
        run.log_training(summarize(model, tuple(data.meta["input_shape"])).to_text("markdown"),
                         [out.curves, out.timing], model, example)
    if run.pending:
        raise tracking.TrackingError(f"MLflow run {run.run_id} is incomplete (marked FAILED); "
                                     f"the outputs are unchanged")
    write_torch(out.checkpoint, {**ckpt, "mlflow_run_id": run.run_id})
    write_json(out.train_summary, {**summary, "mlflow_run_id": run.run_id})
    return (f"train@{name}: logged {len(curves)} epochs and the model into MLflow run {run.run_id}; "
            f"next: `dvc commit train@{name}`, `dvc repro evaluate@{name}`")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--log-trained", action="store_true",
                        help="do not train: log the outputs of a run trained with tracking off into MLflow")
    args = parser.parse_args()
    name = args.model
    tracking.sigterm_raises()  # `kill` and a scheduler stop training as Ctrl-C does
    try:
        cfg = load_model_config(args.params, name)
        message = log_trained(name, cfg, args.params) if args.log_trained else train_and_track(name, cfg)
    except CnnbenchError as e:
        print(f"train@{name}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a disk that fills up or goes away while training
        print(f"train@{name}: error: {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, tracking.Terminated):
        state = model_outputs(name).resume_state
        done = len(torch.load(state, weights_only=True)["curves"]) if state.is_file() else 0
        print(f"train@{name}: interrupted after {done} finished epoch(s), which are kept: `make run` "
              f"(or `dvc repro`) continues from there, in the same MLflow run.", file=sys.stderr)
        return 130
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
