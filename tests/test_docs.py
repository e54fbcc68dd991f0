"""What the README and Makefile tell a user to run is safe to run."""

import re

from conftest import REPO


def test_every_mlflow_ui_or_server_command_binds_to_localhost():
    # a bare `mlflow ui` listens on 127.0.0.1 today, but `--host 0.0.0.0` copied from a
    # tutorial would publish every run and artifact to the network: pin it where we document it
    commands = [m.group(0) for path in ("README.md", "Makefile")
                for m in re.finditer(r"mlflow (?:ui|server) --[^\n`]*", (REPO / path).read_text())]
    assert len(commands) >= 2  # README and the Makefile's mlflow-ui target
    for command in commands:
        assert "--host 127.0.0.1" in command, command
