"""Re-record dvc.lock for stages whose outputs this workspace lacks (models/*.pt live in
the DVC cache of the machine that trained them), once the evidence says the change cannot
move their results: `benchmarks/reproduces.py` for a train stage,
`benchmarks/evaluation_reproduces.py` for an evaluate stage.

What `dvc commit` does where the outputs exist: each dependency that is here is hashed
anew (code, params, data), and so is each output git tracks (`cache: false`, such as
the files `evaluation_reproduces.py --write` rewrote); a dependency that is not here (a
model) and every cached output keep the hashes dvc.lock has. Nothing runs.

    python benchmarks/record_lock.py train@mnist_7k evaluate@mnist_7k
"""

from __future__ import annotations

import sys

from dvc.repo import Repo


def main(stages: list[str]) -> int:
    repo = Repo(".")
    with repo.lock:
        for name in stages:
            (stage,) = repo.stage.collect(name)
            for dep in stage.deps:
                if dep.exists:
                    dep.save()
                else:
                    print(f"{name}: {dep} is not here; its recorded hash is kept")
            for out in stage.outs:  # files git tracks (metrics/): what the evidence wrote
                if out.exists and not out.use_cache:
                    out.save()
            stage.dvcfile.dump(stage, update_pipeline=False)
            print(f"{name}: re-recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
