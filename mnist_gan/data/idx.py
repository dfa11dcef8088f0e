"""IDX files, MNIST's own format (gzip or raw), and directories of them (train-*/t10k-* images and labels).

A file's header is checked (shape, MAX_IMAGES, the file's size) before its body is read, and a gzip file is
inflated only as far as its header declares.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import zlib
from pathlib import Path

import numpy as np

from mnist_gan.data.images import (
    IMAGE_SIZE,
    MAX_DATA_FILE_BYTES,
    MAX_IMAGES,
    ImageDataset,
    as_images,
    as_labels,
)
from mnist_gan.errors import MnistGanError, clip
from mnist_gan.io.untrusted import check_inflation, open_regular, read_exactly, read_into

logger = logging.getLogger(__name__)

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
# How far an IDX file is read past the end its header declares, to tell trailing bytes and damaged gzip data
# (refused as such) from a stream that inflates on and on (refused there).
IDX_TRAILING_PROBE_BYTES = 2**20


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


def find_idx(directory: Path, prefix: str) -> Path | None:
    """The first file in directory named prefix*.gz, else prefix* (uncompressed), or None."""
    for suffix in (".gz", ""):
        for candidate in sorted(directory.glob(f"{prefix}*{suffix}")):
            if candidate.is_file() and (suffix or not candidate.name.endswith(".gz")):
                return candidate
    return None


def _load_idx_pair(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    prefix = "train" if split == "train" else "t10k"
    images_path = find_idx(directory, f"{prefix}-images")
    labels_path = find_idx(directory, f"{prefix}-labels")
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
        logger.warning(f"{directory} holds only the test split ({len(test[0])} images): training on it, "
                       "no held-out split")
        return ImageDataset(as_images(test[0]), as_labels(test[1]), name, f"{directory} (test split)")
    return ImageDataset(as_images(train[0]), as_labels(train[1]), name, f"{directory} (train split)",
                        as_images(test[0]) if test else None, as_labels(test[1]) if test else None)

