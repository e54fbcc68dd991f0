"""Two experiments trained at the same time (`dvc exp run --queue` twice, then
`dvc queue start -j 2`) both land, complete, in the default SQLite MLflow store, each
trained with the code it was queued with."""

import json
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import make_project, run

pytestmark = pytest.mark.slow  # make test-fast skips it

EPOCHS = 3
NAMES = ["seed-one", "seed-two"]
# both are queued with this edit to the model in the workspace, then the edit is undone
FINAL_BN = "nn.Conv2d(16, num_classes, 4), nn.BatchNorm2d(num_classes),"


def queue_status(root, env) -> str:
    return run(["dvc", "queue", "status"], root, env).stdout


def start_workers(root, env) -> None:
    # Not through `run`: the workers DVC forks inherit this command's stdout and
    # stderr, so capturing them would wait for the workers to exit, not the command.
    with open(root / "queue-start.log", "ab") as log:
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=root, env=env,
                       stdout=log, stderr=subprocess.STDOUT, timeout=120, check=True)


def wait_for_queue(root, env, seconds: int) -> str:
    """The queue's status once nothing is queued or running. DVC's workers can exit
    with tasks still queued (treeverse/dvc#10562, where a second `dvc queue start`
    picks them up): the test gives them that after 20 s of such a stall."""
    deadline, stalled_since, restarted = time.time() + seconds, None, False
    while "Queued" in (status := queue_status(root, env)) or "Running" in status:
        assert time.time() < deadline, diagnosis(root, env, status)
        stalled = "Running" not in status and "Worker status: 0 active, 0 idle" in status
        stalled_since = (stalled_since or time.time()) if stalled else None
        if stalled_since and time.time() - stalled_since > 20 and not restarted:
            start_workers(root, env)
            restarted = True
        time.sleep(2)
    return status


def exp_ref(root, env, name: str) -> str:
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], root, env).stdout.split()
    return next(ref for ref in refs if ref.endswith(f"/{name}"))


def diagnosis(root, env, status: str) -> str:
    logs = [run(["dvc", "queue", "logs", name], root, env, check=False, timeout=60)
            for name in NAMES]
    return "\n".join([status, (root / "queue-start.log").read_text(),
                      *(f"--- {name}\n{p.stdout[-3000:]}{p.stderr[-2000:]}" for name, p in zip(NAMES, logs))])


def test_parallel_queued_experiments_share_the_sqlite_store(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    cut = {"epochs": EPOCHS, "train_limit": 1500}
    env, git = make_project(root, datasets_dir, {"seed001_mnist": cut})
    run(["dvc", "repro", "download@mnist"], root, env)
    git("add", "-A")
    git("commit", "-qm", "data")
    seeds_py = root / "src" / "cnnbench" / "models" / "seed001_mnist.py"
    original = seeds_py.read_text()
    assert FINAL_BN in original, "seed001_mnist changed: pick another edit for this test"
    # without seed001_mnist's last BatchNorm: 20 parameters fewer
    seeds_py.write_text(original.replace(FINAL_BN, "nn.Conv2d(16, num_classes, 4),"))
    for seed, name in zip((1, 2), NAMES):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"++models.seed001_mnist.seed={seed}"], root, env)
    seeds_py.write_text(original)
    start_workers(root, env)
    try:
        status = wait_for_queue(root, env, seconds=480)
    finally:  # no worker outlives the test, whatever happened
        run(["dvc", "queue", "stop", "--kill"], root, env, check=False, timeout=60)
    assert status.count("Success") == 2, diagnosis(root, env, status)

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    by_exp = {r.data.tags.get("dvc_exp_name"): r for r in runs}
    assert sorted(n for n in by_exp if n) == NAMES, [r.data.tags for r in runs]
    for name, seed in zip(NAMES, ("1", "2")):
        r = by_exp[name]
        assert r.info.status == "FINISHED" and r.data.params["seed"] == seed
        for key in ("test_acc", "train_loss", "seconds"):
            history = client.get_metric_history(r.info.run_id, key)
            assert [m.step for m in history] == list(range(EPOCHS)), (name, key)
        assert "final_test_acc" in r.data.metrics  # evaluate logged into the same run
    # the two runs trained different models: the seed reached them both
    assert by_exp["seed-one"].data.metrics["final_test_acc"] != by_exp["seed-two"].data.metrics["final_test_acc"]
    # and each ran the code it was queued with (in its copy under .dvc/tmp/exps), not the
    # workspace's, which has the BatchNorm back (13,582 parameters)
    evals = {name: git("show", f"{exp_ref(root, env, name)}:metrics/eval/seed001_mnist.json").stdout
             for name in NAMES}
    params = {name: json.loads(text)["params"] for name, text in evals.items()}
    assert params == {"seed-one": 13562, "seed-two": 13562}
