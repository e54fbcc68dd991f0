"""The leaderboard from metrics files: verdicts, origins, the recovered-data note, cost
beside accuracy, the Pareto front and the figures `dvc metrics show` compares."""

import json

import pandas as pd
import pytest

from cnnbench.config import load_params
from cnnbench.report import build_leaderboard, pareto_front, scores, to_markdown
from conftest import REPO


def write_metrics(root, name, acc, images, params, flip_from=None, run_id=None, macs=10**6):
    tta = {"test_time_aug": "flip", "test_acc_single_pass": flip_from} if flip_from else {}
    for kind, data in (("eval", {"test_acc": acc, "test_images": images, "params": params,
                                 "keras_params": params, "macs": macs, "checkpoint_bytes": 4 * params + 2048,
                                 **tta}),
                       ("train", {"epochs": 50, "best_epoch": 49, "seconds": 1.0, "mlflow_run_id": run_id}),
                       ("inference", {"device_name": "a CPU (AVX2)", "images_per_s": 5000.0,
                                      "latency_ms_batch1": 0.8})):
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


def test_the_leaderboard_puts_cost_beside_accuracy_and_scores_hold_only_what_is_compared(tmp_path):
    models = load_params(REPO / "params.yaml").models
    write_metrics(tmp_path, "seed001_sep", 0.8311, 10000, 80629, macs=11_000_000)
    frame, _ = build_leaderboard(models, tmp_path)
    row = frame.set_index("model").loc["seed001_sep"]
    assert (row["macs"], row["checkpoint_kb"], row["images_per_s"], row["latency_ms"]) == (
        11_000_000, round((4 * 80629 + 2048) / 1024, 1), 5000.0, 0.8)
    assert row["inference_device"] == "a CPU (AVX2)"
    assert scores(frame) == {"seed001_sep": {"test_acc_pct": 83.11, "params": 80629, "macs": 11_000_000,
                                             "epochs": 50, "train_seconds": 1.0}}
    json.dumps(scores(frame))  # plain Python numbers, which the JSON writer takes


def test_an_evaluation_of_older_code_names_the_stage_to_rerun(tmp_path):
    models = load_params(REPO / "params.yaml").models
    write_metrics(tmp_path, "seed001_sep", 0.8311, 10000, 80629)
    eval_json = tmp_path / "eval" / "seed001_sep.json"
    eval_json.write_text(json.dumps({k: v for k, v in json.loads(eval_json.read_text()).items() if k != "macs"}))
    with pytest.raises(Exception, match=r"lacks 'macs'.*dvc repro evaluate@seed001_sep"):
        build_leaderboard(models, tmp_path)


def test_the_pareto_front_keeps_only_models_nothing_beats_on_both_cost_and_accuracy():
    cost = pd.Series([100, 200, 300, 300, 50])
    acc = pd.Series([90.0, 89.0, 95.0, 94.0, 80.0])
    # 200 costs more than 100 for less; 300 at 94 loses to 300 at 95; 50 is the cheapest
    assert pareto_front(cost, acc).tolist() == [True, False, True, False, True]
    assert pareto_front(pd.Series([1, 1]), pd.Series([5.0, 5.0])).tolist() == [True, True]  # ties: both
