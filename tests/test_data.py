"""The data stage on real files: the mirror folder, an HTTP mirror, a local npz, and
every way a download can go wrong."""

import functools
import gzip
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnbench.data import MIRROR_ENV, DataError, load_meta, load_split, prepare

MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
# the official per-class counts of MNIST
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# sha256 of the converted uint8 tensors (N,1,28,28), pinned: any change to the
# conversion (order, dtype, layout) must show up here
TRAIN_IMAGES_SHA256 = "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"
TEST_IMAGES_SHA256 = "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"


def test_mnist_through_the_mirror_folder(mnist_dir):
    train_x, train_y = load_split(mnist_dir, "train")
    test_x, test_y = load_split(mnist_dir, "test")
    assert train_x.shape == (60000, 1, 28, 28) and train_x.dtype == torch.uint8
    assert test_x.shape == (10000, 1, 28, 28) and test_y.dtype == torch.int64
    assert torch.bincount(train_y).tolist() == TRAIN_COUNTS
    assert torch.bincount(test_y).tolist() == TEST_COUNTS
    assert hashlib.sha256(train_x.numpy().tobytes()).hexdigest() == TRAIN_IMAGES_SHA256
    assert hashlib.sha256(test_x.numpy().tobytes()).hexdigest() == TEST_IMAGES_SHA256
    meta = load_meta(mnist_dir)
    assert meta["splits"]["train"]["images_sha256"] == TRAIN_IMAGES_SHA256
    assert meta["source"]["files"]["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert meta["classes"] == [str(i) for i in range(10)] and meta["input_shape"] == [1, 28, 28]
    assert sorted(p.name for p in mnist_dir.iterdir()) == ["meta.json", "test.pt", "train.pt"]


def test_loading_a_split_needs_no_torchvision(mnist_dir):
    import subprocess
    import sys

    code = (f"import sys; from cnnbench.data import load_split; load_split({str(mnist_dir)!r}, 'test'); "
            "assert 'torchvision' not in sys.modules, 'torchvision was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def http_mirror(datasets_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(datasets_dir))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_mnist_through_an_http_mirror(http_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, http_mirror)
    meta = prepare("mnist", tmp_path / "mnist")
    assert meta["splits"]["train"]["images_sha256"] == TRAIN_IMAGES_SHA256
    assert meta["splits"]["test"]["label_counts"] == TEST_COUNTS


def test_npz_dataset_with_the_real_cifar_subset(datasets_dir, tmp_path):
    npz = datasets_dir / "cifar10-subset.npz"
    sha = hashlib.sha256(npz.read_bytes()).hexdigest()
    meta = prepare("cifar_subset", tmp_path / "cifar_subset", npz=npz, sha256=sha)
    x, y = load_split(tmp_path / "cifar_subset", "train")
    raw = np.load(npz)
    assert x.shape == (8336, 3, 32, 32) and meta["splits"]["test"]["count"] == 1017
    # NHWC -> NCHW without touching a pixel: channel 0 is red
    assert torch.equal(x[5, 0], torch.from_numpy(raw["x_train"][5, :, :, 0]))
    assert y.tolist() == raw["y_train"].astype(int).tolist()
    assert meta["classes"][0] == "airplane" and len(meta["classes"]) == 10
    assert 0.4 < meta["mean"][0] < 0.55 and len(meta["std"]) == 3  # computed from the pixels


def test_npz_with_the_wrong_sha256_is_refused(datasets_dir, tmp_path):
    with pytest.raises(DataError, match="expected sha256 0{64}, got [0-9a-f]{64}"):
        prepare("cifar_subset", tmp_path / "c", npz=datasets_dir / "cifar10-subset.npz", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_no_network_and_no_mirror_names_the_urls_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    with pytest.raises(DataError) as err:
        prepare("mnist", tmp_path / "mnist")
    msg = str(err.value)
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in msg
    assert "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz" in msg
    assert MIRROR_ENV in msg
    assert list(tmp_path.iterdir()) == []


def _bad_mirror(datasets_dir, tmp_path, damage) -> Path:
    mirror = tmp_path / "mirror"
    shutil.copytree(datasets_dir / "mnist", mirror / "mnist")
    damage(mirror / "mnist" / "t10k-labels-idx1-ubyte.gz")
    return mirror


def test_checksum_mismatch_names_the_file_and_both_checksums(datasets_dir, tmp_path, monkeypatch):
    def flip_a_label(path: Path):  # a valid gzip with different content
        data = bytearray(gzip.decompress(path.read_bytes()))
        data[-1] = (data[-1] + 1) % 10
        path.write_bytes(gzip.compress(bytes(data)))

    monkeypatch.setenv(MIRROR_ENV, str(_bad_mirror(datasets_dir, tmp_path, flip_a_label)))
    out = tmp_path / "data" / "mnist"
    with pytest.raises(DataError) as err:
        prepare("mnist", out)
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert "expected md5 ec29112dd5afa0611ce80d1b7f02629c, got " in msg
    assert "truncated" not in msg
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def test_truncated_gzip_is_a_clear_error_and_leaves_nothing(datasets_dir, tmp_path, monkeypatch):
    def truncate(path: Path):
        path.write_bytes(path.read_bytes()[:2000])

    monkeypatch.setenv(MIRROR_ENV, str(_bad_mirror(datasets_dir, tmp_path, truncate)))
    data = tmp_path / "data"
    # a good earlier build must survive a failed rebuild untouched
    (data / "mnist").mkdir(parents=True)
    (data / "mnist" / "meta.json").write_text('{"good": true}')
    with pytest.raises(DataError) as err:
        prepare("mnist", data / "mnist")
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "truncated or corrupt" in msg
    assert "expected md5 ec29112dd5afa0611ce80d1b7f02629c" in msg
    assert sorted(p.name for p in data.iterdir()) == ["mnist"]  # no partial folder left
    assert json.loads((data / "mnist" / "meta.json").read_text()) == {"good": True}


def test_archive_members_cannot_escape_the_extraction_folder(tmp_path):
    import io
    import tarfile

    from cnnbench.data import _extract_tar

    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"pwned"
        info = tarfile.TarInfo("../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="evil.tar.gz could not be extracted"):
        _extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
