"""dvc.yaml stays in step with params.yaml."""

import yaml

from conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_every_model_is_in_every_cross_model_plot():
    for plot in DVC["plots"]:
        (title, spec), = plot.items()
        files = set(spec["y"])
        assert files == {f"metrics/curves/{m}.csv" for m in PARAMS["models"]}, title


def test_everything_under_metrics_is_kept_out_of_the_cache():
    for name, stage in DVC["stages"].items():
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                if path.startswith("metrics/"):
                    assert opts.get("cache") is False, f"{name}: {path} must have cache: false"
                else:
                    assert path.startswith(("data/", "models/")), path


def test_train_depends_on_every_shared_model_module():
    # A shared module left out of train's deps would let an edit to it change every
    # model without dvc noticing; one listed but not shared would rerun all for nothing.
    from cnnbench.models import SHARED_MODULES

    deps = set(DVC["stages"]["train"]["do"]["deps"])
    listed = {d.rsplit("/", 1)[1][:-3] for d in deps if d.startswith("src/cnnbench/models/")}
    assert listed == {*SHARED_MODULES, "__init__", "${item.arch}"}
