"""The stage scripts as DVC runs them, with tracking off (as on a GPU box without
mlflow): byte-identical results on the CPU, and clear errors for bad input."""

import json
import shutil

import pytest
import yaml

from conftest import REPO, run, stage_workdir, venv_env

pytestmark = pytest.mark.slow  # make test-fast skips it

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
    assert "model 'nope' is not in params.yaml" in stage("evaluate", "nope", cwd=workdir, check=False).stderr


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


def set_model(workdir, **changes):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["models"]["seed002_mnist"].update(changes)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))


def test_an_arch_that_does_not_fit_the_dataset_stops_before_training(workdir):
    set_model(workdir, arch="seed001_sep")  # a CIFAR-10 net on 1x28x28 MNIST
    proc = stage("train", "seed002_mnist", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "arch 'seed001_sep' does not fit dataset 'mnist' (images 1x28x28)" in proc.stderr
    assert "Traceback" not in proc.stderr and not (workdir / "metrics").exists()


def test_a_broken_parameter_budget_warns_or_stops_when_strict(workdir):
    set_model(workdir, budget={"max_params": 10000}, epochs=1, train_limit=200)
    strict = run(["python", str(REPO / "stages/train.py"), "seed002_mnist"], workdir,
                 venv_env(CNNBENCH_TRACKING="off", CNNBENCH_STRICT_BUDGETS="1"), check=False)
    assert strict.returncode == 1
    assert "seed002_mnist has 13,800 trainable parameters, over its budget of 10,000" in strict.stderr
    assert not (workdir / "models").exists()
    lenient = stage("train", "seed002_mnist", cwd=workdir)
    assert "warning: seed002_mnist has 13,800 trainable parameters" in lenient.stderr
    assert (workdir / "models/seed002_mnist.pt").is_file()


def test_a_checkpoint_from_another_config_is_refused_by_evaluate(workdir):
    set_model(workdir, epochs=1, train_limit=200)
    stage("train", "seed002_mnist", cwd=workdir)
    set_model(workdir, arch="seed001_mnist")
    proc = stage("evaluate", "seed002_mnist", cwd=workdir, check=False)
    assert proc.returncode == 1
    assert "models/seed002_mnist.pt was trained with another config than models.seed002_mnist" in proc.stderr
    assert "dvc repro train@seed002_mnist" in proc.stderr and not (workdir / "metrics/eval").exists()


def test_a_malformed_tracking_uri_stops_before_training(workdir):
    proc = run(["python", str(REPO / "stages/train.py"), "seed002_mnist"], workdir,
               venv_env(MLFLOW_TRACKING_URI="htp:/127.0.0.1:5000"), check=False)
    assert proc.returncode == 1
    assert "MLFLOW_TRACKING_URI 'htp:/127.0.0.1:5000' has an unknown scheme 'htp'" in proc.stderr
    assert not (workdir / "models").exists()
