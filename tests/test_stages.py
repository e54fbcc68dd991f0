"""The stage scripts as DVC runs them, with tracking off (as on a GPU box without
mlflow): byte-identical results on the CPU, and clear errors for bad input."""

import json
import shutil

import pytest
import yaml

from conftest import REPO, run, stage_workdir, venv_env

TIMING_KEYS = {"seconds", "train_images_per_s"}


@pytest.fixture
def workdir(tmp_path, mnist_dir):
    return stage_workdir(tmp_path, mnist_dir, {"seed002_mnist": {
        "epochs": 2, "train_limit": 1200, "augment": {"crop_padding": 2, "cutout": 4}}})


def stage(name: str, *args: str, cwd, check=True):
    return run(["python", str(REPO / "stages" / f"{name}.py"), *args], cwd,
               venv_env(CNNBENCH_TRACKING="off"), check=check)


def test_two_cpu_runs_give_byte_identical_metrics_and_curves(workdir):
    files = ["metrics/curves/seed002_mnist.csv", "metrics/eval/seed002_mnist.json",
             "metrics/confusion/seed002_mnist.csv"]
    outputs = []
    for _ in range(2):
        stage("train", "seed002_mnist", cwd=workdir)
        stage("evaluate", "seed002_mnist", cwd=workdir)
        train = json.loads((workdir / "metrics/train/seed002_mnist.json").read_text())
        outputs.append(([(workdir / f).read_bytes() for f in files],
                        {k: v for k, v in train.items() if k not in TIMING_KEYS}))
        shutil.rmtree(workdir / "metrics")
    assert outputs[0] == outputs[1]
    curves = outputs[0][0][0].decode().splitlines()
    assert len(curves) == 3 and curves[0].startswith("epoch,train_loss")


def test_unknown_model_is_a_clear_error(workdir):
    proc = stage("train", "nope", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "model 'nope' is not in params.yaml; models: seed002_mnist" in proc.stderr


def test_invalid_params_stop_every_stage_before_work(workdir):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["models"]["seed002_mnist"]["optimizer"] = {"name": "adamm"}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    for name in ("train", "evaluate"):
        proc = stage(name, "seed002_mnist", cwd=workdir, check=False)
        assert proc.returncode == 1
        assert "models.seed002_mnist.optimizer.name: 'adamm' is not one of adam, adamw, sgd" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (workdir / "models").exists()


def test_missing_data_names_the_stage_to_run(workdir):
    (workdir / "data" / "mnist").unlink()
    proc = stage("train", "seed002_mnist", cwd=workdir, check=False)
    assert proc.returncode == 1 and "dvc repro download@mnist" in proc.stderr
