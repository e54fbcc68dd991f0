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
