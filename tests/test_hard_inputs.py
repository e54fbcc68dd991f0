"""Bad input, done for real: damaged files on disk, odd values, folders that cannot be
written and a training that diverges, each through a real stage process with a real
SQLite MLflow store. Each ends in one message that names the problem and the fix: exit 1,
no traceback, and the earlier good outputs and the store as they were."""

import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, mnist_params, run, venv_env

pytestmark = pytest.mark.slow  # make test-fast skips it

MODEL = "seed002_mnist"
CKPT = f"models/{MODEL}.pt"


def env(project: Path, **extra: str) -> dict:
    return venv_env(**{"MLFLOW_TRACKING_URI": f"sqlite:///{project}/mlflow.db", **extra})


def stage(project: Path, name: str, *args: str, **extra: str):
    return run([sys.executable, str(REPO / "stages" / f"{name}.py"), *args], project,
               env(project, **extra), check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir) -> Path:
    """A project with MODEL trained (one epoch, 300 images) and evaluated, its own copy of
    data/mnist and its MLflow run in a SQLite store."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(mnist_dir, root / "data" / "mnist")
    (root / "params.yaml").write_text(yaml.safe_dump(mnist_params({MODEL: {"epochs": 1, "train_limit": 300}})))
    for name in ("train", "evaluate"):
        proc = stage(root, name, MODEL)
        assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture
def project(trained, tmp_path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(trained, copy)
    return copy


def snapshot(project: Path) -> tuple:
    """Every file of the project (by digest) and every run, param, tag and metric."""
    files = {str(p.relative_to(project)): hashlib.md5(p.read_bytes()).hexdigest()
             for p in sorted(project.rglob("*")) if p.is_file() and not p.name.startswith("mlflow.db")}
    with sqlite3.connect(project / "mlflow.db") as db:
        store = [db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                 for table in ("runs", "params", "tags", "metrics")]
    return files, store


def refused(project: Path, name: str, *args: str, expect: list[str], **extra: str) -> str:
    """Run stage ``name``, which must refuse with one message holding ``expect``, and
    leave every file and the MLflow store as they were."""
    before = snapshot(project)
    proc = stage(project, name, *args, **extra)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "weights_only" not in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1, proc.stderr
    for text in expect:
        assert text in proc.stderr, proc.stderr
    assert snapshot(project) == before
    return proc.stderr


# --- checkpoints, resume states, prepared data ----------------------------------------

def _nan_weights(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    first = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][first] = torch.full_like(ckpt["state_dict"][first], math.nan)
    torch.save(ckpt, path)


DAMAGED_CHECKPOINTS = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]),
                  f"{CKPT} is damaged (torch cannot load it"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(4096)), f"{CKPT} is damaged (torch cannot load it"),
    # a pickle PROTO opcode of an unknown version: torch warns before it fails
    "unknown pickle protocol": (lambda p: p.write_bytes(b"\x80O" + bytes(range(256)) * 8),
                                f"{CKPT} is damaged (torch cannot load it"),
    "NaN weights": (_nan_weights, f"{CKPT} holds non-finite weights"),
    "missing": (lambda p: p.unlink(), f"{CKPT} does not exist: train the model first"),
}


@pytest.mark.parametrize("damage", DAMAGED_CHECKPOINTS)
def test_a_damaged_checkpoint_is_one_message_from_evaluate(project, damage):
    spoil, message = DAMAGED_CHECKPOINTS[damage]
    spoil(project / CKPT)
    refused(project, "evaluate", MODEL, expect=[message, f"dvc checkout {CKPT}"])


def test_a_damaged_resume_state_stops_training_before_the_run_opens(project):
    state = project / "models" / ".resume" / f"{MODEL}.pt"
    state.parent.mkdir(exist_ok=True)
    state.write_bytes(b"\x80O" + os.urandom(2048))  # torch warns about this one before failing
    refused(project, "train", MODEL, expect=[f"models/.resume/{MODEL}.pt is damaged", "it is the state saved "
                                             "after the last finished epoch: delete it"])


def _relabel(path: Path) -> None:
    """A valid torch file whose labels are no longer those meta.json describes."""
    blob = torch.load(path, weights_only=True)
    blob["labels"][0] = (blob["labels"][0] + 1) % 10
    torch.save(blob, path)


DAMAGED_DATA = {  # file, damage, message, the stages that read the file
    "truncated test.pt": ("test.pt", lambda p: p.write_bytes(p.read_bytes()[:1000]),
                          "data/mnist/test.pt is damaged (torch cannot load it", ("train", "evaluate")),
    "labels changed in train.pt": ("train.pt", _relabel,
                                   "data/mnist/train.pt is not the train split that data/mnist/meta.json "
                                   "describes", ("train",)),
    "meta.json not JSON": ("meta.json", lambda p: p.write_text(p.read_text()[:50]),
                           "data/mnist/meta.json is damaged (not readable JSON", ("train", "evaluate")),
}


@pytest.mark.parametrize("damage", DAMAGED_DATA)
def test_damaged_prepared_data_stops_train_and_evaluate(project, damage):
    file, spoil, message, readers = DAMAGED_DATA[damage]
    spoil(project / "data" / "mnist" / file)
    for name in readers:
        refused(project, name, MODEL, expect=[message, "dvc checkout data/mnist", "dvc repro download@mnist"])


# --- npz data sets --------------------------------------------------------------------

def _npz(tmp_path: Path, datasets_dir: Path, **changes) -> tuple[Path, str]:
    """The real CIFAR-10 subset with some arrays replaced; (path, sha256)."""
    with np.load(datasets_dir / "cifar10-subset.npz") as z:
        arrays = {k: z[k] for k in z}
    arrays.update(changes)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _labels(datasets_dir: Path, split: str, set_first=None, dtype=None) -> np.ndarray:
    with np.load(datasets_dir / "cifar10-subset.npz") as z:
        y = z[f"y_{split}"].astype(np.int64)
    if set_first is not None:
        y[0] = set_first
    return y.astype(dtype) if dtype else y


def test_an_npz_label_out_of_range_stops_the_download_stage(tmp_path, datasets_dir):
    path, sha = _npz(tmp_path, datasets_dir, y_train=_labels(datasets_dir, "train", set_first=12))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "datasets": {"subset": {"source": "npz", "path": path.name, "sha256": sha}},
        "models": {"m": {"arch": "seed000_sep", "dataset": "subset", "epochs": 1, "batch_size": 32}}}))
    before = sorted(tmp_path.rglob("*"))
    proc = run([sys.executable, str(REPO / "stages/download.py"), "subset"], tmp_path, venv_env(), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "bad.npz: y_train holds the label 12, but classes names 10 classes (labels 0 to 9)" in proc.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no data/subset, no partial folder


def test_every_other_npz_label_problem_is_refused_before_anything_is_written(tmp_path, datasets_dir):
    from cnnbench.data import DataError, prepare

    cases = {
        "a negative label": ({"y_test": _labels(datasets_dir, "test", set_first=-1)},
                             "y_test holds the label -1; labels count classes from 0"),
        "fewer class names than labels": ({"classes": np.array(["a", "b", "c"])},
                                          "but classes names 3 classes"),
        "float labels": ({"y_train": _labels(datasets_dir, "train", dtype=np.float32)},
                         "y_train holds float32 values; labels are class indices"),
        "an empty split": ({"x_test": np.zeros((0, 32, 32, 3), np.uint8), "y_test": np.zeros(0, np.int64)},
                           "the test split is empty"),
        "a class named twice": ({"classes": np.array(["cat"] * 10)}, "classes must be distinct"),
        "two image shapes": ({"x_test": np.zeros((5, 28, 28, 3), np.uint8), "y_test": np.zeros(5, np.int64)},
                             "both splits need one image shape"),
    }
    for what, (changes, message) in cases.items():
        path, sha = _npz(tmp_path, datasets_dir, **changes)
        with pytest.raises(DataError, match=message):
            prepare("subset", tmp_path / "data" / "subset", npz=path, sha256=sha)
        assert not (tmp_path / "data").exists(), what  # no data/subset, no partial folder
    # Keras's N,1 labels are taken as they are meant
    path, sha = _npz(tmp_path, datasets_dir, y_test=_labels(datasets_dir, "test")[:, None])
    assert prepare("subset", tmp_path / "data" / "subset", npz=path, sha256=sha)["splits"]["test"]["count"] == 1017


# --- params ---------------------------------------------------------------------------

def _edit_params(project: Path, **changes) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"][MODEL].update(changes)
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def test_values_that_would_crash_later_are_refused_together(project):
    _edit_params(project, optimizer={"lr": float("nan")}, schedule={"name": "inverse_time", "decay": float("inf")},
                 epochs=True, seed=2**70)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["my model"] = {"arch": "nope", "dataset": "nope", "epochs": 0, "batch_size": -1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for name in ("train", "evaluate"):
        refused(project, name, MODEL, expect=[
            f"models.{MODEL}.optimizer.lr: input should be a finite number (got nan)",
            f"models.{MODEL}.schedule.decay: input should be a finite number (got inf)",
            f"models.{MODEL}.epochs: input should be a valid integer (got True)",
            f"models.{MODEL}.seed: input should be less than or equal to 4294967295",
            "models.my model: a name becomes file and stage names",
            "models.my model.epochs: input should be greater than or equal to 1 (got 0)",
            "models.my model.batch_size: input should be greater than or equal to 1 (got -1)",
            "models.my model.arch: 'nope' is not one of", "models.my model.dataset: 'nope' is not one of mnist"])


def test_a_key_given_twice_and_a_file_not_in_utf8_are_refused(project):
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(text.replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1))
    refused(project, "train", MODEL, expect=["params.yaml is not valid YAML at line",
                                            "key 'seed' is given twice in one mapping"])
    (project / "params.yaml").write_bytes(("# café\n" + text).encode("latin-1"))
    refused(project, "evaluate", MODEL, expect=["params.yaml is not UTF-8 text (byte 0xe9 on line 1)"])
    (project / "params.yaml").write_text(text + "  oops: [\n")
    refused(project, "train", MODEL, expect=["params.yaml is not valid YAML at line"])


def test_exponent_numbers_read_as_numbers_as_dvc_reads_them(tmp_path):
    from cnnbench.config import load_params

    params = mnist_params({MODEL: {}})
    text = yaml.safe_dump(params).replace("lr: 0.003", "lr: 3e-3")
    assert "lr: 3e-3" in text
    (tmp_path / "params.yaml").write_text(text)
    assert load_params(tmp_path / "params.yaml").models[MODEL].optimizer.lr == 0.003


# --- tracking stores, devices, output folders -----------------------------------------

def test_a_tracking_store_mlflow_cannot_open_is_one_message(project):
    stderr = refused(project, "train", MODEL, MLFLOW_TRACKING_URI="postgresql://lab:s3cret@127.0.0.1:1/mlflow",
                     expect=["MLflow cannot open the tracking store postgresql://***@127.0.0.1:1/mlflow",
                             "Fix MLFLOW_TRACKING_URI"])
    assert "s3cret" not in stderr


@pytest.mark.parametrize("uri, message", [
    ("sqlite://mlflow.db", "is not a SQLite URI MLflow can open; write sqlite:///relative/path.db"),
    ("sqlite:", "is not a SQLite URI MLflow can open"),
    ("http://127.0.0.1:abc", "has a port that is not a number"),
    ("file:mlruns", "MLflow cannot open the tracking store file:mlruns (MlflowException"),
    ("mysql://lab:s3cret@127.0.0.1:1/mlflow", "MLflow cannot open the tracking store mysql://***@127.0.0.1:1/mlflow"),
    ("databricks", "MLflow cannot open the tracking store databricks (MlflowException"),
    ("https://", "the MLflow tracking server at https:// cannot be reached"),
])
def test_malformed_tracking_uris_of_accepted_schemes(monkeypatch, tmp_path, uri, message):
    from cnnbench import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(tracking.TrackingError, match=re.escape(message)) as refused:
        tracking.connect()
    assert "s3cret" not in str(refused.value)


def test_an_odd_tracking_setting_stops_before_the_run_opens(project):
    refused(project, "train", MODEL, CNNBENCH_TRACKING_RETRY_S="two minutes",
            expect=["CNNBENCH_TRACKING_RETRY_S='two minutes' is not a number of seconds"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="device: cuda is valid where torch sees a GPU")
def test_device_cuda_without_a_gpu_stops_before_the_run_opens(project):
    _edit_params(project, device="cuda")
    refused(project, "train", MODEL, expect=["device: cuda was requested but torch sees no CUDA GPU here",
                                            "use device: auto"])


def test_an_output_folder_that_cannot_be_written_is_found_before_training(project):
    shutil.rmtree(project / "metrics" / "curves")
    (project / "metrics" / "curves").write_text("not a folder")
    refused(project, "train", MODEL, expect=["cannot write to metrics/curves/: metrics/curves is a file"])
    shutil.rmtree(project / "metrics" / "eval")
    (project / "metrics" / "eval").write_text("not a folder")
    refused(project, "evaluate", MODEL, expect=["cannot write to metrics/eval/: metrics/eval is a file"])


def test_a_damaged_metrics_file_stops_the_report(project):
    (project / "metrics" / "eval" / f"{MODEL}.json").write_text('{"test_acc": 0.9')
    refused(project, "report", expect=[f"metrics/eval/{MODEL}.json is damaged (not readable JSON",
                                       f"git checkout metrics/eval/{MODEL}.json", f"dvc repro evaluate@{MODEL}"])


# --- a training that diverges -------------------------------------------------------

def test_a_diverging_training_fails_its_run_and_writes_no_model_or_metrics(project):
    _edit_params(project, optimizer={"name": "sgd", "lr": 10.0, "momentum": 0.99}, train_limit=1000)
    files_before, _ = snapshot(project)
    proc = stage(project, "train", MODEL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "training diverged in epoch 1: train loss nan, test loss nan at learning rate 10" in proc.stderr
    assert snapshot(project)[0] == files_before  # checkpoint, curves and metrics as they were
    with sqlite3.connect(project / "mlflow.db") as db:
        (run_id, status), = db.execute("SELECT run_uuid, status FROM runs WHERE status != 'FINISHED'").fetchall()
        tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        logged = db.execute("SELECT count(*) FROM metrics WHERE run_uuid = ?", (run_id,)).fetchone()[0]
    assert status == "FAILED" and logged == 0
    assert tags["failure"].startswith("Diverged: training diverged in epoch 1")
    assert tags["mlflow.note.content"].startswith("Failed: Diverged")


# --- what the project writes ----------------------------------------------------------

def test_written_files_keep_the_usual_permissions(trained):
    umask = os.umask(0)
    os.umask(umask)
    for path in (CKPT, f"metrics/train/{MODEL}.json", f"metrics/curves/{MODEL}.csv", f"metrics/eval/{MODEL}.json"):
        assert (trained / path).stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_metrics_files_never_hold_nan_or_infinity(tmp_path):
    from cnnbench.files import write_json

    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="not written, it would hold a non-finite number"):
            write_json(tmp_path / "m.json", {"test_loss": bad})
    assert not (tmp_path / "m.json").exists()
    write_json(tmp_path / "m.json", {"test_loss": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"test_loss": 0.5}
