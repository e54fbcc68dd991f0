"""The team tracking server on real engines: a private PostgreSQL cluster (initdb in a
temporary folder, 127.0.0.1 and a free port, run as the `postgres` user when the tests run
as root, since PostgreSQL refuses root) and `cnnbench team-server` on it, with MLflow's
accounts on. Stage scripts log into it as a user would: URI plus
MLFLOW_TRACKING_USERNAME/PASSWORD."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from conftest import REPO, free_port, run, stage_workdir, stop_server, venv_env, wait_for_epochs

pytestmark = pytest.mark.slow  # make test-fast skips it

ADMIN_PASSWORD = "admin-Secret-4711"
ALICE, BOB = ("alice", "alice-Secret-1234"), ("bob", "bob-Secret-5678")
DB_PASSWORD = "db-Secret-9876"


@pytest.fixture(scope="module")
def postgres():
    from cnnbench.team import PrivatePostgres, TeamServerError

    try:  # .ci/run installs Debian's postgresql: under CI a missing one fails, never skips
        pg = PrivatePostgres(DB_PASSWORD)
    except TeamServerError as e:
        pytest.fail(str(e))
    yield pg
    pg.remove()


def team_env(**extra: str) -> dict[str, str]:
    return venv_env(MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD, PGPASSWORD=DB_PASSWORD, **extra)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("team") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["cnnbench", "team-server", "--db", postgres.uri, "--port", str(port), "--workers",
                                 "2", "--artifacts", str(tmp_path_factory.mktemp("artifacts"))],
                                env=team_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                stop_server(proc)
                raise AssertionError(f"the team server did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
    admin = auth_client(url, ("admin", ADMIN_PASSWORD))
    for user, password in (ALICE, BOB):
        admin.create_user(user, password)
    yield url, log
    stop_server(proc)


def auth_client(url: str, account: tuple[str, str]):
    """MLflow's own client of the accounts API, as ``account``."""
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(url)
    user, password = account

    def request(endpoint, method, *, _request=client._request, **kwargs):
        with credentials(user, password):
            return _request(endpoint, method, **kwargs)

    client._request = request
    return client


class credentials:
    """MLFLOW_TRACKING_USERNAME/PASSWORD for the calls inside, as a user's shell has them."""

    def __init__(self, user: str, password: str) -> None:
        self.values = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def user_env(url: str, account: tuple[str, str], **extra: str) -> dict[str, str]:
    return venv_env(MLFLOW_TRACKING_URI=url, MLFLOW_TRACKING_USERNAME=account[0],
                    MLFLOW_TRACKING_PASSWORD=account[1], **extra)


def train_and_evaluate(workdir: Path, env: dict) -> list[subprocess.CompletedProcess]:
    return [run(["python", str(REPO / f"stages/{stage}.py"), "seed001_mnist"], workdir, env)
            for stage in ("train", "evaluate")]


def test_the_server_refuses_weak_or_exposed_secrets_before_it_starts(tmp_path):
    def team_server(env: dict, db: str = "postgresql://mlflow@127.0.0.1:1/mlflow"):
        return run(["cnnbench", "team-server", "--db", db, "--artifacts", str(tmp_path / "a")], tmp_path, env,
                   check=False, timeout=60)

    for password, problem in (("", "set MLFLOW_AUTH_ADMIN_PASSWORD"), ("password1234", "too easy to guess"),
                              ("short", "too easy to guess")):
        proc = team_server(venv_env(MLFLOW_AUTH_ADMIN_PASSWORD=password))
        assert proc.returncode == 2 and problem in proc.stderr and "Traceback" not in proc.stderr
    proc = team_server(team_env(), db=f"postgresql://mlflow:{DB_PASSWORD}@127.0.0.1:1/mlflow")
    assert proc.returncode == 2 and "put it in PGPASSWORD" in proc.stderr and DB_PASSWORD not in proc.stderr
    proc = team_server(team_env())  # nothing listens on port 1
    assert proc.returncode == 2 and "PostgreSQL at postgresql://mlflow@127.0.0.1:1/mlflow refuses" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "a").exists()


def test_a_pipeline_run_lands_in_postgresql_with_its_history_and_a_loadable_model(server, postgres, tmp_path,
                                                                                    mnist_dir):
    url, log = server
    workdir = stage_workdir(tmp_path, mnist_dir, {"seed001_mnist": {"epochs": 2, "train_limit": 1000}})
    logs = train_and_evaluate(workdir, user_env(url, ALICE))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    with credentials(*ALICE):
        experiment = client.get_experiment_by_name("cnnbench")
        (r,) = client.search_runs([experiment.experiment_id])
        history = client.get_metric_history(r.info.run_id, "test_acc")
        import mlflow.pytorch

        mlflow.set_tracking_uri(url)
        logged = mlflow.pytorch.load_model(r.data.tags["model_uri"])
        evaluation = client.download_artifacts(r.info.run_id, "evaluation/seed001_mnist.json", str(tmp_path))
    assert r.info.status == "FINISHED" and r.info.user_id == "alice"
    curves = (workdir / "metrics/curves/seed001_mnist.csv").read_text().splitlines()[1:]
    assert [(m.step, m.value) for m in history] == [(i, float(row.split(",")[4])) for i, row in enumerate(curves)]
    assert json.loads(Path(evaluation).read_text()) == json.loads((workdir / "metrics/eval/seed001_mnist.json")
                                                                   .read_text())
    from cnnbench.checkpoints import load_checkpoint

    model, _ = load_checkpoint(workdir / "models/seed001_mnist.pt")
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(logged(x), model(x))
    # the run is in PostgreSQL itself, and no secret reached a param, a tag or a log line
    assert postgres.query(f"select status from runs where run_uuid = '{r.info.run_id}'") == "FINISHED"
    secrets = (ALICE[1], ADMIN_PASSWORD, DB_PASSWORD)
    texts = [*r.data.params.values(), *r.data.tags.values(), log.read_text(),
             *(p.stdout + p.stderr for p in logs)]
    assert not [t for t in texts if any(s in t for s in secrets)]


def test_another_account_can_neither_read_nor_change_an_experiment_without_a_grant(server):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    url, _ = server
    client = MlflowClient(url)
    with credentials(*ALICE):
        experiment_id = client.create_experiment("alice-private")
        run_id = client.create_run(experiment_id).info.run_id
        client.log_metric(run_id, "acc", 0.9)
    with credentials(*BOB):
        for attempt in (lambda: client.get_experiment(experiment_id), lambda: client.get_run(run_id),
                        lambda: client.log_metric(run_id, "acc", 0.1),
                        lambda: client.set_experiment_tag(experiment_id, "owner", "bob")):
            with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
                attempt()
    with credentials(*ALICE):
        assert [m.value for m in client.get_metric_history(run_id, "acc")] == [0.9]
        assert "owner" not in client.get_experiment(experiment_id).tags
    # the owner grants READ (as docs/guide.md shows): bob reads, and still cannot change
    auth_client(url, ALICE).grant_user_permission("bob", "experiment", experiment_id, "READ")
    with credentials(*BOB):
        assert client.get_run(run_id).data.metrics == {"acc": 0.9}
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            client.log_metric(run_id, "acc", 0.1)
    with credentials(BOB[0], "a wrong password"):
        with pytest.raises(MlflowException, match="401|[Uu]nauthori"):
            client.get_run(run_id)


def test_four_trainings_at_once_lose_nothing(server, tmp_path, mnist_dir):
    url, _ = server
    env = user_env(url, ALICE, MLFLOW_EXPERIMENT_NAME="four-at-once")  # a new experiment: all four race to make it
    workdirs = [stage_workdir(tmp_path / f"w{i}", mnist_dir, {"seed001_mnist": {"epochs": 2, "train_limit": 500,
                                                                                "seed": i}})
                for i in range(4)]
    procs = [subprocess.Popen(["python", str(REPO / "stages/train.py"), "seed001_mnist"], cwd=w, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in workdirs]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in results]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    with credentials(*ALICE):
        runs = client.search_runs([client.get_experiment_by_name("four-at-once").experiment_id])
        assert sorted(r.info.run_name for r in runs) == [f"seed001_mnist seed={i}" for i in range(4)]
        for r in runs:
            assert r.info.status == "FINISHED"
            for key in ("test_acc", "train_loss", "lr"):
                assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == [0, 1], key


def test_postgresql_away_mid_training_loses_nothing(server, postgres, tmp_path, mnist_dir):
    """PostgreSQL stopped after the first epoch and started two epochs later: the server
    answers errors meanwhile, the trainer's retry queue holds the epochs, the run ends
    complete."""
    url, _ = server
    workdir = stage_workdir(tmp_path, mnist_dir, {"seed001_mnist": {"epochs": 5, "train_limit": 2000}})
    env = user_env(url, ALICE, MLFLOW_EXPERIMENT_NAME="outage")
    train = subprocess.Popen(["python", str(REPO / "stages/train.py"), "seed001_mnist"], cwd=workdir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    curves = workdir / "metrics/curves/seed001_mnist.csv"

    try:
        wait_for_epochs(train, curves, 1)
        postgres.stop()
        try:
            wait_for_epochs(train, curves, 3)  # two epochs while the database is away
        finally:
            postgres.start()
        out, err = train.communicate(timeout=600)
    finally:
        train.kill()
    assert train.returncode == 0, err
    assert "could not log" in err and "will retry" in err  # the outage was seen, and outlasted

    from mlflow.tracking import MlflowClient

    client = MlflowClient(url)
    with credentials(*ALICE):
        (r,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
        assert r.info.status == "FINISHED" and "model_uri" in r.data.tags
        for key in ("test_acc", "train_loss"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == [0, 1, 2, 3, 4], key


def test_the_kept_runs_move_into_the_server_with_histories_artifacts_and_models(server, tmp_path):
    """`cnnbench runs push` copies metrics/mlruns/ into the server; the leaderboard's ids
    find the copies; a second push copies nothing again."""
    url, _ = server
    env = user_env(url, ALICE, MLFLOW_EXPERIMENT_NAME="kept")
    board = json.loads((REPO / "metrics/train/sep_cifar_94k.json").read_text())["mlflow_run_id"]
    mnist = json.loads((REPO / "metrics/train/mnist_5k.json").read_text())["mlflow_run_id"]
    push = ["cnnbench", "runs", "push", board[:8], mnist]  # two of them: every run takes minutes here
    out = run(push, REPO, env, timeout=900).stdout
    pairs = dict(line.split()[:3:2] for line in out.splitlines() if line.startswith("  "))
    assert set(pairs) == {board, mnist} and len(set(pairs.values())) == 2
    assert run(push, REPO, env, timeout=900).stdout == out  # nothing copied twice

    import mlflow
    from mlflow.tracking import MlflowClient

    from cnnbench.store import full_run_id, restore

    restore(f"sqlite:///{tmp_path}/kept.db")
    kept = MlflowClient(f"sqlite:///{tmp_path}/kept.db")
    client = MlflowClient(url)
    with credentials(*ALICE):
        mlflow.set_tracking_uri(url)
        assert full_run_id(board) == full_run_id(board[:8]) == pairs[board]  # the leaderboard's id finds the copy
        a, b = kept.get_run(board), client.get_run(pairs[board])
        assert (b.data.params, b.info.run_name, b.info.status) == (a.data.params, a.info.run_name, a.info.status)
        for key in ("test_acc", "lr", "final_test_acc"):
            assert ([(m.step, m.value, m.timestamp) for m in client.get_metric_history(b.info.run_id, key)]
                    == [(m.step, m.value, m.timestamp) for m in kept.get_metric_history(board, key)]), key
        assert ({f.path for f in client.list_artifacts(b.info.run_id, "evaluation")}
                == {f.path for f in kept.list_artifacts(board, "evaluation")})
        model = mlflow.pytorch.load_model(b.data.tags["model_uri"])
        (version,) = client.search_model_versions("name='sep_cifar_94k'")
        assert version.run_id == b.info.run_id
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/kept.db")
    original = mlflow.pytorch.load_model(a.data.tags["model_uri"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
