"""DVC stage evaluate@<model>: final test metrics, cost (MACs, checkpoint size, inference
speed), confusion matrix and mistakes of a trained model, logged into the MLflow run that
trained it.

Writes metrics/eval/<model>.json, metrics/inference/<model>.json,
metrics/confusion/<model>.csv and metrics/misclassified/<model>.png.
"""

import argparse
import sys

from cnnbench import CnnbenchError, tracking
from cnnbench.checkpoints import load_matching_checkpoint
from cnnbench.config import load_evaluation, load_model_config
from cnnbench.data import load_split
from cnnbench.evaluate import confusion_rows, evaluate_model, plot_misclassified
from cnnbench.files import check_writable, write_csv, write_json
from cnnbench.outputs import data_dir, model_outputs
from cnnbench.speed import inference_speed
from cnnbench.summary import summarize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    name = args.model
    try:
        cfg = load_model_config(args.params, name)
        flip = load_evaluation(args.params, name).flip
        # weights_only=True inside; refuses weights trained with another config
        out = model_outputs(name)
        model, saved = load_matching_checkpoint(out.checkpoint, cfg, name, args.params)
        run_id = saved["mlflow_run_id"]
        test = load_split(data_dir(cfg.dataset), "test")
        metrics_json, confusion_csv, mistakes_png = out.eval_metrics, out.confusion, out.mistakes
        check_writable(metrics_json.parent, out.inference.parent, confusion_csv.parent, mistakes_png.parent)
        if tracking.enabled():
            tracking.connect()  # a store that cannot take the results is found before the work
        metrics, pred, (images, labels), classes = evaluate_model(model, saved, test, flip)
        input_shape = tuple(saved["input_shape"])
        metrics["macs"] = int(summarize(model, input_shape).table["macs"].sum())  # per image
        metrics["checkpoint_bytes"] = out.checkpoint.stat().st_size
        speed = inference_speed(model, input_shape, next(model.parameters()).device)
        write_json(metrics_json, metrics)
        write_json(out.inference, speed)
        write_csv(confusion_csv, confusion_rows(labels, pred, classes))
        plot_misclassified(images, labels, pred, classes, mistakes_png)
        with tracking.model_run(name, run_id=run_id if tracking.enabled() else None) as run:
            if run:
                # the inference figures are the run's metrics and tags; its file, of the same
                # name as metrics_json, would overwrite that in the run's evaluation/ folder
                run.log_evaluation(metrics, speed, labels, pred, classes, [metrics_json, confusion_csv, mistakes_png])
    except CnnbenchError as e:
        print(f"evaluate@{name}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a disk that fills up or goes away
        print(f"evaluate@{name}: error: {e.filename or 'a file'}: {e.strerror}", file=sys.stderr)
        return 1
    tta = f" with flip TTA ({metrics['test_acc_single_pass']:.4f} without)" if flip else ""
    print(f"evaluate@{name}: test acc {metrics['test_acc']:.4f}{tta}, {metrics['errors']} errors "
          f"in {metrics['test_images']} test images; {speed['images_per_s']:,.0f} images/s at batch "
          f"{speed['batch']}, {speed['latency_ms_batch1']} ms for one image on {speed['device_name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
