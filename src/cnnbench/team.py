"""A tracking server for a team: MLflow on PostgreSQL, with MLflow's own accounts, storing
and serving the artifacts itself (clients need no storage credentials).

    MLFLOW_AUTH_ADMIN_PASSWORD=... PGPASSWORD=... cnnbench team-server \\
        --db postgresql://mlflow@127.0.0.1:5432/mlflow --artifacts /srv/mlflow-artifacts

Secrets travel in the environment, never on the command line (`ps` shows that to every
user of the machine): the admin password in MLFLOW_AUTH_ADMIN_PASSWORD, the database's in
PGPASSWORD or ~/.pgpass (libpq's own). New accounts get no permission on others'
experiments (``default_permission = NO_PERMISSIONS``); the account that creates an
experiment manages it and grants others access (docs/guide.md, "A team").
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import NoReturn

from cnnbench import CnnbenchError

# Passwords MLflow once shipped or that its docs show: a server started with one of
# them is open to anyone who has read those docs.
KNOWN_PASSWORDS = {"password", "password1234", "admin"}
MIN_PASSWORD_LENGTH = 12


class TeamServerError(CnnbenchError):
    pass


def admin_password(env: dict[str, str]) -> str:
    password = env.get("MLFLOW_AUTH_ADMIN_PASSWORD", "")
    if not password:
        raise TeamServerError("set MLFLOW_AUTH_ADMIN_PASSWORD to the admin account's password (at least "
                              f"{MIN_PASSWORD_LENGTH} characters) in the server's environment")
    if password.lower() in KNOWN_PASSWORDS or len(password) < MIN_PASSWORD_LENGTH:
        raise TeamServerError(f"MLFLOW_AUTH_ADMIN_PASSWORD is too easy to guess: use at least "
                              f"{MIN_PASSWORD_LENGTH} characters, not a documented default")
    return password


def check_database_uri(db: str) -> str:
    parts = urllib.parse.urlsplit(db)
    if not parts.scheme.startswith("postgresql"):
        raise TeamServerError(f"--db {db!r} is not a PostgreSQL URI; write "
                              f"postgresql://user@host:5432/database")
    if parts.password is not None:
        raise TeamServerError("--db carries a password, which every user of this machine would see "
                              "in the process list; put it in PGPASSWORD or ~/.pgpass and leave it "
                              "out of the URI")
    return db


def check_database_reachable(db: str) -> None:
    """Connect once, so that a wrong host, database or password is one message here, not
    a traceback from every server worker."""
    try:
        import psycopg
    except ImportError:
        raise TeamServerError("the PostgreSQL driver is not installed: pip install 'psycopg[binary]' "
                              "(`make install` does)") from None
    parts = urllib.parse.urlsplit(db)
    try:  # libpq takes the URI without SQLAlchemy's +driver suffix
        psycopg.connect(urllib.parse.urlunsplit(parts._replace(scheme="postgresql")), connect_timeout=10).close()
    except psycopg.OperationalError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "no reason given"
        raise TeamServerError(f"PostgreSQL at {db} refuses the connection ({reason}); check the URI, "
                              f"that the server runs, and PGPASSWORD or ~/.pgpass") from None


def auth_config(db: str) -> str:
    """MLflow's basic-auth settings: accounts in the same database (their own tables and
    migration history), no access to an experiment without a grant. A checked password
    is trusted for a minute: MLflow otherwise hashes it (PBKDF2) on every request, which
    bounds what a server takes from many trainers (benchmarks/logging_throughput.py); a
    changed password reaches the other workers within that minute."""
    return ("[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = {db}\n"
            "admin_username = admin\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 60\n")


def server_command(db: str, artifacts: Path, host: str, port: int, workers: int) -> list[str]:
    return ["mlflow", "server", "--app-name", "basic-auth",
            "--backend-store-uri", db, "--artifacts-destination", str(artifacts.resolve()),
            "--host", host, "--port", str(port), "--workers", str(workers)]


def serve(db: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 4) -> NoReturn:
    """Check everything, then become the server (exec): a signal to this process, Ctrl-C
    or `kill`, reaches MLflow itself."""
    env = dict(os.environ)
    admin_password(env)
    check_database_uri(db)
    check_database_reachable(db)
    artifacts.mkdir(parents=True, exist_ok=True)
    # it outlives this process, which the server replaces; it holds no secret
    fd, config = tempfile.mkstemp(prefix="cnnbench-team-auth-", suffix=".ini")
    with os.fdopen(fd, "w") as f:
        f.write(auth_config(db))
    env["MLFLOW_AUTH_CONFIG_PATH"] = config
    # the key of the UI's CSRF tokens, one for all workers; a new one at each start only
    # asks browsers to load the page again
    env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    where = "every network interface" if host in ("0.0.0.0", "::") else host
    print(f"MLflow team server on http://{host}:{port} ({where}), runs in {db}, artifacts in "
          f"{artifacts}; clients set MLFLOW_TRACKING_URI=http://<this machine>:{port}, "
          f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD", file=sys.stderr, flush=True)
    command = server_command(db, artifacts, host, port, workers)
    os.execvpe(command[0], command, env)


# --- a private PostgreSQL cluster: the tests' and the benchmark's, or a one-machine trial ---

def postgres_program(name: str) -> str:
    """A PostgreSQL server program; Debian keeps them out of PATH."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if not found:
        raise TeamServerError(f"{name} not found: install PostgreSQL (Debian, as root: apt-get install postgresql)")
    return str(found)


class PrivatePostgres:
    """A cluster of its own in a new folder under /tmp, on 127.0.0.1 and a free port, with
    a database ``mlflow`` owned by the user ``mlflow`` (``password``). PostgreSQL refuses
    to run as root, so under root it runs as the ``postgres`` user Debian's package makes.
    ``stop``/``start`` make an outage; ``remove`` deletes it all."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="cnnbench-pg-"))  # under /tmp: the postgres user reaches it
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        pwfile = self.dir / "pw"
        pwfile.write_text(password)
        if self.as_user:
            shutil.chown(self.dir, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "mlflow", "--auth=scram-sha-256",
                  f"--pwfile={pwfile}", "--no-instructions")
        pwfile.unlink()
        self.start()
        self.uri = f"postgresql://mlflow@127.0.0.1:{self.port}/mlflow"
        self.query("create database mlflow", database="postgres")

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self.as_user, postgres_program(program), *args], check=True, capture_output=True,
                       timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "start", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def query(self, sql: str, database: str = "mlflow") -> str:
        return subprocess.run([postgres_program("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow",
                               "-d", database, "-tAc", sql], env={**os.environ, "PGPASSWORD": self.password},
                              check=True, capture_output=True, text=True).stdout.strip()

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
