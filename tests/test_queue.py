"""Two experiments trained at the same time (`dvc exp run --queue` twice, then
`dvc queue start -j 2`) both land, complete, in the default SQLite MLflow store."""

import time

from mlflow.tracking import MlflowClient

from conftest import make_project, run

EPOCHS = 3


def queue_status(root, env) -> str:
    return run(["dvc", "queue", "status"], root, env).stdout


def test_parallel_queued_experiments_share_the_sqlite_store(tmp_path, datasets_dir):
    root = tmp_path / "project"
    root.mkdir()
    cut = {"epochs": EPOCHS, "train_limit": 1500}
    env, git = make_project(root, datasets_dir, {"seed001_mnist": cut})
    run(["dvc", "repro", "download@mnist"], root, env)
    git("add", "-A")
    git("commit", "-qm", "data")
    names = ["seed-one", "seed-two"]
    for seed, name in zip((1, 2), names):
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"++models.seed001_mnist.seed={seed}"], root, env)
    run(["dvc", "queue", "start", "-j", "2"], root, env)
    deadline = time.time() + 480
    while "Queued" in (status := queue_status(root, env)) or "Running" in status:
        assert time.time() < deadline, status
        time.sleep(2)
    run(["dvc", "queue", "stop"], root, env, check=False)
    assert status.count("Success") == 2, status

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    by_exp = {r.data.tags.get("dvc_exp_name"): r for r in runs}
    assert sorted(n for n in by_exp if n) == names, [r.data.tags for r in runs]
    for name, seed in zip(names, ("1", "2")):
        r = by_exp[name]
        assert r.info.status == "FINISHED" and r.data.params["seed"] == seed
        for key in ("test_acc", "train_loss", "seconds"):
            history = client.get_metric_history(r.info.run_id, key)
            assert [m.step for m in history] == list(range(EPOCHS)), (name, key)
        assert "final_test_acc" in r.data.metrics  # evaluate logged into the same run
    # the two runs trained different models: the seed reached them both
    assert by_exp["seed-one"].data.metrics["final_test_acc"] != by_exp["seed-two"].data.metrics["final_test_acc"]
