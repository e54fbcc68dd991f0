"""cifar10_recovered, official CIFAR-10 less 103 images, built both ways from real pixels:
offline from the shards of ../shared/datasets/cifar10-recovered/ through the mirror, and
online from an official-format cifar-10-python.tar.gz served over HTTP on 127.0.0.1.
Both must give the bytes that dvc.lock records, so that neither reruns a training.

No internet here: the archive is assembled in the test from the shards' real pixels (the
103 images they lack are filled with white images that must be dropped), and
torchvision's md5s are pointed at it. What this cannot test offline: the download from
the official URL and the official archive's own md5.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd
import yaml

from cnnbench.data import DATASETS, MIRROR_ENV, RECOVERED_SHARDS, DataError, load_meta, prepare
from conftest import REPO

NAME = "cifar10_recovered"


def dvc_dir_hash(folder: Path) -> str:
    """The md5 DVC records for a folder output, computed with DVC's own Tree."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    tree = Tree()
    for f in sorted(folder.iterdir()):
        tree.add((f.name,), Meta(size=f.stat().st_size), HashInfo("md5", hashlib.md5(f.read_bytes()).hexdigest()))
    tree.digest()
    return tree.hash_info.value


def locked_hash(stage: str) -> str:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"][stage]
    return lock["outs"][0]["md5"]


def shard_arrays(datasets_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    folder = datasets_dir / "cifar10-recovered"
    shards = {name: dict(np.load(folder / name)) for name in RECOVERED_SHARDS}
    train = [shards[n] for n in RECOVERED_SHARDS[:3]]
    return {"train": {k: np.concatenate([s[k] for s in train]) for k in ("x", "y", "index")},
            "test": shards["test.npz"]}


@pytest.fixture(scope="module")
def offline_build(tmp_path_factory, datasets_dir) -> Path:
    out = tmp_path_factory.mktemp("offline") / NAME
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MIRROR_ENV, str(datasets_dir))
        prepare(NAME, out)
    return out


def test_the_committed_list_is_what_the_shards_lack(datasets_dir):
    arrays = shard_arrays(datasets_dir)
    dropped = DATASETS[NAME].dropped
    for split, total in (("train", 50_000), ("test", 10_000)):
        lacking = sorted(set(range(total)) - set(arrays[split]["index"].tolist()))
        assert tuple(lacking) == getattr(dropped, split)
    assert (len(dropped.train), len(dropped.test)) == (80, 23)


def test_offline_build_from_the_shards_is_the_locked_data(offline_build):
    meta = load_meta(offline_build)
    assert {s: v["count"] for s, v in meta["splits"].items()} == {"train": 49_920, "test": 9_977}
    assert meta["source"]["content_sha256"].startswith("71f3b146")
    assert meta["source"]["dropped"] == {"train": 80, "test": 23}
    assert dvc_dir_hash(offline_build) == locked_hash(f"download@{NAME}")


def _official_archive(arrays: dict, folder: Path) -> tuple[Path, dict[str, str]]:
    """cifar-10-python.tar.gz in the official layout (five train batches of 10,000, one
    test batch, batches.meta; CHW rows), the missing images filled with white ones."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    files = {}
    for split, total, names in (("train", 50_000, [f"data_batch_{i}" for i in range(1, 6)]),
                                ("test", 10_000, ["test_batch"])):
        x = np.full((total, 32, 32, 3), 255, dtype=np.uint8)
        y = np.zeros(total, dtype=np.int64)
        x[arrays[split]["index"]], y[arrays[split]["index"]] = arrays[split]["x"], arrays[split]["y"]
        for i, name in enumerate(names):
            rows = slice(i * 10_000, (i + 1) * 10_000)
            entry = {"data": x[rows].transpose(0, 3, 1, 2).reshape(10_000, -1), "labels": y[rows].tolist()}
            (batches / name).write_bytes(pickle.dumps(entry))
            files[name] = hashlib.md5((batches / name).read_bytes()).hexdigest()
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": list(DATASETS[NAME].classes)}))
    files["batches.meta"] = hashlib.md5((batches / "batches.meta").read_bytes()).hexdigest()
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive, files


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 for tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_online_build_from_the_official_archive_drops_the_listed_images(
        offline_build, datasets_dir, served, tmp_path, monkeypatch):
    www, url = served
    archive, md5s = _official_archive(shard_arrays(datasets_dir), www)
    official_md5 = tvd.CIFAR10.tgz_md5
    # torchvision's md5s and URL, pointed at the assembled archive
    monkeypatch.setattr(tvd.CIFAR10, "url", f"{url}/{archive.name}")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5s[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5s["batches.meta"]})
    monkeypatch.delenv(MIRROR_ENV, raising=False)  # no shards: the archive is the only source
    online = tmp_path / "online" / NAME
    meta = prepare(NAME, online)
    assert meta["splits"]["test"]["count"] == 9_977  # the white images were dropped
    for name in ("train.pt", "test.pt"):
        assert (online / name).read_bytes() == (offline_build / name).read_bytes(), name
    # meta.json names the archive's md5, the test's here; with the official one it is the
    # same file, so the same DVC hash
    fake_md5 = tvd.CIFAR10.tgz_md5
    assert meta["source"]["files"] == {"cifar-10-python.tar.gz": fake_md5}
    (online / "meta.json").write_text((online / "meta.json").read_text().replace(fake_md5, official_md5))
    assert (online / "meta.json").read_bytes() == (offline_build / "meta.json").read_bytes()
    assert dvc_dir_hash(online) == locked_hash(f"download@{NAME}")


def test_a_mirror_without_the_files_names_what_belongs_there(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "mnist").mkdir(parents=True)
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    # the official URL refused at once, as with no internet but without waiting for DNS
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError) as err:
        prepare(NAME, tmp_path / "data" / NAME)
    msg = str(err.value)
    assert f"{mirror}/cifar10-recovered/train-0.npz (no such file)" in msg
    assert f"{mirror}/cifar10/cifar-10-python.tar.gz (no such file)" in msg
    assert "http://127.0.0.1:9/cifar-10-python.tar.gz (" in msg
    assert f"The mirror {MIRROR_ENV}={mirror} lacks" in msg and "cifar10-recovered/{train-0.npz," in msg
    assert "set CNNBENCH_DATA_MIRROR" not in msg
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_shards_that_are_not_the_recovered_copy_are_refused(datasets_dir, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "cifar10-recovered"
    mirror.mkdir(parents=True)
    for name in RECOVERED_SHARDS:
        (mirror / name).symlink_to(datasets_dir / "cifar10-recovered" / name)
    test = dict(np.load(datasets_dir / "cifar10-recovered" / "test.npz"))
    test["index"] = test["index"][::-1].copy()
    (mirror / "test.npz").unlink()
    np.savez(mirror / "test.npz", **test)
    monkeypatch.setenv(MIRROR_ENV, str(mirror.parent))
    with pytest.raises(DataError, match="the test shards do not hold the official images less the 23"):
        prepare(NAME, tmp_path / "data" / NAME)
