"""The screenshots in docs/figures/: the MLflow UI and `dvc plots show`, taken in headless
Chromium with the network cut (nothing is fetched from the internet).

    python docs/figures/screenshots.py [--store sqlite:///path/to/mlflow.db] [--run RUN_ID]

The store defaults to a new one restored from metrics/mlruns/ (what `make mlflow-ui`
shows); the run shown defaults to the leaderboard's best CIFAR-10 model's.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "figures"
# every host but 127.0.0.1 resolves to nothing: only the MLflow server there and files load
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
MODEL_TRAINING = "workflowType=machine_learning"


def shoot(url: str, png: Path, size: str = "1600,1000") -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *OFFLINE,
                    f"--window-size={size}", "--virtual-time-budget=15000", f"--screenshot={png}", url],
                   check=True, capture_output=True, timeout=180)
    if not png.is_file():
        raise SystemExit(f"Chromium wrote no {png}")
    print(f"{png.relative_to(ROOT)}: {url}")


def serve(store: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        if proc.poll() is not None:
            raise SystemExit(f"mlflow ui exited with {proc.returncode}")
        try:  # the UI's page, not only /health: the server answers that before it serves pages
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.kill()
    raise SystemExit("mlflow ui did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="default: a new store restored from metrics/mlruns/")
    p.add_argument("--run", help="the run whose pages are shown")
    args = p.parse_args()
    board = pd.read_csv(ROOT / "metrics" / "leaderboard.csv")
    run_id = args.run or board[board["dataset"] != "mnist"].iloc[0]["mlflow_run_id"]
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if not store:
            store = f"sqlite:///{tmp}/mlflow.db"
            subprocess.run(["cnnbench", "runs", "restore", "--to", store], check=True, cwd=ROOT)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = serve(store, port)
        try:
            base = f"http://127.0.0.1:{port}/#/experiments/1"
            # MLflow 3.17's GenAI/"Model training" switch overrides the experiment's kind tag
            # when set; this query sets it to model training, as `make mlflow-ui`'s link does
            shoot(f"{base}?{MODEL_TRAINING}", OUT / "mlflow-runs.png")
            shoot(f"{base}/runs/{run_id}?{MODEL_TRAINING}", OUT / "mlflow-run.png", "1600,1400")
            shoot(f"{base}/runs/{run_id}/artifacts/evaluation/confusion_matrix.png?{MODEL_TRAINING}",
                  OUT / "mlflow-confusion.png", "1600,1200")
            # a model with runs of three random seeds: one registered version each
            shoot(f"http://127.0.0.1:{port}/#/models/mnist_7k?{MODEL_TRAINING}", OUT / "mlflow-models.png")
        finally:
            server.terminate()
            server.wait(timeout=30)
        plots = Path(tmp) / "plots"
        subprocess.run(["dvc", "plots", "show", "-o", str(plots)], check=True, cwd=ROOT, capture_output=True)
        shoot((plots / "index.html").as_uri(), OUT / "dvc-plots.png", "1600,2400")
    return 0


if __name__ == "__main__":
    sys.exit(main())
