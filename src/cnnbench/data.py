"""Datasets: the registry, download + verify + convert, and loading the converted splits.

A dataset becomes ``data/<name>/{train,test}.pt`` (uint8 images N,C,H,W and int64
labels) plus ``meta.json``. Built-in datasets come through torchvision's classes and
their official files (md5-checked); ``CNNBENCH_DATA_MIRROR`` names a folder or an
http(s) URL holding the same files as ``<mirror>/<dataset>/<file>``. A local ``.npz``
file declared with its sha256 goes through the same verification and output.

Loading a converted split needs torch only: torchvision is imported when converting.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MIRROR_ENV = "CNNBENCH_DATA_MIRROR"
DOWNLOAD_TIMEOUT_S = 60


class DataError(RuntimeError):
    """A dataset could not be fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: the torchvision class that knows its official files, and
    what the trainer needs to know before any data is loaded."""

    torchvision_class: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", (1, 28, 28), _DIGITS, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetSpec(
        "FashionMNIST", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        (0.2860,), (0.3530,)),
    "cifar10": DatasetSpec(
        "CIFAR10", (3, 32, 32),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck"),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


@dataclass(frozen=True)
class OfficialFile:
    name: str
    md5: str
    urls: tuple[str, ...]


def official_files(dataset: str) -> list[OfficialFile]:
    """The files torchvision downloads for ``dataset``, with its md5s and mirror lists."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[dataset].torchvision_class)
    if hasattr(cls, "resources"):  # the MNIST family: several gzip files, several mirrors
        return [OfficialFile(name, md5, tuple(m + name for m in cls.mirrors))
                for name, md5 in cls.resources]
    return [OfficialFile(cls.filename, cls.tgz_md5, (cls.url,))]  # CIFAR: one tarball


# --- hashing ------------------------------------------------------------------------

def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _gzip_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete gzip stream, or None when it is one."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        return f"it is not a complete gzip file ({e.__class__.__name__}: {e}); it looks truncated or corrupt"
    return None


def _verify_md5(path: Path, expected: str, origin: str) -> None:
    actual = file_digest(path, "md5")
    if actual == expected:
        return
    why = _gzip_problem(path) if path.name.endswith(".gz") else None
    raise DataError(
        f"checksum mismatch for {path.name} from {origin}: expected md5 {expected}, got {actual}"
        + (f"; {why}" if why else "")
        + ". Replace the file with the official one (or remove it from the mirror) and rerun.")


# --- fetching -----------------------------------------------------------------------

def _mirror_candidates(dataset: str, filename: str) -> list[str]:
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return []
    if mirror.startswith(("http://", "https://")):
        return [f"{mirror.rstrip('/')}/{dataset}/{filename}"]
    return [str(Path(mirror).expanduser() / dataset / filename)]


def fetch(dataset: str, file: OfficialFile, dest: Path) -> Path:
    """Put ``file`` into ``dest``: the mirror first, then torchvision's official URLs.
    Every copy passes the official md5 before it is used."""
    from torchvision.datasets.utils import download_url

    target = dest / file.name
    tried: list[str] = []
    for source in [*_mirror_candidates(dataset, file.name), *file.urls]:
        if "://" not in source:  # a local mirror folder
            if not Path(source).is_file():
                tried.append(f"{source} (no such file)")
                continue
            shutil.copyfile(source, target)
        else:
            try:
                old_timeout = socket.getdefaulttimeout()
                socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
                try:
                    download_url(source, str(dest), file.name)
                finally:
                    socket.setdefaulttimeout(old_timeout)
            except (urllib.error.URLError, OSError, RuntimeError) as e:
                target.unlink(missing_ok=True)
                tried.append(f"{source} ({getattr(e, 'reason', e)})")
                continue
        _verify_md5(target, file.md5, source)
        return target
    raise DataError(
        f"could not fetch {file.name} for dataset {dataset!r}. Tried:\n  " + "\n  ".join(tried)
        + f"\nWith no internet, set {MIRROR_ENV} to a folder or http(s) URL holding the "
          f"official files as <mirror>/{dataset}/{file.name}.")


# --- conversion -----------------------------------------------------------------------

def _gunzip(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as src, open(path.with_suffix(""), "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError) as e:
        raise DataError(f"{path.name} is not a complete gzip file ({e}); it looks truncated "
                        f"or corrupt. Replace it with the official file and rerun.") from e


def _extract_tar(path: Path, dest: Path) -> None:
    # filter="data" refuses absolute paths, '..' and links that escape ``dest``
    try:
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path.name} could not be extracted ({e}); it looks truncated or "
                        f"corrupt. Replace it with the official file and rerun.") from e


def _torchvision_splits(dataset: str, workdir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[dataset].torchvision_class)
    files = official_files(dataset)
    if hasattr(cls, "resources"):
        raw = workdir / cls.__name__ / "raw"  # where torchvision's class looks for them
    else:
        raw = workdir
    raw.mkdir(parents=True, exist_ok=True)
    for f in files:
        path = fetch(dataset, f, raw)
        if path.suffix == ".gz" and not path.name.endswith(".tar.gz"):
            _gunzip(path)
        else:
            _extract_tar(path, workdir)
    splits = {}
    for split in ("train", "test"):
        ds = cls(str(workdir), train=split == "train", download=False)
        images = torch.as_tensor(np.asarray(ds.data), dtype=torch.uint8)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        splits[split] = (images.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))
    return splits


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_splits(path: Path, sha256: str) -> tuple[dict, list[str] | None]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist. Check the path declared for this "
                        f"dataset in params.yaml (datasets.<name>.path).")
    actual = file_digest(path, "sha256")
    if actual != sha256.lower():
        raise DataError(f"checksum mismatch for {path}: expected sha256 {sha256}, got {actual}. "
                        f"Use the right file, or update datasets.<name>.sha256 in params.yaml "
                        f"if the file is meant to change.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz]
            if missing:
                raise DataError(f"{path} lacks the keys {missing}; an npz dataset needs "
                                f"{', '.join(NPZ_KEYS)} (and optionally classes).")
            arrays = {k: npz[k] for k in NPZ_KEYS}
            classes = [str(c) for c in npz["classes"]] if "classes" in npz else None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable npz file ({e}).") from e
    splits = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) != len(y):
            raise DataError(f"{path}: x_{split} must be uint8 images N,H,W or N,H,W,C with one "
                            f"label each; got {x.dtype} {x.shape} and {len(y)} labels.")
        images = torch.from_numpy(x)
        images = images.unsqueeze(1) if x.ndim == 3 else images.permute(0, 3, 1, 2)
        splits[split] = (images.contiguous(), torch.from_numpy(y.astype(np.int64)))
    return splits, classes


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    x = images.float().div_(255)
    return (x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist())


def prepare(name: str, out_dir: Path, npz: Path | None = None, sha256: str | None = None) -> dict:
    """Download/verify/convert dataset ``name`` into ``out_dir``; returns its meta.

    Built in a temporary folder beside ``out_dir`` and renamed into place at the end, so
    a failure leaves nothing that a later stage could mistake for good data.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        if npz is not None:
            splits, classes = _npz_splits(Path(npz), sha256 or "")
            n_classes = int(max(splits["train"][1].max(), splits["test"][1].max())) + 1
            classes = classes or [str(i) for i in range(n_classes)]
            mean, std = _channel_stats(splits["train"][0])
            source = {"npz": str(npz), "sha256": sha256}
        else:
            spec = DATASETS[name]
            splits = _torchvision_splits(name, work / "raw")
            classes, mean, std = list(spec.classes), list(spec.mean), list(spec.std)
            source = {"files": {f.name: f.md5 for f in official_files(name)}}
        build = work / "out"
        build.mkdir()
        meta = {"name": name, "classes": classes, "input_shape": list(splits["train"][0].shape[1:]),
                "mean": mean, "std": std, "source": source, "splits": {}}
        for split, (images, labels) in splits.items():
            torch.save({"images": images, "labels": labels}, build / f"{split}.pt")
            meta["splits"][split] = {
                "count": len(labels),
                "label_counts": torch.bincount(labels, minlength=len(classes)).tolist(),
                "images_sha256": tensor_sha256(images), "labels_sha256": tensor_sha256(labels)}
        (build / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        build.rename(out_dir)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --- loading --------------------------------------------------------------------------

def load_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: the dataset has not been prepared. "
                        f"Run `dvc repro download@{Path(data_dir).name}` first.")
    return json.loads(path.read_text())


def load_split(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images N,C,H,W, int64 labels) of a prepared split."""
    blob = torch.load(Path(data_dir) / f"{split}.pt", weights_only=True)
    return blob["images"], blob["labels"]
