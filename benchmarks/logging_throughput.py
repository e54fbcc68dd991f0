"""How many metric values per second a tracking store takes from several loggers at once:
the team server (`cnnbench team-server` on a private PostgreSQL cluster, accounts on) and
the project's SQLite store, each with 4 and 16 concurrent loggers.

Each logger is a process that opens a run and logs like a trainer logs an epoch: one
batch of six values (train/test loss and accuracy, lr, seconds) per step. All start at
one barrier; the figure is every value logged by all of them over the wall time from
that barrier to the last one's end.

    python benchmarks/logging_throughput.py [--steps 100] [--out benchmarks/results/logging-throughput.md]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow

from cnnbench.team import PrivatePostgres

KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")


def logger(uri: str, env: dict, steps: int, barrier, done) -> None:
    os.environ.update(env)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("throughput")
    run_id = client.create_run(experiment.experiment_id).info.run_id
    barrier.wait()
    for step in range(steps):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, step / (i + 1), now, step) for i, k in enumerate(KEYS)])
    client.set_terminated(run_id)
    done.put(time.time())


def measure(uri: str, env: dict, loggers: int, steps: int) -> float:
    """Metric values per second from ``loggers`` processes at once."""
    ctx = mp.get_context("spawn")
    barrier, done = ctx.Barrier(loggers + 1), ctx.Queue()
    procs = [ctx.Process(target=logger, args=(uri, env, steps, barrier, done)) for _ in range(loggers)]
    for p in procs:
        p.start()
    barrier.wait()
    start = time.time()
    ends = [done.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise SystemExit("a logger failed")
    return loggers * steps * len(KEYS) / (max(ends) - start)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def team_server(pg: PrivatePostgres, artifacts: Path, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(["cnnbench", "team-server", "--db", pg.uri, "--artifacts", str(artifacts),
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the team server did not start")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100, help="batches each logger logs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/logging-throughput.md"))
    args = p.parse_args()
    admin = secrets.token_urlsafe(16)
    pg = PrivatePostgres(secrets.token_urlsafe(16))
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": admin, "PGPASSWORD": pg.password}
            server, url = team_server(pg, Path(tmp) / "artifacts", env)
            try:
                client_env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin}
                os.environ.update(client_env)
                mlflow.MlflowClient(url).create_experiment("throughput")
                sqlite = f"sqlite:///{tmp}/mlflow.db"
                mlflow.MlflowClient(sqlite).create_experiment("throughput")
                for loggers in (4, 16):
                    for name, uri, env_ in (("team server (PostgreSQL, accounts)", url, client_env),
                                            ("SQLite file", sqlite, {})):
                        rate = measure(uri, env_, loggers, args.steps)
                        rows.append((name, loggers, rate))
                        print(f"{name}, {loggers} loggers: {rate:,.0f} values/s", flush=True)
            finally:  # the server and its workers: a process group of their own
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    finally:
        pg.remove()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    table = "\n".join(f"| {name} | {n} | {rate:,.0f} |" for name, n, rate in rows)
    args.out.write_text(
        f"# Metric values per second, several loggers at once\n\n"
        f"`python benchmarks/logging_throughput.py --steps {args.steps}` on {os.cpu_count()} cores ({cpu}), "
        f"MLflow {mlflow.__version__}. Each logger logs {args.steps} batches of {len(KEYS)} values, as a "
        f"trainer logs its epochs; the server runs 4 workers on a private PostgreSQL cluster, on the same "
        f"machine as the loggers.\n\n"
        f"| store | loggers | values/s |\n|---|---:|---:|\n{table}\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
