"""docs/guide.md's steps to add an architecture, followed literally in a copy of the
project: the checks that hold the project together (params.yaml, dvc.yaml against the
code, the model registry) stay green."""

import re
import shutil
import sys

from conftest import REPO, run, shared_datasets, venv_env

MODULE = '''from torch import nn

from cnnbench.models import register


@register("tiny_mnist", dataset="mnist")
def tiny_mnist(num_classes: int = 10) -> nn.Module:
    """A linear classifier: the smallest thing that trains on MNIST."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))
'''


def test_adding_an_architecture_as_the_guide_says_keeps_the_checks_green(tmp_path):
    copy = tmp_path / "project"
    for name in ("src", "stages", "tests"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, copy / name)
    shutil.copytree(REPO / "metrics", copy / "metrics", ignore=shutil.ignore_patterns("mlruns"))
    # 1. the module
    (copy / "src/cnnbench/models/tiny_mnist.py").write_text(MODULE)
    # 2. an entry under models:
    params = (copy / "params.yaml").read_text()
    assert params.count("\nmodels:\n") == 1
    params = params.replace("\nmodels:\n", "\nmodels:\n  tiny_mnist: {arch: tiny_mnist, dataset: mnist, "
                                           "epochs: 15, batch_size: 128}\n")
    (copy / "params.yaml").write_text(params)
    # 3. its curves in each of the four plots, with that plot's column
    dvc, added = re.subn(r"(\n( +)metrics/curves/cifar_base_modern\.csv: (\w+))",
                         r"\1\n\2metrics/curves/tiny_mnist.csv: \3", (copy / "dvc.yaml").read_text())
    assert added == 4
    (copy / "dvc.yaml").write_text(dvc)
    checks = ["tests/test_config.py", "tests/test_dvc_yaml.py", "tests/test_models.py"]
    proc = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *checks], copy,
               venv_env(PYTHONPATH=str(copy / "src"), CNNBENCH_TEST_DATASETS=str(shared_datasets())),
               check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
