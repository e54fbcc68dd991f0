"""dvc.yaml stays in step with params.yaml and with the code its stages run."""

import pytest
import yaml

from conftest import REPO

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_every_model_is_in_every_cross_model_plot():
    for plot in DVC["plots"]:
        (title, spec), = plot.items()
        files = set(spec["y"])
        assert files == {f"metrics/curves/{m}.csv" for m in PARAMS["models"]}, title


def test_everything_under_metrics_is_kept_out_of_the_cache():
    for name, stage in DVC["stages"].items():
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                path, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
                if path.startswith("metrics/"):
                    assert opts.get("cache") is False, f"{name}: {path} must have cache: false"
                else:
                    assert path.startswith(("data/", "models/")), path


def test_train_depends_on_every_shared_model_module():
    # A shared module left out of train's deps would let an edit to it change every
    # model without dvc noticing; one listed but not shared would rerun all for nothing.
    from cnnbench.models import SHARED_MODULES

    deps = set(DVC["stages"]["train"]["do"]["deps"])
    listed = {d.rsplit("/", 1)[1][:-3] for d in deps if d.startswith("src/cnnbench/models/")}
    assert listed == {*SHARED_MODULES, "__init__", "${item.arch}"}


# Modules a stage imports that are not its dependencies, and why.
NOT_DEPENDENCIES = {
    # only talks to MLflow: a change to logging must not rerun hours of training
    "src/cnnbench/tracking.py",
}
SRC = REPO / "src"


def _imported_files(path):
    """The files of src/cnnbench that ``path`` imports, at the top or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "cnnbench":
                continue
            base = SRC.joinpath(*name.split("."))
            for candidate in (base / "__init__.py", base.with_suffix(".py")):
                if candidate.is_file():
                    found.add(candidate)
                    break
    return found


def import_closure(script):
    """The script and every file of src/cnnbench it imports, directly or not, with the
    package __init__ files that importing them runs, less NOT_DEPENDENCIES. The
    architecture modules, which the registry imports by name, are not in it."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        rel = path.relative_to(REPO).as_posix()
        if rel in seen or rel in NOT_DEPENDENCIES:
            continue
        seen.add(rel)
        todo += _imported_files(path)
        if SRC in path.parents:
            todo += [p / "__init__.py" for p in path.parents if SRC in p.parents]
    return seen


@pytest.mark.parametrize("stage", ["download", "train", "evaluate", "report"])
def test_each_stage_depends_on_exactly_the_code_it_runs(stage):
    body = DVC["stages"][stage].get("do", DVC["stages"][stage])
    code = {d for d in body["deps"] if d.endswith(".py")}
    expected = import_closure(REPO / "stages" / f"{stage}.py")
    if stage in ("train", "evaluate"):  # and the model's own architecture
        expected.add("src/cnnbench/models/${item.arch}.py")
    assert not expected - code, f"{stage}: dvc.yaml lacks {sorted(expected - code)}"
    assert not code - expected, f"{stage}: dvc.yaml lists {sorted(code - expected)}, which it does not run"


def test_no_module_of_the_package_imports_itself_through_others():
    """An import loop (even one hidden in a function's lazy import) ties two concerns
    together: neither can be read, changed or imported without the other."""
    modules = sorted((SRC / "cnnbench").rglob("*.py"))
    graph = {path: _imported_files(path) - {path} for path in modules}

    def loop_from(start):
        stack = [(start, [start])]
        while stack:
            path, trail = stack.pop()
            for nxt in graph.get(path, ()):
                if nxt == start:
                    return [p.relative_to(SRC).as_posix() for p in [*trail, start]]
                if nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
        return None

    loops = [loop for loop in map(loop_from, modules) if loop]
    assert not loops, loops


def test_the_stages_write_where_dvc_yaml_says():
    """outputs.py names every output once for the code; dvc.yaml spells the same paths for
    DVC: a path changed in one place only would leave DVC tracking files nobody writes."""
    from cnnbench.outputs import data_dir, model_outputs

    def declared(stage, kinds=("outs", "metrics", "plots")):
        body = DVC["stages"][stage].get("do", DVC["stages"][stage])
        return {next(iter(e)) if isinstance(e, dict) else e for kind in kinds for e in body.get(kind, [])}

    out = model_outputs("${key}")
    assert declared("train") == {p.as_posix() for p in out.of_training}
    assert declared("evaluate") == {p.as_posix() for p in (out.eval_metrics, out.inference, out.confusion,
                                                            out.mistakes)}
    # what `dvc metrics show` shows: the report's scores, and nothing of the stages' own files
    assert [next(iter(e)) for e in DVC["stages"]["report"]["metrics"]] == [out.scores.parent.as_posix()]
    assert not any(DVC["stages"][s]["do"].get("metrics") for s in ("download", "train", "evaluate"))
    assert out.checkpoint.as_posix() in declared("evaluate", ("deps",))
    assert declared("download") == {data_dir("${key}").as_posix()}
