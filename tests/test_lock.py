"""Main reproduces: every code and params dependency that dvc.lock records is the one in
the tree, so the committed metrics are what this code and these params produce.

`dvc status` on the repository itself; data and models are DVC outputs a fresh clone
lacks (or has rebuilt), so only their absence may show, never a changed source file,
param or command.
"""

from __future__ import annotations

import json

from conftest import REPO, run, venv_env

OUTPUT_FOLDERS = ("data/", "models/")  # DVC outputs: missing in a fresh clone, and that is fine


def drift(status: dict) -> list[str]:
    """'<stage>: <file or param> <how>' for each recorded code or params dependency
    that differs from the tree."""
    found = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed"
                found.append(f"{stage}: {change}")
                continue
            for path, how in change.get("changed deps", {}).items():
                if isinstance(how, dict):  # params: {key: modified|new|deleted}
                    found += [f"{stage}: {path} {key} {what}" for key, what in how.items()]
                elif not path.startswith(OUTPUT_FOLDERS):
                    found.append(f"{stage}: {path} {how}")
    return sorted(found)


def test_dvc_lock_records_the_code_and_params_in_the_tree():
    proc = run(["dvc", "status", "--json"], REPO, venv_env())
    stale = drift(json.loads(proc.stdout or "{}"))
    assert not stale, (
        "dvc.lock recorded other code or params than the tree has, so the committed metrics are "
        "not what main produces. Retrain those stages, or show with `python benchmarks/reproduces.py "
        "<model>` that the change cannot move results and re-record them:\n  " + "\n  ".join(stale))


def test_drift_names_the_stage_and_the_file():
    status = {"train@m": [{"changed deps": {"src/cnnbench/train.py": "modified", "data/mnist": "deleted",
                                            "params.yaml": {"models.m.epochs": "modified"}}},
                          {"changed outs": {"models/m.pt": "not in cache"}}],
              "report": ["changed command"]}
    assert drift(status) == ["report: changed command", "train@m: params.yaml models.m.epochs modified",
                             "train@m: src/cnnbench/train.py modified"]
