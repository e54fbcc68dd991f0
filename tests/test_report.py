"""The leaderboard from metrics files: verdicts, origins, and the recovered-data note."""

import json

from cnnbench.config import load_params
from cnnbench.report import build_leaderboard, to_markdown
from conftest import REPO


def write_metrics(root, name, acc, images, params, flip_from=None, run_id=None):
    tta = {"test_time_aug": "flip", "test_acc_single_pass": flip_from} if flip_from else {}
    for kind, data in (("eval", {"test_acc": acc, "test_images": images, "params": params,
                                 "keras_params": params, **tta}),
                       ("train", {"epochs": 50, "best_epoch": 49, "seconds": 1.0, "mlflow_run_id": run_id})):
        (root / kind).mkdir(exist_ok=True)
        (root / kind / f"{name}.json").write_text(json.dumps(data))


def test_leaderboard_judges_budgets_and_marks_recovered_data(tmp_path):
    models = load_params(REPO / "params.yaml").models
    write_metrics(tmp_path, "sep_cifar_94k", 0.9012, 9977, 93861, flip_from=0.8975, run_id="c59f5879ab")
    write_metrics(tmp_path, "seed001_sep", 0.8311, 10000, 80629)
    kept = tmp_path / "mlruns" / "1" / "c59f5879ab"  # the run kept in git (runs.py)
    kept.mkdir(parents=True)
    (kept / "meta.yaml").write_text("run_id: c59f5879ab\n")
    frame, missing = build_leaderboard(models, tmp_path)
    rows = frame.set_index("model")
    ours, seed = rows.loc["sep_cifar_94k"], rows.loc["seed001_sep"]
    assert (ours["origin"], seed["origin"]) == ("cnnbench", "seed")
    assert ours["best_epoch"] == 50  # the train JSON's 0-based 49, counted from 1 as the README does
    assert ours["budget_params"] == "PASS (93,861 <= 100,000)"
    assert ours["budget_acc"] == "PASS (90.12% >= 90.00%)"
    assert (ours["test_time_aug"], seed["test_time_aug"]) == ("flip (89.75% without)", "")
    assert seed["budget_acc"] == "PASS (83.11% >= 82.48%)" and seed["diff_vs_reported_pp"] == -0.39
    assert "mnist_7k" in missing and "sep_cifar_94k" not in missing
    assert (ours["mlflow_run_id"], seed["mlflow_run_id"]) == ("c59f5879ab", "")  # "" when tracking was off
    assert (ours["mlflow_run_kept"], seed["mlflow_run_kept"]) == ("yes", "no")
    text = to_markdown(frame, missing)
    assert "cifar10_recovered: accuracy measured on 9,977 of the 10,000" in text
    assert "test_time_aug flip: each test image is also classified mirrored" in text
    assert "Not trained yet:" in text and "mnist_7k" in text
    assert "1 of 2 are kept" in text
