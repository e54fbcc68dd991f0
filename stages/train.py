"""DVC stage train@<model>: train one model of params.yaml and track it in MLflow.

Writes models/<model>.pt, metrics/curves/<model>.csv (per epoch, deterministic),
metrics/timing/<model>.csv (per-epoch seconds) and metrics/train/<model>.json (timing
summary and the MLflow run id).
After every epoch the state goes to models/.resume/<model>.pt (outside DVC's outputs,
which DVC deletes before a rerun): a rerun after an interruption continues from there,
in the same MLflow run.
"""

import argparse
import os
import sys
from pathlib import Path

from cnnbench import tracking
from cnnbench.config import ConfigError, flatten, load_model_config
from cnnbench.data import DataError, load_meta, load_split
from cnnbench.files import write_csv, write_json
from cnnbench.loader import normalize
from cnnbench.summary import summarize
from cnnbench.train import Resume, TrainError, preflight, read_resume_state, resolve_device, save_checkpoint, train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    name = args.model
    curves_csv, timing_csv = Path(f"metrics/curves/{name}.csv"), Path(f"metrics/timing/{name}.csv")
    try:
        cfg = load_model_config(args.params, name)
        data_dir = Path("data") / cfg.dataset
        meta = load_meta(data_dir)
        for warning in preflight(cfg, meta, strict_budgets=bool(os.environ.get("CNNBENCH_STRICT_BUDGETS"))):
            print(f"train@{name}: warning: {warning}", file=sys.stderr)
        tags = tracking.run_tags(name, cfg.dataset, str(resolve_device(cfg.device)))
        resume = Resume(Path(f"models/.resume/{name}.pt"))
        saved = read_resume_state(resume.path, cfg, meta) or {"curves": [], "timings": [], "extra": {}}
        run_id = saved["extra"].get("mlflow_run_id")
        with tracking.model_run(name, run_id=run_id, params=flatten(cfg), tags=tags) as run:
            curves, timings = list(saved["curves"]), list(saved["timings"])
            if curves:
                print(f"train@{name}: resuming after epoch {curves[-1]['epoch']}", file=sys.stderr)
            if run:
                resume.extra["mlflow_run_id"] = run.run_id
                run.log_missing_epochs(curves, timings)

            def on_epoch(row: dict, timing: dict) -> None:
                curves.append(row)
                timings.append(timing)
                write_csv(curves_csv, curves)  # rewritten every epoch: progress survives a crash
                write_csv(timing_csv, timings)
                if run:
                    run.log_epoch({**row, **timing}, step=row["epoch"])

            result = train(cfg, data_dir, on_epoch=on_epoch, resume=resume)
            save_checkpoint(Path(f"models/{name}.pt"), result.model, cfg, meta,
                            run.run_id if run else None)
            summary = summarize(result.model.cpu(), tuple(meta["input_shape"]))
            # the run id sits with the timings, apart from the results, which stay byte-identical
            write_json(Path(f"metrics/train/{name}.json"), {"params": summary.trainable, **result.summary(),
                                                            "mlflow_run_id": run.run_id if run else None})
            if run:
                example = normalize(load_split(data_dir, "test")[0][:4], meta["mean"], meta["std"])
                run.log_training(summary.to_text("markdown"), [curves_csv, timing_csv], result.model, example)
    except (ConfigError, DataError, TrainError, tracking.TrackingError) as e:
        print(f"train@{name}: error: {e}", file=sys.stderr)
        return 1
    s = result.summary()
    print(f"train@{name}: test acc {s['final_test_acc']:.4f} after {s['epochs']} epochs "
          f"(best {s['best_test_acc']:.4f} at epoch {s['best_epoch']}), {s['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
