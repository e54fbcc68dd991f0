"""What the README, docs/ and the Makefile tell a user to run is safe to run."""

import re
from pathlib import Path

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


def _anchors(markdown: Path) -> set[str]:
    """The sections a link can point at: GitHub's slug of each heading, and <a id>s."""
    text = markdown.read_text()
    slugs = {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
             for heading in re.findall(r"^#+ (.+)$", text, re.M)}
    return slugs | set(re.findall(r'<a id="([^"]+)"', text))


def test_every_section_the_docs_and_the_code_cite_exists():
    # docstrings and params.yaml comments link their evidence as docs/results.md#<model>
    sources = [REPO / "README.md", REPO / "params.yaml", REPO / "Makefile", *sorted((REPO / "docs").glob("*.md")),
               *sorted((REPO / "src").rglob("*.py")), *sorted((REPO / "stages").glob("*.py"))]
    cited = [(source.name, path, anchor) for source in sources
             for path, anchor in re.findall(r"((?:docs/)?[\w-]+\.md)#([\w-]+)", source.read_text())]
    assert len(cited) >= 5
    missing = [(source, f"{path}#{anchor}") for source, path, anchor in cited
               if anchor not in _anchors(REPO / (path if path.startswith("docs/") else f"docs/{path}"))]
    assert not missing, missing
