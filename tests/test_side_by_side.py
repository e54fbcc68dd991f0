"""`make run` with CNNBENCH_JOBS=2 trains two models at the same time, each stage recorded
with `dvc commit`, then its `dvc repro` runs only the rest; each model's results are the
ones it gets trained alone. (On a GPU this is the default; the CPU runs one at a time
unless told otherwise, which is what lets this test run here.)"""

import json
import re
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import make_project, run

pytestmark = pytest.mark.slow  # make test-fast skips it

SHORT = {"epochs": 2, "train_limit": 600, "keras_defaults": False}
MODELS = ["seed001_mnist", "mnist_7k"]


def test_two_models_train_side_by_side_with_the_results_each_gets_alone(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    env, git = make_project(root, datasets_dir, {name: SHORT for name in MODELS})
    env = {**env, "CNNBENCH_JOBS": "2"}
    out = run(["cnnbench", "run"], root, env, timeout=900).stdout
    assert "Training 2 models, 2 at a time (CNNBENCH_JOBS)" in out
    after = out[out.index("Training 2 models"):]
    for name in MODELS:
        assert f"[train@{name}] epoch 2/2: train loss " in after
        assert f"[evaluate@{name}] evaluate@{name}: test acc " in after
        assert f"[train@{name}] done after " in after
        # recorded by `dvc commit`: the `dvc repro` that follows does not run them again
        assert f"Running stage 'train@{name}'" not in after and f"Running stage 'evaluate@{name}'" not in after
    assert "Running stage 'report'" in after
    assert json.loads(run(["dvc", "status", "--json"], root, env).stdout) == {}

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert sorted(r.data.params["arch"] for r in runs) == sorted(MODELS)
    assert all(r.info.status == "FINISHED" and "final_test_acc" in r.data.metrics for r in runs)
    first, second = (r.info for r in runs)
    # at the same time: each run started before the other ended
    assert first.start_time < second.end_time and second.start_time < first.end_time

    side_by_side = {name: (root / f"metrics/curves/{name}.csv").read_bytes() for name in MODELS}
    # alone, one after the other in the workspace: the same curves, byte for byte
    run(["dvc", "repro", "--force", "--single-item", *(f"train@{n}" for n in MODELS)],
        root, {**env, "CNNBENCH_TRACKING": "off"}, timeout=900)
    for name in MODELS:
        assert (root / f"metrics/curves/{name}.csv").read_bytes() == side_by_side[name], name
        assert len(side_by_side[name].splitlines()) == 1 + SHORT["epochs"]  # a header and each epoch


def test_a_bad_jobs_setting_is_one_message(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    env, _ = make_project(root, datasets_dir, {"mnist_7k": SHORT})
    failed = run(["cnnbench", "run"], root, {**env, "CNNBENCH_JOBS": "two"}, check=False)
    assert failed.returncode == 1
    assert "CNNBENCH_JOBS='two' is not a number of trainings" in failed.stderr
    assert "Traceback" not in failed.stderr and not (root / "data" / "mnist").exists()


def test_ctrl_c_stops_every_training_and_each_keeps_its_epochs(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    env, _ = make_project(root, datasets_dir, {name: {**SHORT, "epochs": 50} for name in MODELS})
    env = {**env, "CNNBENCH_JOBS": "2", "CNNBENCH_TRACKING": "off"}
    # started with SIGINT ignored, as a shell starts a background job: the stages must still stop
    proc = subprocess.Popen(["cnnbench", "run"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    seen, started = [], set()
    for line in proc.stdout:
        seen.append(line)
        if m := re.match(r"\[train@(\w+)\] epoch 1/50", line):
            started.add(m.group(1))
        if started == set(MODELS):
            proc.send_signal(signal.SIGINT)  # what make passes on at Ctrl-C
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    plan = run(["cnnbench", "plan"], root, env).stdout
    for name in MODELS:
        assert f"[train@{name}] train@{name}: interrupted after " in out
        assert f"[evaluate@{name}]" not in out  # no new stage starts
        # each kept what it had finished, and the next run continues from there
        assert re.search(rf"  train@{name}: 4\d epoch\(s\) on cpu", plan), plan
