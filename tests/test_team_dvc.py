"""A team's DVC side, for real: an S3 remote (through dvc-s3) that a fresh clone pulls from
instead of rebuilding, and experiments that travel between two clones with `dvc exp push`
and `dvc exp pull`, their MLflow run the one on the shared tracking server. The local-
directory remote has its test in test_run.py.

The S3 endpoint is moto's server mode on 127.0.0.1: it stands in for S3's API (what dvc-s3
speaks), not for a storage system."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, make_project, run, start_server, stop_server

pytestmark = pytest.mark.slow  # make test-fast skips it

SHORT = {"epochs": 1, "train_limit": 1000, "keras_defaults": False}
BUCKET = "cnnbench-team"
# moto accepts any keys; a real bucket takes the team's own, from the environment or ~/.aws
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    port = free_port()
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers
        except OSError:
            if time.time() > deadline:
                stop_server(proc)
                raise AssertionError("moto_server did not start") from None
            time.sleep(0.3)
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in AWS.items()
                                                            if k != "AWS_DEFAULT_REGION"}, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    stop_server(proc)


@pytest.fixture(scope="module")
def team(tmp_path_factory, datasets_dir, s3):
    """A project pushed to a shared git remote, its DVC remote on S3, its runs on a shared
    MLflow server; the first clone has trained seed001_mnist and pushed it."""
    endpoint, _ = s3
    tmp = tmp_path_factory.mktemp("team")
    port = free_port()
    server = start_server(tmp / "mlflow.db", tmp / "artifacts", port)
    first = tmp / "first"
    first.mkdir()
    env, git = make_project(first, datasets_dir, {"seed001_mnist": SHORT})
    env = {**env, **AWS, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    run(["git", "init", "-q", "--bare", "-b", "main", str(tmp / "origin.git")], tmp, env)
    run(["dvc", "remote", "add", "-d", "team", f"s3://{BUCKET}/dvc"], first, env)
    run(["dvc", "remote", "modify", "team", "endpointurl", endpoint], first, env)
    run(["cnnbench", "run"], first, env)
    git("add", "-A")
    git("commit", "-qm", "trained")
    git("remote", "add", "origin", str(tmp / "origin.git"))
    git("push", "-q", "origin", "main")
    run(["dvc", "push"], first, env)
    yield tmp, first, env, port
    stop_server(server)


def clone(team, name: str):
    tmp, _, env, _ = team
    root = tmp / name
    run(["git", "clone", "-q", str(tmp / "origin.git"), str(root)], tmp, env)
    return root, {**env, "PYTHONPATH": str(root / "src")}


def test_a_fresh_clone_pulls_from_the_s3_remote_and_rebuilds_nothing(team, s3):
    _, client = s3
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys and all(k.startswith("dvc/files/md5/") for k in keys)  # DVC's own layout, in the bucket
    root, env = clone(team, "second")
    out = run(["cnnbench", "run"], root, env).stdout
    assert "Pulling what the DVC remote 'team' has" in out and "Running stage" not in out
    assert (root / "models/seed001_mnist.pt").read_bytes() == (team[1] / "models/seed001_mnist.pt").read_bytes()
    assert json.loads(run(["dvc", "status", "--json"], root, env).stdout) == {}


def test_an_experiment_travels_between_clones_with_its_outputs_and_its_mlflow_run(team):
    _, first, env, port = team
    run(["dvc", "exp", "run", "-n", "seed-five", "-S", "++models.seed001_mnist.seed=5"], first, env)
    trained = json.loads(run(["git", "show", "refs/exps/" + exp_ref(first, env, "seed-five") +
                              ":metrics/train/seed001_mnist.json"], first, env).stdout)
    run(["dvc", "exp", "push", "origin", "seed-five"], first, env)  # git refs and DVC outputs

    root, env2 = clone(team, "third")
    run(["dvc", "exp", "pull", "origin", "seed-five"], root, env2)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env2).stdout)
    exps = [e for rev in shown for e in rev.get("experiments") or [] if e.get("name") == "seed-five"]
    assert len(exps) == 1
    scores = exps[0]["revs"][0]["data"]["metrics"]["metrics/scores/seed001_mnist.json"]["data"]
    assert scores["epochs"] == 1 and 0 < scores["test_acc_pct"] <= 100
    run(["dvc", "exp", "apply", "seed-five"], root, env2)
    assert json.loads((root / "metrics/train/seed001_mnist.json").read_text()) == trained
    assert (root / "models/seed001_mnist.pt").is_file()
    assert json.loads(run(["dvc", "status", "--json"], root, env2).stdout) == {}

    from mlflow.tracking import MlflowClient

    r = MlflowClient(f"http://127.0.0.1:{port}").get_run(trained["mlflow_run_id"])
    assert r.data.tags["dvc_exp_name"] == "seed-five" and r.data.params["seed"] == "5"
    assert r.info.status == "FINISHED"


def exp_ref(root, env, name: str) -> str:
    """The experiment's git ref below refs/exps/ (DVC keeps experiments there)."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], root, env).stdout.split()
    (ref,) = [r for r in refs if r.endswith("/" + name)]
    return ref.removeprefix("refs/exps/")
