"""The named data sets beyond MNIST: Fashion-MNIST from Debian's package, KMNIST and EMNIST letters through their
checksummed downloads (a local HTTP server or file:// URL serving small files made here, their sums patched in),
EMNIST's transposed images and 1-26 labels, and the class names every set carries."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import idx_bytes
from serve_browser import under_ci

from mnist_gan.data import named
from mnist_gan.data.datasets import data_class_names, load_dataset
from mnist_gan.data.images import class_index, names_for
from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import DataConfig

FASHION_DIR = Path(named.SOURCES["fashion-mnist"]["local"][0])


def fashion_or_skip() -> None:
    """Skip where Debian's dataset-fashion-mnist is not installed; under CI=true (.ci/run installs it) fail."""
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        return
    reason = f"{FASHION_DIR} is not installed (apt-get install dataset-fashion-mnist)"
    if under_ci():
        pytest.fail(f"CI=true, but {reason}", pytrace=False)
    pytest.skip(reason)


def load(name: str, cache: Path):
    return load_dataset(DataConfig(data=name, cache_dir=str(cache)))


@pytest.fixture
def digits(mnist_5k):
    """100 real images and labels as numpy arrays: 80 for training, 20 for testing."""
    return mnist_5k.images[:100].numpy(), mnist_5k.labels[:100].numpy()


def idx_payloads(images, labels, transposed: bool = False, first_label: int = 0) -> dict[str, bytes]:
    """The four gzip IDX files of an 80/20 split, as the publishers lay them out."""
    stored = np.ascontiguousarray(images.transpose(0, 2, 1)) if transposed else images
    payloads = {}
    for prefix, part in (("train", slice(0, 80)), ("t10k", slice(80, None))):
        payloads[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(stored[part]), mtime=0)
        payloads[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels[part] + first_label), mtime=0)
    return payloads


@pytest.fixture
def http_root(tmp_path):
    """(folder, its URL): a local HTTP server on a free port, for the test's duration."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("MNIST_GAN_OFFLINE", raising=False)


# ------------------------------------------------------------------------------------------ the table

def test_every_named_set_has_sources_sums_and_class_names():
    counts = {"mnist": 10, "fashion-mnist": 10, "kmnist": 10, "emnist-letters": 26}
    assert {name: len(spec["classes"]) for name, spec in named.SOURCES.items()} == counts
    assert named.class_names("fashion-mnist")[7] == "Sneaker" and named.class_names("kmnist")[3] == "tsu"
    assert named.class_names("emnist-letters")[0] == "a" and named.class_names("mnist")[7] == "7"
    for name, spec in named.SOURCES.items():
        sums = [spec["archive"]["md5"]] if "archive" in spec else list(spec["files"].values())
        assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in sums), name
        assert spec["mirrors"] or "archive" in spec, name


# ------------------------------------------------------------------------------------------ Fashion-MNIST

def test_fashion_mnist_offline_from_debian_has_all_70000_and_names(tmp_path):
    fashion_or_skip()
    dataset = load("fashion-mnist", tmp_path)  # MNIST_GAN_OFFLINE is set: the Debian files, never the network
    assert dataset.images.shape == (60_000, 28, 28) and dataset.test_images.shape == (10_000, 28, 28)
    assert torch.bincount(dataset.test_labels).tolist() == [1000] * 10
    assert dataset.class_names == named.FASHION and str(FASHION_DIR) in dataset.source


# ------------------------------------------------------------------------------------------ KMNIST by download

def test_kmnist_download_verifies_caches_and_names(monkeypatch, tmp_path, digits, http_root, online):
    images, labels = digits
    root, url = http_root
    payloads = idx_payloads(images, labels)
    for name, payload in payloads.items():
        (root / name).write_bytes(payload)
    sums = {name: hashlib.md5(payload).hexdigest() for name, payload in payloads.items()}
    monkeypatch.setitem(named.SOURCES, "kmnist", {**named.SOURCES["kmnist"], "files": sums, "mirrors": [url]})
    dataset = load("kmnist", tmp_path)
    assert np.array_equal(dataset.images.numpy(), images[:80]) and np.array_equal(dataset.test_labels, labels[80:])
    assert dataset.class_names == named.KANA and data_class_names("kmnist") == named.KANA
    assert sorted(p.name for p in (tmp_path / "kmnist").iterdir()) == sorted(payloads)
    for name in payloads:  # a second load reads the cache: the server may be gone
        (root / name).unlink()
    assert torch.equal(load("kmnist", tmp_path).images, dataset.images)


def test_kmnist_checksum_mismatch_is_refused_and_nothing_cached(monkeypatch, tmp_path, digits, http_root, online):
    images, labels = digits
    root, url = http_root
    payloads = idx_payloads(images, labels)
    for name, payload in payloads.items():
        (root / name).write_bytes(payload[:-1] + bytes([payload[-1] ^ 0xFF]))
    sums = {name: hashlib.md5(payload).hexdigest() for name, payload in payloads.items()}
    monkeypatch.setitem(named.SOURCES, "kmnist", {**named.SOURCES["kmnist"], "files": sums, "mirrors": [url]})
    with pytest.raises(MnistGanError, match="kmnist is not cached.*checksum mismatch"):
        load("kmnist", tmp_path)
    assert not any((tmp_path / "kmnist").glob("*.gz"))


# ------------------------------------------------------------------------------------------ EMNIST letters

def emnist_zip(path: Path, images, labels) -> str:
    """An archive laid out as EMNIST's gzip.zip (letters transposed, labels 1-26, and a set not to extract);
    returns its MD5."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in idx_payloads(images, labels, transposed=True, first_label=1).items():
            split = "train" if name.startswith("train") else "test"
            archive.writestr(f"gzip/emnist-letters-{split}{name[name.index('-'):]}", payload)
        archive.writestr("gzip/emnist-digits-train-images-idx3-ubyte.gz", b"not extracted")
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def letters(mnist_5k):
    """100 asymmetric images (a digit with a bar along its top row) and labels 0-25."""
    images = mnist_5k.images[:100].numpy().copy()
    images[:, 0, :] = 255  # transposed, the bar would be the left column
    return images, np.arange(100) % 26


def test_emnist_letters_from_the_archive_transposed_back_and_shifted(monkeypatch, tmp_path, letters, online):
    images, labels = letters
    archive = tmp_path / "gzip.zip"
    md5 = emnist_zip(archive, images, labels)
    spec = named.SOURCES["emnist-letters"]
    monkeypatch.setitem(spec, "archive", {**spec["archive"], "url": archive.as_uri(), "md5": md5})
    dataset = load("emnist-letters", tmp_path / "cache")
    assert np.array_equal(dataset.images.numpy(), images[:80]), "transposed back to MNIST's orientation"
    assert np.array_equal(dataset.test_images.numpy(), images[80:])
    assert dataset.labels.tolist() == labels[:80].tolist() and int(dataset.labels.max()) == 25  # 1-26 -> 0-25
    assert dataset.class_names == named.LETTERS
    cached = sorted(p.name for p in (tmp_path / "cache" / "emnist-letters").iterdir())
    assert cached == sorted([*named.IDX_FILES, named.MANIFEST]), "only the letters files; no archive left"
    archive.unlink()  # a second load reads the cache, checked against the sums recorded from the verified archive
    assert torch.equal(load("emnist-letters", tmp_path / "cache").images, dataset.images)
    damaged = tmp_path / "cache" / "emnist-letters" / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    monkeypatch.setenv("MNIST_GAN_OFFLINE", "1")
    with pytest.raises(MnistGanError, match="emnist-letters is not cached"):
        load("emnist-letters", tmp_path / "cache")


def test_emnist_archive_with_a_wrong_sum_or_too_large_is_refused(monkeypatch, tmp_path, letters, online):
    images, labels = letters
    archive = tmp_path / "gzip.zip"
    md5 = emnist_zip(archive, images, labels)
    spec = named.SOURCES["emnist-letters"]
    monkeypatch.setitem(spec, "archive", {**spec["archive"], "url": archive.as_uri(), "md5": "0" * 32})
    with pytest.raises(MnistGanError, match=f"checksum mismatch.*got {md5}"):
        load("emnist-letters", tmp_path / "cache")
    assert not any((tmp_path / "cache" / "emnist-letters").iterdir()), "nothing extracted, no archive kept"
    monkeypatch.setitem(spec, "archive", {**spec["archive"], "url": archive.as_uri(), "md5": md5})
    monkeypatch.setattr(named, "MAX_ARCHIVE_BYTES", archive.stat().st_size - 1)
    with pytest.raises(MnistGanError, match="serves more than"):
        load("emnist-letters", tmp_path / "cache")
    assert not any((tmp_path / "cache" / "emnist-letters").iterdir())


def test_emnist_labels_outside_1_to_26_are_refused(monkeypatch, tmp_path, letters, online):
    images, labels = letters
    labels = labels.copy()
    labels[5] = 26  # stored as 27
    archive = tmp_path / "gzip.zip"
    md5 = emnist_zip(archive, images, labels)
    spec = named.SOURCES["emnist-letters"]
    monkeypatch.setitem(spec, "archive", {**spec["archive"], "url": archive.as_uri(), "md5": md5})
    with pytest.raises(MnistGanError, match="labels span 1-27; emnist-letters has labels 1-26"):
        load("emnist-letters", tmp_path / "cache")


# ------------------------------------------------------------------------------------------ class names

def test_class_names_resolve_by_name_or_number_and_refuse_unknown_ones():
    fashion = list(named.FASHION)
    assert class_index(fashion, "sneaker") == 7 and class_index(fashion, " Ankle Boot ") == 9
    assert class_index(fashion, "7") == 7 and class_index(list(named.DIGITS), "7") == 7
    with pytest.raises(MnistGanError, match="no class 'sneakers'; the classes are T-shirt/top, Trouser, .*Ankle boot"):
        class_index(fashion, "sneakers")
    assert names_for(named.FASHION, 10)[7] == "Sneaker" and names_for(named.FASHION, 3) == ["0", "1", "2"]
    assert names_for(None, 2) == ["0", "1"]


def test_an_image_folder_names_its_classes_by_its_sub_folders(tmp_path, mnist_5k):
    from PIL import Image

    for name, digit in (("circle", 0), ("stick", 1)):
        (tmp_path / name).mkdir()
        for index, image in enumerate(mnist_5k.images[mnist_5k.labels == digit][:3]):
            Image.fromarray(image.numpy()).save(tmp_path / name / f"{index}.png")
    dataset = load_dataset(DataConfig(data=str(tmp_path)))
    assert dataset.class_names == ("circle", "stick") == data_class_names(str(tmp_path))
    assert data_class_names(str(tmp_path / "circle")) is None and data_class_names("stacked-mnist") is None
