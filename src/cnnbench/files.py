"""Reading and writing the project's files: outputs are written whole or not at all, with
the usual permissions, and an input that cannot be read is one message saying how to get
it back."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd

from cnnbench import CnnbenchError


class FileProblem(CnnbenchError):
    """A file the project reads is damaged or a folder it writes cannot be written; the
    message names the file, what is wrong and the fix."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# read once, at import: setting the umask to read it is not safe while other threads
# (MLflow's) create files
_UMASK = _umask()


def write_atomic(path: Path, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); a written output gets what open() gives
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_torch(path: Path, obj) -> None:
    """torch.save, atomically: a checkpoint is either the old one or the new one."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def write_json(path: Path, obj) -> None:
    """Strict JSON: NaN or Infinity (which json.dumps would write, and other JSON readers
    refuse) is a ValueError naming the file, and nothing is written."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"{path}: not written, it would hold a non-finite number ({e})") from None
    write_atomic(path, text + "\n")


def write_csv(path: Path, rows: list[dict] | pd.DataFrame) -> None:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    write_atomic(path, frame.to_csv(index=False, lineterminator="\n"))


def read_json(path: Path, fix: str) -> dict:
    """A JSON object the project wrote; ``fix`` says how to get a good one back."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileProblem(f"{path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FileProblem(f"{path} is damaged (not readable JSON: {e}); {fix}") from None
    if not isinstance(data, dict):
        raise FileProblem(f"{path} is damaged (a JSON {type(data).__name__}, not an object); {fix}")
    return data


def read_torch(path: Path, fix: str, required: tuple[str, ...] = (), map_location=None) -> dict:
    """A dict the project saved with ``torch.save`` (``write_torch``), holding at least the
    ``required`` keys; a file that is not one is a FileProblem saying ``fix``."""
    import torch

    try:
        # torch warns about some damaged files before failing on them (an unknown pickle
        # protocol); the one message below is what the user needs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways inside torch.load
        # only the type: torch's own message advises weights_only=False, unsafe for any file
        raise FileProblem(f"{path} is damaged (torch cannot load it: {type(e).__name__}); {fix}") from None
    missing = sorted(set(required) - set(obj)) if isinstance(obj, dict) else ["a dict of"]
    if missing:
        raise FileProblem(f"{path} is damaged (it lacks {', '.join(missing)}); {fix}")
    return obj


def check_writable(*folders: Path) -> None:
    """That each of ``folders`` can take files, before work whose results go there: a
    folder that cannot is found now, not after an epoch. Nothing is created: a folder
    that does not exist yet is judged by the folder it would be made in."""
    for folder in dict.fromkeys(Path(f) for f in folders):
        existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor))
        if not existing.is_dir():
            raise FileProblem(f"cannot write to {folder}/: {existing} is a file, where a folder is "
                              f"needed; move it away, then rerun")
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as e:
            raise FileProblem(f"cannot write to {folder}/ ({e.strerror} in {existing}/); make it "
                              f"writable (e.g. `chmod u+w {existing}`) or free space there, then rerun") from None
