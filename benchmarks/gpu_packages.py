"""The Python packages benchmarks/gpu_check.sh needs on a GPU machine and its image lacks
(benchmarks/gpu_image_packages.txt), as name==version lines from this environment: the
runtime requirements, followed recursively, of dvc, pydantic and MLflow's tracking client
with its SQL store (mlflow-skinny, sqlalchemy, alembic), extras left out."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOTS = ["dvc", "pydantic", "mlflow-skinny", "sqlalchemy", "alembic"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed() -> dict[str, str]:
    image_list = Path(__file__).with_name("gpu_image_packages.txt").read_text()
    on_image = {canonical(n) for line in image_list.splitlines() if not line.startswith("#") for n in line.split()}
    found: dict[str, str] = {}
    todo = list(ROOTS)
    while todo:
        name = canonical(todo.pop())
        if name in found or name in on_image:
            continue
        dist = metadata.distribution(name)
        found[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.12"}):
                todo.append(req.name)
    return found


if __name__ == "__main__":
    for name, version in sorted(needed().items()):
        print(f"{name}=={version}")
