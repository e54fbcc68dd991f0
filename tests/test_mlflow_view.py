"""What a person finds in the MLflow UI after the train and evaluate stages: runs named
apart, the experiment marked as model training, one headline accuracy per run, per-class
accuracy and the confusion matrix as tables and figures, and each model registered, one
version per run, with the run's figures on its page. Real MNIST, real stages, a real
SQLite store."""

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run, stage_workdir, venv_env

pytestmark = pytest.mark.slow  # make test-fast skips it

NAME = "seed002_mnist"


def stage(name: str, root, **env: str):
    return run(["python", str(REPO / "stages" / f"{name}.py"), NAME], root,
               venv_env(MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}", **env))


@pytest.fixture(scope="module")
def store(tmp_path_factory, mnist_dir):
    """A store holding three trained and evaluated runs of one model: seeds 0 and 1, and
    seed 1 again from a DVC experiment; the client and the workdir."""
    from mlflow.tracking import MlflowClient

    root = stage_workdir(tmp_path_factory.mktemp("view"), mnist_dir, {NAME: {"epochs": 1, "train_limit": 1200}})
    params = (root / "params.yaml").read_text()
    for seed, exp in ((0, ""), (1, ""), (1, "lofty-dace")):
        (root / "params.yaml").write_text(params.replace("seed: 0", f"seed: {seed}"))
        assert f"seed: {seed}" in (root / "params.yaml").read_text()
        env = {"DVC_EXP_NAME": exp} if exp else {}
        stage("train", root, **env)
        stage("evaluate", root, **env)
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}"), root


def runs(client):
    experiment = client.get_experiment_by_name("cnnbench")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_runs_of_one_model_are_named_apart_and_the_experiment_opens_on_them(store):
    client, _ = store
    names = [r.info.run_name for r in runs(client)]
    assert names == [f"{NAME} seed=0", f"{NAME} seed=1", f"{NAME} seed=1 exp=lofty-dace"]
    # MLflow 3's UI shows an experiment of this kind as model training, not GenAI traces
    assert client.get_experiment_by_name("cnnbench").tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_headline_is_the_leaderboards_figure_and_per_class_accuracy_is_a_table(store):
    client, root = store
    last = runs(client)[-1]
    evaluation = json.loads((root / f"metrics/eval/{NAME}.json").read_text())
    metrics = last.data.metrics
    assert metrics["final_test_acc"] == evaluation["test_acc"]
    assert metrics["test_acc_single_pass"] == evaluation["test_acc_single_pass"]
    assert metrics["macs"] == evaluation["macs"] > 0 and metrics["inference_images_per_s"] > 0
    assert not [k for k in metrics if k.startswith("test_acc.")]  # no longer ten one-value metrics
    artifacts = {a.path for a in client.list_artifacts(last.info.run_id, "evaluation")}
    assert {"evaluation/per_class_accuracy.json", "evaluation/per_class_accuracy.png",
            "evaluation/confusion_matrix.json", "evaluation/confusion_matrix.png"} <= artifacts
    logged = json.loads(Path(client.download_artifacts(last.info.run_id, f"evaluation/{NAME}.json")).read_text())
    assert logged == evaluation  # the evaluation's own file, not another of the same name
    table = load_table(client, last.info.run_id, "evaluation/per_class_accuracy.json")
    assert dict(zip(table["class"], table["accuracy"])) == pytest.approx(evaluation["per_class_acc"])


def test_the_confusion_matrix_is_a_matrix_of_the_evaluations_counts(store):
    client, root = store
    last = runs(client)[-1]
    evaluation = json.loads((root / f"metrics/eval/{NAME}.json").read_text())
    matrix = load_table(client, last.info.run_id, "evaluation/confusion_matrix.json").set_index("actual")
    classes = [str(c) for c in range(10)]
    assert list(matrix.index.astype(str)) == classes and list(matrix.columns) == classes
    counts = matrix.to_numpy()
    assert counts.sum() == evaluation["test_images"]
    assert counts.sum() - counts.trace() == evaluation["errors"]
    rows = pd.read_csv(root / f"metrics/confusion/{NAME}.csv")  # DVC's one row per image
    assert counts[0, 0] == ((rows["actual"] == 0) & (rows["predicted"] == 0)).sum()


def test_each_run_is_a_version_of_the_registered_model_whose_page_agrees_with_the_run(store):
    client, _ = store
    versions = sorted(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))
    assert [v.run_id for v in versions] == [r.info.run_id for r in runs(client)]
    for r in runs(client):
        model_id = r.data.tags["model_uri"].removeprefix("models:/")
        model = client.get_logged_model(model_id)
        assert model.name == NAME
        on_page = {m.key: m.value for m in model.metrics}
        for key in ("final_test_acc", "final_test_loss", "test_acc_single_pass"):
            assert on_page[key] == r.data.metrics[key], key


def load_table(client, run_id: str, path: str) -> pd.DataFrame:
    """A table logged with mlflow.log_table, as a DataFrame."""
    local = client.download_artifacts(run_id, path)
    with open(local) as f:
        doc = json.load(f)
    return pd.read_json(io.StringIO(json.dumps(doc)), orient="split", dtype=False)  # class names stay text
