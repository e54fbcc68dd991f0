"""DVC stage report: metrics/leaderboard.{csv,md}, metrics/leaderboard.png (test accuracy
against MACs and against parameters, the Pareto front marked) and metrics/scores/<model>.json
(what `dvc metrics show` compares) across every model in params.yaml."""

import argparse
import sys
from pathlib import Path

from cnnbench import CnnbenchError
from cnnbench.config import load_params
from cnnbench.files import check_writable, write_atomic, write_csv, write_json
from cnnbench.outputs import model_outputs
from cnnbench.report import build_leaderboard, plot_efficiency, scores, to_markdown


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="metrics")
    args = parser.parse_args()
    try:
        models = load_params(args.params).models
        board, missing = build_leaderboard(models, Path(args.metrics))
        check_writable(Path(args.metrics))
    except CnnbenchError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 1
    out = Path(args.metrics)
    write_csv(out / "leaderboard.csv", board)
    text = to_markdown(board, missing)
    write_atomic(out / "leaderboard.md", text)
    plot_efficiency(board, out / "leaderboard.png")
    for name, figures in scores(board).items():
        write_json(model_outputs(name, metrics=out).scores, figures)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
