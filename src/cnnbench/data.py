"""Datasets: the registry, download + verify + convert, and loading the converted splits.

A dataset becomes ``data/<name>/{train,test}.pt`` (uint8 images N,C,H,W and int64
labels) plus ``meta.json``. Built-in datasets come through torchvision's classes and
their official files (md5-checked); ``CNNBENCH_DATA_MIRROR`` names a folder or an
http(s) URL holding the same files as ``<mirror>/<dataset>/<file>``. A local ``.npz``
file declared with its sha256 goes through the same verification and output.

``cifar10_recovered`` is official CIFAR-10 less 103 images listed by their official
index in ``cifar10_recovered.json``: built from the official archive (those images
dropped) or, offline, from the shards of the recovered copy at
``<mirror>/cifar10-recovered/``; both reach the same content digest, so the same bytes.

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

from cnnbench import CnnbenchError
from cnnbench.files import read_json, read_torch

MIRROR_ENV = "CNNBENCH_DATA_MIRROR"
DOWNLOAD_TIMEOUT_S = 60
RECOVERED_SHARDS = ("train-0.npz", "train-1.npz", "train-2.npz", "test.npz")


class DataError(CnnbenchError):
    """A dataset could not be fetched or verified; the message says what to do."""


@dataclass(frozen=True)
class Dropped:
    """Images left out of a built-in dataset's official files, by their official index,
    and the sha256 of what remains (x_train, y_train, x_test, y_test as uint8 N,H,W,C and
    N, in that order): the same figure whichever way the dataset was built."""

    train: tuple[int, ...]
    test: tuple[int, ...]
    content_sha256: str
    official: str  # the dataset whose official files these are dropped from
    shards_folder: str  # <mirror>/<shards_folder>/: the copy that lacks those images

    @classmethod
    def load(cls, name: str, official: str, shards_folder: str) -> Dropped:
        doc = json.loads((Path(__file__).parent / f"{name}.json").read_text())
        return cls(tuple(doc["dropped"]["train"]), tuple(doc["dropped"]["test"]),
                   doc["content_sha256"], official, shards_folder)


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: the torchvision class that knows its official files, and
    what the trainer needs to know before any data is loaded."""

    torchvision_class: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dropped: Dropped | None = None


_DIGITS = tuple(str(i) for i in range(10))
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                    "ship", "truck")
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", (1, 28, 28), _DIGITS, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetSpec(
        "FashionMNIST", (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        (0.2860,), (0.3530,)),
    "cifar10": DatasetSpec("CIFAR10", (3, 32, 32), _CIFAR10_CLASSES,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # mean and std: its training pixels' statistics as torch computes them in float32,
    # fixed here so that every machine writes the same meta.json
    "cifar10_recovered": DatasetSpec(
        "CIFAR10", (3, 32, 32), _CIFAR10_CLASSES,
        (0.4913894236087799, 0.4820905327796936, 0.4463723301887512),
        (0.24702894687652588, 0.2434813380241394, 0.2615705728530884),
        Dropped.load("cifar10_recovered", official="cifar10", shards_folder="cifar10-recovered")),
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

def _mirror() -> str:
    return os.environ.get(MIRROR_ENV, "").strip()


def _mirror_candidates(folder: str, filename: str) -> list[str]:
    mirror = _mirror()
    if not mirror:
        return []
    if mirror.startswith(("http://", "https://")):
        return [f"{mirror.rstrip('/')}/{folder}/{filename}"]
    return [str(Path(mirror).expanduser() / folder / filename)]


def _copy_or_download(source: str, dest: Path, filename: str) -> str | None:
    """Put ``source`` (a local path or a URL) at ``dest/filename``; None when done, else
    why not (the file is absent, the server did not answer...)."""
    from torchvision.datasets.utils import download_url

    if "://" not in source:  # a local mirror folder
        if not Path(source).is_file():
            return "no such file"
        shutil.copyfile(source, dest / filename)
        return None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        download_url(source, str(dest), filename)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        (dest / filename).unlink(missing_ok=True)
        return str(getattr(e, "reason", e))
    finally:
        socket.setdefaulttimeout(old_timeout)
    return None


def fetch(folder: str, file: OfficialFile, dest: Path) -> Path:
    """Put ``file`` into ``dest``: ``<mirror>/<folder>/`` first, then torchvision's
    official URLs. Every copy passes the official md5 before it is used; a file that no
    source has is a DataError listing each source and why it failed."""
    tried: list[str] = []
    for source in [*_mirror_candidates(folder, file.name), *file.urls]:
        why = _copy_or_download(source, dest, file.name)
        if why:
            tried.append(f"{source} ({why})")
            continue
        _verify_md5(dest / file.name, file.md5, source)
        return dest / file.name
    raise FetchError(tried, [f"{folder}/{file.name} (the official file, md5 {file.md5})"])


class FetchError(DataError):
    """No source had a file: each one tried and why, and what belongs in a mirror."""

    def __init__(self, tried: list[str], wanted: list[str]):
        self.tried, self.wanted = tried, wanted
        super().__init__(self._message())

    def _message(self) -> str:
        mirror = _mirror()
        wanted = " or ".join(f"<mirror>/{w}" for w in self.wanted)
        if mirror:
            fix = (f"The mirror {MIRROR_ENV}={mirror} lacks what the paths above name: put "
                   f"{wanted} there (with <mirror> = {mirror}), or point {MIRROR_ENV} at a "
                   f"folder that has it.")
        else:
            fix = (f"With no internet, set {MIRROR_ENV} to a folder or http(s) URL holding "
                   f"{wanted}.")
        return "could not fetch the data. Tried:\n  " + "\n  ".join(self.tried) + "\n" + fix

    def joined(self, other: FetchError) -> FetchError:
        return FetchError(self.tried + other.tried, self.wanted + other.wanted)


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


def _official_arrays(dataset: str, workdir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 images N,H,W or N,H,W,C, labels)} from the official files, read by
    torchvision's own class."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DATASETS[dataset].torchvision_class)
    spec = DATASETS[dataset]
    folder = spec.dropped.official if spec.dropped else dataset
    if hasattr(cls, "resources"):
        raw = workdir / cls.__name__ / "raw"  # where torchvision's class looks for them
    else:
        raw = workdir
    raw.mkdir(parents=True, exist_ok=True)
    for f in official_files(dataset):
        path = fetch(folder, f, raw)
        if path.suffix == ".gz" and not path.name.endswith(".tar.gz"):
            _gunzip(path)
        else:
            _extract_tar(path, workdir)
    arrays = {}
    for split in ("train", "test"):
        ds = cls(str(workdir), train=split == "train", download=False)
        arrays[split] = (np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets))
    return arrays


def _recovered_shards(dropped: Dropped, workdir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images, labels)} from the shards at <mirror>/<shards_folder>/, whose
    ``index`` arrays must name every official image but the dropped ones, in order."""
    wanted = [f"{dropped.shards_folder}/{{{','.join(RECOVERED_SHARDS)}}} (the recovered copy's shards)"]
    if not _mirror():
        raise FetchError([], wanted)
    paths = []
    for name in RECOVERED_SHARDS:
        source = _mirror_candidates(dropped.shards_folder, name)[0]
        if "://" not in source and Path(source).is_file():
            paths.append(Path(source))  # read in place: no copy of 170 MB
            continue
        why = _copy_or_download(source, workdir, name)
        if why:
            raise FetchError([f"{source} ({why})"], wanted)
        paths.append(workdir / name)
    arrays = {}
    for split, files in (("train", paths[:3]), ("test", paths[3:])):
        try:
            shards = [dict(np.load(f, allow_pickle=False)) for f in files]
            x, y, index = (np.concatenate([s[k] for s in shards]) for k in ("x", "y", "index"))
        except (ValueError, OSError, EOFError, KeyError) as e:
            raise DataError(f"{files[0].parent}: the {split} shards are not readable npz files with "
                            f"x, y and index ({e}). Replace them with the originals and rerun.") from e
        total = 50_000 if split == "train" else 10_000
        expected = np.setdiff1d(np.arange(total), getattr(dropped, split))
        if not np.array_equal(index, expected):
            raise DataError(f"{files[0].parent}: the {split} shards do not hold the official images less "
                            f"the {len(getattr(dropped, split))} listed in cifar10_recovered.json, in "
                            f"order; they are not the recovered copy this project was built on.")
        arrays[split] = (x, y)
    return arrays


def _drop(arrays: dict, dropped: Dropped) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: (np.delete(x, getattr(dropped, split), axis=0), np.delete(y, getattr(dropped, split)))
            for split, (x, y) in arrays.items()}


def content_sha256(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    """sha256 of the bytes of x_train, y_train, x_test, y_test (uint8), in that order."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for a in arrays[split]:
            digest.update(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def _dropped_arrays(name: str, workdir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The recovered shards where the mirror has them, else the official files less the
    dropped images; either way checked against the content digest."""
    dropped = DATASETS[name].dropped
    try:
        arrays = _recovered_shards(dropped, workdir)
    except FetchError as no_shards:
        try:
            arrays = _drop(_official_arrays(name, workdir), dropped)
        except FetchError as no_official:
            raise no_shards.joined(no_official) from None
    actual = content_sha256(arrays)
    if actual != dropped.content_sha256:
        raise DataError(f"{name}: the images and labels have content sha256 {actual}, not "
                        f"{dropped.content_sha256} (cifar10_recovered.json): the source files differ "
                        f"from the ones this dataset is defined by. Replace them with the originals.")
    return arrays


def _to_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 N,H,W or N,H,W,C -> uint8 N,C,H,W, and int64 labels."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.from_numpy(np.asarray(labels).astype(np.int64))


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_arrays(path: Path, sha256: str) -> tuple[dict, list[str] | None]:
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
        if y.ndim == 2 and y.shape[1:] == (1,):
            y = y[:, 0]  # Keras's load_data() gives labels as N,1
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{path}: x_{split} must be uint8 images N,H,W or N,H,W,C with one "
                            f"label each in y_{split}; got {x.dtype} {x.shape} and labels {y.shape}.")
        if len(y) == 0:
            raise DataError(f"{path}: the {split} split is empty; it needs at least one image.")
        if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{path}: y_{split} holds {y.dtype} values; labels are class indices: "
                            f"store them as integers (e.g. y.astype(np.int64)).")
        splits[split] = (x, y)
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DataError(f"{path}: the train images are {splits['train'][0].shape[1:]} and the test "
                        f"images {splits['test'][0].shape[1:]}; both splits need one image shape.")
    _check_labels(path, splits, classes)
    return splits, classes


def _check_labels(path: Path, splits: dict, classes: list[str] | None) -> None:
    """Labels are 0 .. classes-1, and each class has one name, used once."""
    if classes is not None:
        if not classes or len(set(classes)) != len(classes) or "" in classes:
            raise DataError(f"{path}: classes must be distinct, non-empty names, one per class; "
                            f"got {classes}.")
    for split, (_, y) in splits.items():
        low, high = int(y.min()), int(y.max())
        if low < 0:
            raise DataError(f"{path}: y_{split} holds the label {low}; labels count classes "
                            f"from 0.")
        if classes is not None and high >= len(classes):
            raise DataError(f"{path}: y_{split} holds the label {high}, but classes names "
                            f"{len(classes)} classes (labels 0 to {len(classes) - 1}); name every "
                            f"class in classes, in label order.")


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    x = images.float().div_(255)
    return (x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist())


def prepare(name: str, out_dir: Path, npz: Path | None = None, sha256: str | None = None) -> dict:
    """Download/verify/convert dataset ``name`` into ``out_dir``; returns its meta.

    Built in a temporary folder beside ``out_dir`` and renamed into place at the end, so
    a failure leaves nothing that a later stage could mistake for good data.
    """
    out_dir = Path(out_dir)
    # a local file is checked before anything is written
    arrays, classes = _npz_arrays(Path(npz), sha256 or "") if npz is not None else (None, None)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        if npz is not None:
            splits = {split: _to_tensors(*a) for split, a in arrays.items()}
            n_classes = int(max(splits["train"][1].max(), splits["test"][1].max())) + 1
            classes = classes or [str(i) for i in range(n_classes)]
            mean, std = _channel_stats(splits["train"][0])
            source = {"npz": str(npz), "sha256": sha256}
        else:
            spec = DATASETS[name]
            source = {"files": {f.name: f.md5 for f in official_files(name)}}
            if spec.dropped:  # the same meta whichever way it was built
                arrays = _dropped_arrays(name, work / "raw")
                source.update(dropped={"train": len(spec.dropped.train), "test": len(spec.dropped.test)},
                              content_sha256=spec.dropped.content_sha256)
            else:
                arrays = _official_arrays(name, work / "raw")
            splits = {split: _to_tensors(*a) for split, a in arrays.items()}
            classes, mean, std = list(spec.classes), list(spec.mean), list(spec.std)
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

def _restore(data_dir: Path) -> str:
    """How a damaged prepared dataset comes back."""
    return (f"restore it with `dvc checkout {data_dir}`, or build it again with "
            f"`dvc repro download@{Path(data_dir).name}`")


def load_meta(data_dir: Path) -> dict:
    """meta.json of a prepared dataset, checked for what the stages read from it."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: the dataset has not been prepared. "
                        f"Run `dvc repro download@{Path(data_dir).name}` first.")
    meta = read_json(path, f"{_restore(data_dir)}.")
    try:
        classes, shape, splits = meta["classes"], meta["input_shape"], meta["splits"]
        ok = (len(classes) >= 1 and len(shape) == 3 and len(meta["mean"]) == len(meta["std"]) == shape[0]
              and all(isinstance(splits[s]["count"], int) and len(splits[s]["images_sha256"]) == 64
                      for s in ("train", "test")))
    except (KeyError, TypeError) as e:
        ok, why = False, f"{type(e).__name__}: {e}"
    else:
        why = "its classes, input_shape, mean, std or splits do not fit together"
    if not ok:
        raise DataError(f"{path} is damaged ({why}); {_restore(data_dir)}.")
    return meta


def load_split(data_dir: Path, split: str, meta: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images N,C,H,W, int64 labels) of a prepared split, checked byte for byte
    against the digests in meta.json (``meta``, read when not given)."""
    meta = meta or load_meta(data_dir)
    path = Path(data_dir) / f"{split}.pt"
    if not path.is_file():
        raise DataError(f"{path} does not exist; {_restore(data_dir)}.")
    blob = read_torch(path, f"{_restore(data_dir)}.", required=("images", "labels"))
    images, labels = blob["images"], blob["labels"]
    expected = meta["splits"][split]
    if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)
            and images.dtype == torch.uint8 and list(images.shape[1:]) == meta["input_shape"]
            and labels.dtype == torch.int64 and labels.shape == (expected["count"],) == images.shape[:1]
            and tensor_sha256(images) == expected["images_sha256"]
            and tensor_sha256(labels) == expected["labels_sha256"]):
        raise DataError(f"{path} is not the {split} split that {Path(data_dir) / 'meta.json'} "
                        f"describes (its images or labels differ); {_restore(data_dir)}.")
    return images, labels


@dataclass(frozen=True)
class Dataset:
    """A prepared dataset, read once and checked: its meta and both splits."""

    path: Path
    meta: dict
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def load(cls, data_dir: Path) -> Dataset:
        meta = load_meta(data_dir)
        return cls(Path(data_dir), meta, load_split(data_dir, "train", meta), load_split(data_dir, "test", meta))
