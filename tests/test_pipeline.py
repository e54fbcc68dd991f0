"""A real `dvc repro` in a temporary git repository holding a copy of the project:
two MNIST models cut to one epoch on a few thousand real images, real MNIST through
the mirror, a real SQLite MLflow store. Then a branch with one changed param."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from cnnbench import tracking
from conftest import make_project, run

pytestmark = pytest.mark.slow  # make test-fast skips it

TRAIN_ROWS = 3000


@pytest.fixture(scope="module")
def project(tmp_path_factory, datasets_dir):
    root = tmp_path_factory.mktemp("project")
    # Keras's BN momentum (0.01 in PyTorch's terms) leaves the running statistics near
    # their initial values after 47 steps, so this plumbing test trains with PyTorch's
    cut = {"epochs": 1, "train_limit": TRAIN_ROWS, "keras_defaults": False}
    env, git = make_project(root, datasets_dir, {"seed001_mnist": cut, "seed002_mnist": cut})
    first = run(["dvc", "repro"], root, {**env, "OMP_NUM_THREADS": "1"})
    git("add", "-A")
    git("commit", "-qm", "first run")
    return root, env, git, first


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_repro_writes_every_output(project):
    root, _, _, first = project
    for name in ("seed001_mnist", "seed002_mnist"):
        metrics = json.loads((root / f"metrics/eval/{name}.json").read_text())
        assert metrics["test_images"] == 10000 and metrics["test_acc"] > 0.5
        assert set(metrics["per_class_acc"]) == {str(i) for i in range(10)}
        assert (metrics["params"], metrics["keras_params"]) == {
            "seed001_mnist": (13582, 13794), "seed002_mnist": (13800, 14000)}[name]
        curves = pd.read_csv(root / f"metrics/curves/{name}.csv")
        assert list(curves.columns) == ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"]
        assert len(curves) == 1 and curves["test_acc"].iloc[0] == metrics["test_acc"]
        confusion = pd.read_csv(root / f"metrics/confusion/{name}.csv", dtype=str)
        assert len(confusion) == 10000
        assert (confusion["actual"] == confusion["predicted"]).mean() == pytest.approx(metrics["test_acc"])
        assert (root / f"metrics/misclassified/{name}.png").stat().st_size > 1000
        assert torch.load(root / f"models/{name}.pt", weights_only=True)["config"]["train_limit"] == TRAIN_ROWS
    board = pd.read_csv(root / "metrics/leaderboard.csv")
    assert sorted(board["model"]) == ["seed001_mnist", "seed002_mnist"]
    assert board["budget_params"].str.startswith("PASS").all()
    assert board["budget_acc"].str.startswith("FAIL").all()  # one short epoch is not 99.4%
    assert (root / "metrics/leaderboard.png").stat().st_size > 1000
    assert "| seed001_mnist" in (root / "metrics/leaderboard.md").read_text()


def test_mlflow_holds_both_runs_with_history_and_a_loadable_model(project):
    import mlflow.pytorch

    root = project[0]
    client = mlflow_client(root)
    mlflow.set_tracking_uri(client.tracking_uri)  # models:/ URIs resolve through it
    exp = client.get_experiment_by_name("cnnbench")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"seed001_mnist seed=0", "seed002_mnist seed=0"}  # the model, the random seed
    runs = {r.data.tags["model"]: r for r in runs.values()}
    for name, r in runs.items():
        assert r.info.status == "FINISHED"
        assert r.data.params["optimizer.lr"] == "0.003" and r.data.params["train_limit"] == str(TRAIN_ROWS)
        assert r.data.tags["dataset"] == "mnist" and r.data.tags["device"] == "cpu"
        assert len(r.data.tags["git_commit"]) == 40 and r.data.tags["git_dirty"] in ("True", "False")
        assert r.data.tags["torch_version"] == torch.__version__
        assert r.data.tags["cuda_version"] == str(torch.version.cuda)
        assert r.data.tags["torch_threads"] == "1"  # the stage ran with OMP_NUM_THREADS=1
        assert r.data.tags["cpu"] == tracking.cpu_name() and r.data.tags["cpu"].endswith(")")
        assert r.data.params["seed"] == "0"
        history = client.get_metric_history(r.info.run_id, "test_acc")
        assert [m.step for m in history] == [0]
        metrics = json.loads((root / f"metrics/eval/{name}.json").read_text())
        assert r.data.metrics["final_test_acc"] == pytest.approx(metrics["test_acc"])
        ckpt = torch.load(root / f"models/{name}.pt", weights_only=True)
        assert ckpt["mlflow_run_id"] == r.info.run_id
        # the leaderboard names the run through metrics/train (timings' file, not the results')
        train_json = json.loads((root / f"metrics/train/{name}.json").read_text())
        assert train_json["mlflow_run_id"] == r.info.run_id and train_json["torch_threads"] == 1
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"summary.md", "curves", "evaluation"} <= artifacts
        # the logged model predicts exactly what the checkpoint predicts
        from cnnbench.checkpoints import load_checkpoint

        model, _ = load_checkpoint(root / f"models/{name}.pt")
        logged = mlflow.pytorch.load_model(r.data.tags["model_uri"])  # a pt2 export, in eval mode
        x = torch.randn(16, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(logged(x), model(x))
    # artifacts sit beside the store, not in whatever directory a stage ran in
    assert (root / "mlartifacts").is_dir()


def test_a_fresh_clone_gets_back_the_runs_kept_in_git(project, tmp_path):
    """`cnnbench runs export`, commit, clone: the clone has no mlflow.db, and its first
    contact with the store brings back both runs, under the ids metrics/train/ names."""
    import shutil

    import mlflow.pytorch

    root, env, _, _ = project
    work = tmp_path / "work"  # a copy, so that the module's project stays as it was
    shutil.copytree(root, work, symlinks=True)
    ids = {name: json.loads((work / f"metrics/train/{name}.json").read_text())["mlflow_run_id"]
           for name in ("seed001_mnist", "seed002_mnist")}
    assert "2 run(s) kept in metrics/mlruns/" in run(["cnnbench", "runs", "export"], work, env).stdout
    run(["dvc", "repro", "report"], work, env)  # the leaderboard says which runs are kept
    assert (pd.read_csv(work / "metrics/leaderboard.csv")["mlflow_run_kept"] == "yes").all()
    run(["git", "add", "-A"], work, env)
    run(["git", "commit", "-qm", "keep the runs"], work, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(work), str(clone)], tmp_path, env)
    assert not (clone / "mlflow.db").exists()
    seeds = run(["cnnbench", "seeds", "seed001_mnist"], clone, env)
    assert ids["seed001_mnist"][:8] in seeds.stdout and "starts with the 2 run(s)" in seeds.stderr
    client = mlflow_client(clone)
    mlflow.set_tracking_uri(client.tracking_uri)
    for name, run_id in ids.items():
        r = client.get_run(run_id)
        curves = pd.read_csv(clone / f"metrics/curves/{name}.csv")
        assert [m.value for m in client.get_metric_history(run_id, "test_acc")] == curves["test_acc"].tolist()
        metrics = json.loads((clone / f"metrics/eval/{name}.json").read_text())
        assert r.data.metrics["final_test_acc"] == pytest.approx(metrics["test_acc"])
        # the model comes back from git alone (the clone has no models/): same predictions
        from cnnbench.checkpoints import load_checkpoint

        model, _ = load_checkpoint(work / f"models/{name}.pt")
        x = torch.randn(16, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(mlflow.pytorch.load_model(r.data.tags["model_uri"])(x), model(x))
    again = run(["cnnbench", "runs", "restore"], clone, env, check=False)
    assert again.returncode == 2 and "exists, and runs are restored only into a new store" in again.stderr


def test_a_new_or_edited_architecture_leaves_the_other_models_up_to_date(project, tmp_path):
    """train@<model> and evaluate@<model> depend on their own architecture's file and the
    shared ones, not on the folder: adding an architecture reruns nothing, editing one
    reruns its model only."""
    import shutil

    root, env, _, _ = project
    work = tmp_path / "work"  # a copy, so that the module's project stays as it was
    shutil.copytree(root, work, symlinks=True)
    models = work / "src" / "cnnbench" / "models"

    def stale() -> set[str]:
        return set(json.loads(run(["dvc", "status", "--json"], work, env).stdout))

    assert stale() == set()
    (models / "mnist_linear.py").write_text(
        "from torch import nn\n\nfrom cnnbench.models import register\n\n\n"
        "@register('mnist_linear', dataset='mnist')\n"
        "def mnist_linear(num_classes: int = 10) -> nn.Module:\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    assert stale() == set()
    seed002 = models / "seed002_mnist.py"
    seed002.write_text(seed002.read_text() + "# an edit\n")
    assert stale() == {"train@seed002_mnist", "evaluate@seed002_mnist"}  # both run its code
    (models / "layers.py").write_text((models / "layers.py").read_text() + "# an edit\n")
    assert stale() == {f"{stage}@{model}" for stage in ("train", "evaluate")
                       for model in ("seed001_mnist", "seed002_mnist")}


def test_branch_with_one_changed_param_diffs_exactly_that_model(project):
    root, env, git, _ = project
    git("checkout", "-q", "-b", "other-seed")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"]["seed002_mnist"]["seed"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], root, env).stdout
    assert "train@seed002_mnist" in out and "Running stage 'train@seed001_mnist'" not in out
    git("add", "-A")
    git("commit", "-qm", "seed 7")
    diff = json.loads(run(["dvc", "metrics", "diff", "main", "--json"], root, env).stdout)
    changed = {path for path, values in diff.items() if values}
    assert changed == {"metrics/scores/seed002_mnist.json"}, changed
    # the figures people compare, and not versions, run ids or per-class accuracy
    assert set(diff["metrics/scores/seed002_mnist.json"]) <= {
        "test_acc_pct", "params", "macs", "epochs", "train_seconds"}
    shown = run(["dvc", "metrics", "show"], root, env).stdout
    header = shown.splitlines()[0].split()
    assert header == ["Path", "epochs", "macs", "params", "test_acc_pct", "train_seconds"], shown
    assert "metrics/scores/seed001_mnist.json" in shown and max(map(len, shown.splitlines())) < 120
    again = run(["dvc", "repro"], root, env).stdout
    assert "Running stage" not in again and "up to date" in again
    plots = run(["dvc", "plots", "diff", "main", "--json"], root, env)
    assert "metrics/curves/seed002_mnist.csv" in plots.stdout


def test_dvc_exp_run_temp_lands_in_the_main_store(project):
    root, env, git, _ = project
    client = mlflow_client(root)
    before = len(client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id]))
    # the quick-experiment form for a stated key, `++` for one inherited from defaults
    run(["dvc", "exp", "run", "--temp", "-S", "models.seed001_mnist.train_limit=1000",
         "-S", "++models.seed001_mnist.seed=3", "-n", "temp-exp"], root, env)
    client = mlflow_client(root)
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id])
    assert len(runs) == before + 1
    new = [r for r in runs if r.data.tags.get("dvc_exp_name") == "temp-exp"]
    assert len(new) == 1 and new[0].info.run_name == "seed001_mnist seed=3 exp=temp-exp"
    assert "final_test_acc" in new[0].data.metrics  # evaluate found the run from the temp copy
    assert new[0].data.tags.get("dvc_baseline_rev")
    assert new[0].data.params["train_limit"] == "1000" and new[0].data.params["seed"] == "3"
    assert not list((root / ".dvc").rglob("mlflow.db"))


def test_repro_force_twice_gives_byte_identical_outputs(project):
    """CPU runs are deterministic at the DVC level: forcing the stages again changes no
    byte of the results (the train summary differs only in its timings and MLflow run id)."""
    root, env, _, _ = project
    stages = ["train@seed001_mnist", "evaluate@seed001_mnist"]
    files = ["metrics/curves/seed001_mnist.csv", "metrics/eval/seed001_mnist.json",
             "metrics/confusion/seed001_mnist.csv", "metrics/misclassified/seed001_mnist.png"]
    per_run = ("seconds", "train_images_per_s", "mlflow_run_id")  # a new run each time

    def snapshot():
        summary = json.loads((root / "metrics/train/seed001_mnist.json").read_text())
        weights = torch.load(root / "models/seed001_mnist.pt", weights_only=True)["state_dict"]
        return ({f: (root / f).read_bytes() for f in files},
                {k: v for k, v in summary.items() if k not in per_run}, weights)

    outputs = []
    for _ in range(2):
        run(["dvc", "repro", "--force", "--single-item", *stages], root, env)
        outputs.append(snapshot())
    (files_a, summary_a, weights_a), (files_b, summary_b, weights_b) = outputs
    assert files_a == files_b and summary_a == summary_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_flip_tta_reruns_only_the_evaluation_and_keeps_the_plain_accuracy(project):
    root, env, _, _ = project
    plain = json.loads((root / "metrics/eval/seed001_mnist.json").read_text())
    assert (plain["test_time_aug"], plain["test_acc_single_pass"]) == ("none", plain["test_acc"])
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluation"] = {"seed001_mnist": {"flip": True}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], root, env).stdout
    assert "Running stage 'evaluate@seed001_mnist'" in out and "Running stage 'train@" not in out
    assert "with flip TTA" in out
    flipped = json.loads((root / "metrics/eval/seed001_mnist.json").read_text())
    assert flipped["test_time_aug"] == "flip"
    assert (flipped["test_acc_single_pass"], flipped["test_loss"]) == (plain["test_acc"], plain["test_loss"])
    # a mirrored digit is another shape, so averaging with it moves the predictions
    assert flipped["test_acc"] != plain["test_acc"]
    assert flipped["errors"] == round((1 - flipped["test_acc"]) * flipped["test_images"])
    board = pd.read_csv(root / "metrics/leaderboard.csv").set_index("model")
    assert board.loc["seed001_mnist", "test_time_aug"] == f"flip ({100 * plain['test_acc']:.2f}% without)"
    assert pd.isna(board.loc["seed002_mnist", "test_time_aug"])
    assert "test_time_aug flip: each test image" in (root / "metrics/leaderboard.md").read_text()
    client = mlflow_client(root)
    runs = client.search_runs([client.get_experiment_by_name("cnnbench").experiment_id],
                              "tags.test_time_aug = 'flip'")
    assert len(runs) == 1 and runs[0].data.metrics["final_test_acc"] == flipped["test_acc"]


def test_outputs_dvc_deleted_before_a_refusing_stage_come_back_as_the_readme_says(project, tmp_path):
    """`dvc repro` deletes a stage's outputs before it runs the stage; when the stage then
    refuses its input, the README's commands (`dvc checkout`, `git checkout metrics/`)
    bring back every output, and the pipeline is up to date again."""
    import shutil

    root, env, _, _ = project
    work = tmp_path / "work"  # a copy, so that the module's project stays as it was
    shutil.copytree(root, work, symlinks=True)
    run(["git", "add", "-A"], work, env)  # what earlier tests left, committed: git checkout's base
    run(["git", "commit", "-qm", "as the earlier tests left it", "--allow-empty"], work, env)
    assert json.loads(run(["dvc", "status", "--json"], work, env).stdout) == {}
    good = (work / "params.yaml").read_text()
    params = yaml.safe_load(good)
    params["models"]["seed002_mnist"]["optimizer"] = {"lr": float("nan")}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run(["dvc", "repro", "train@seed002_mnist"], work, env, check=False)
    assert failed.returncode != 0
    assert "models.seed002_mnist.optimizer.lr: input should be a finite number (got nan)" in failed.stderr
    assert "Traceback" not in failed.stderr
    outputs = ["models/seed002_mnist.pt", "metrics/train/seed002_mnist.json", "metrics/curves/seed002_mnist.csv"]
    assert not any((work / path).exists() for path in outputs)  # DVC deleted them first
    (work / "params.yaml").write_text(good)
    run(["dvc", "checkout", "train@seed002_mnist"], work, env)
    run(["git", "checkout", "metrics/"], work, env)
    assert all((work / path).is_file() for path in outputs)
    assert json.loads(run(["dvc", "status", "--json"], work, env).stdout) == {}
