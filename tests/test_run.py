"""`make run` as a user meets it, in temporary git + DVC repositories holding a copy of the
project cut to one short MNIST model: the plan printed before the work, one log line per
epoch when the output is a log, Ctrl-C, the mirror the Makefile finds, and a second
clone that pulls from a local-directory DVC remote instead of retraining."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import pandas as pd
import pytest

from conftest import REPO, make_project, run

pytestmark = pytest.mark.slow  # make test-fast skips it

SHORT = {"epochs": 1, "train_limit": 1000, "keras_defaults": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, datasets_dir):
    """A project whose first `cnnbench run` trained seed001_mnist, pushed to a DVC remote."""
    root = tmp_path_factory.mktemp("first") / "project"
    root.mkdir()
    env, git = make_project(root, datasets_dir, {"seed001_mnist": SHORT})
    env = {**env, "CNNBENCH_TRACKING": "off"}  # MLflow has tests of its own
    remote = root.parent / "remote"
    run(["dvc", "remote", "add", "-d", "team", str(remote)], root, env)
    first = run(["cnnbench", "run"], root, env)
    git("add", "-A")
    git("commit", "-qm", "trained")
    run(["dvc", "push"], root, env)
    return root, env, first


def test_the_plan_comes_first_and_names_every_stage(trained):
    out = trained[2].stdout
    plan = out[:out.index("Running stage")]
    assert "dvc repro will run 4 stage(s):" in plan
    for stage in ("download@mnist", "evaluate@seed001_mnist", "report"):
        assert f"  {stage}\n" in plan
    # a fresh project has no committed timings to estimate from
    assert "  train@seed001_mnist: 1 epoch(s) on cpu, time unknown: no committed timings" in plan
    assert "Training on: CPU " in plan and "Estimated training time: unknown." in plan


def test_an_estimate_comes_from_the_committed_timings(trained):
    root, env, _ = trained
    assert "everything is up to date" in run(["cnnbench", "plan"], root, env).stdout
    params = root / "params.yaml"
    saved = params.read_text()
    try:
        params.write_text(saved.replace("epochs: 1\n", "epochs: 30\n", 1))
        # the estimate is per epoch, from the timing file (the summary's total adds start-up)
        seconds = pd.read_csv(root / "metrics/timing/seed001_mnist.csv")["seconds"].median()
        out = run(["cnnbench", "plan"], root, env).stdout
    finally:
        params.write_text(saved)
    assert "dvc repro will run 3 stage(s):" in out  # the data is up to date
    line = next(x for x in out.splitlines() if x.startswith("  train@seed001_mnist"))
    assert line.startswith("  train@seed001_mnist: 30 epoch(s) on cpu, ~")
    assert f"{seconds:,.0f} s an epoch in the committed run on cpu" in line


def test_a_log_gets_one_line_per_epoch(trained):
    out = trained[2].stdout
    assert "epoch 1/1: train loss " in out and " img/s, " in out and " left\n" in out
    assert "━" not in out  # no progress bar drawn into the log


def test_a_second_clone_pulls_from_the_remote_and_runs_nothing(trained, tmp_path):
    root, env, _ = trained
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    env = {**env, "PYTHONPATH": str(clone / "src")}
    out = run(["cnnbench", "run"], clone, env).stdout
    assert "Pulling what the DVC remote 'team' has" in out
    assert "dvc repro: everything is up to date; nothing to run." in out
    assert "Running stage" not in out
    assert (clone / "models" / "seed001_mnist.pt").is_file() and (clone / "data" / "mnist" / "train.pt").is_file()
    assert json.loads(run(["dvc", "status", "--json"], clone, env).stdout) == {}


def test_ctrl_c_ends_in_one_line_saying_how_to_continue(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    env, _ = make_project(root, datasets_dir, {"seed001_mnist": {**SHORT, "epochs": 50}})
    env = {**env, "CNNBENCH_TRACKING": "off"}
    # started with SIGINT ignored, as a shell starts a background job: the stage must still stop
    proc = subprocess.Popen(["cnnbench", "run"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("epoch 1/50"):
            proc.send_signal(signal.SIGINT)  # what make passes on at Ctrl-C
            break
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130
    assert "Traceback" not in out
    assert ("train@seed001_mnist: interrupted after 1 finished epoch(s), which are kept: `make run` "
            "(or `dvc repro`) continues from there") in out
    # and the next run knows it: 49 epochs to go
    assert "  train@seed001_mnist: 49 epoch(s) on cpu" in run(["cnnbench", "plan"], root, env).stdout


@pytest.mark.parametrize("shared, preset, expected", [
    (True, None, "{shared}"),  # ../shared/datasets beside the clone
    (False, None, ""),  # nothing to point at
    (True, "/somewhere/else", "/somewhere/else"),  # the user's own setting wins
])
def test_the_makefile_finds_the_mirror_beside_the_clone(tmp_path, shared, preset, expected):
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Makefile", clone)
    if shared:
        (tmp_path / "shared" / "datasets").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "CNNBENCH_DATA_MIRROR"}
    if preset:
        env["CNNBENCH_DATA_MIRROR"] = preset
    # a target of the test's own prints what the Makefile exports to its commands
    out = run(["make", "-s", "--eval", "show-mirror: ; @echo \"mirror=$$CNNBENCH_DATA_MIRROR\"", "show-mirror"],
              clone, env).stdout
    assert out.strip() == "mirror=" + expected.format(shared=tmp_path / "shared" / "datasets")


def test_demo_runs_every_model_as_an_experiment_and_leaves_main_alone(tmp_path, datasets_dir):
    from mlflow.tracking import MlflowClient

    root = tmp_path / "project"
    root.mkdir()
    env, git = make_project(root, datasets_dir, {"seed001_mnist": {}, "mnist_7k": {}})
    proc = run(["cnnbench", "demo"], root, env)
    name = proc.stdout.split("temporary DVC experiment ", 1)[1].split()[0]
    board = proc.stdout.split(f"Leaderboard of {name}", 1)[1]
    assert "| seed001_mnist" in board and "| mnist_7k" in board
    assert git("status", "--porcelain").stdout == ""  # main's params and metrics untouched
    assert name in run(["dvc", "exp", "list", "--name-only"], root, env).stdout.split()
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnbench-demo").experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == ["mnist_7k", "seed001_mnist"]
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["dvc_exp_name"] == name
        assert (r.data.params["epochs"], r.data.params["train_limit"]) == ("1", "1000")


def test_a_bad_params_file_stops_make_run_before_dvc(trained, tmp_path):
    """DVC's own reading of a key given twice is a traceback; `cnnbench run` and `plan`
    check params.yaml first and say what is wrong, before any pull or stage."""
    root, env, _ = trained
    work = tmp_path / "work"  # a copy, so that the module's project stays as it was
    shutil.copytree(root, work, symlinks=True)
    text = (work / "params.yaml").read_text()
    (work / "params.yaml").write_text(text.replace("  seed: 0\n", "  seed: 0\n  seed: 1\n", 1))
    for command in ("run", "plan"):
        proc = run(["cnnbench", command], work, env, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "key 'seed' is given twice in one mapping" in proc.stderr
        assert "Running stage" not in proc.stdout and "Pulling" not in proc.stdout
