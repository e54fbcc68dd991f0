"""What the README, docs/ and the Makefile tell a user to run is safe to run."""

import re

from conftest import REPO


def test_every_mlflow_ui_or_server_command_binds_to_localhost():
    # a bare `mlflow ui` listens on 127.0.0.1 today, but `--host 0.0.0.0` copied from a
    # tutorial would publish every run and artifact to the network: pin it where we document it
    documents = [REPO / "README.md", REPO / "Makefile", *sorted((REPO / "docs").glob("*.md"))]
    commands = [m.group(0) for path in documents
                for m in re.finditer(r"mlflow (?:ui|server) --[^\n`]*", path.read_text())]
    assert len(commands) >= 2  # README and the Makefile's mlflow-ui target
    for command in commands:
        assert "--host 127.0.0.1" in command, command


def test_every_file_the_docs_cite_exists():
    # the results rest on files the docs name (figures, benchmark outputs, code): a renamed
    # or deleted one leaves a claim without its evidence; `dir/name.{csv,md}` is skipped
    cited = re.compile(r"(?<![\w/.])(?:benchmarks|docs|metrics|src|stages|tests)/[\w./-]*+(?!\{)")
    missing = [(doc.name, path)
               for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
               for path in (match.group(0).rstrip(".") for match in cited.finditer(doc.read_text()))
               if not (REPO / path).exists()]
    assert not missing, missing
