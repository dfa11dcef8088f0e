""".npz and .npy image arrays: a data set (`load_npz`) or images to evaluate (`load_images`).

Every array's header is checked (dtype, shape, count, and labels against images) before any data is read, and
stored pixels are converted in pieces, so that a large float64 array is never held twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mnist_gan.data.images import (
    IMAGE_SIZE,
    MAX_CLASSES,
    MAX_DATA_FILE_BYTES,
    MAX_IMAGES,
    ImageDataset,
    as_images,
    as_labels,
    pixel_range,
    row_chunks,
    to_float,
)
from mnist_gan.errors import MnistGanError, quote
from mnist_gan.io.headers import StoredArray, open_arrays
from mnist_gan.io.untrusted import CHUNK_BYTES

# How each stored range maps to pixels 0-255: (x + offset) * scale.
TO_PIXELS = {"[-1, 1]": (1.0, 127.5), "[0, 1]": (0.0, 255.0), "[0, 255]": (0.0, 1.0)}
# How each stored range maps to [-1, 1]: x / divisor - shift (in float32, exactly as x, 2x - 1, x / 127.5 - 1).
TO_UNIT = {"[-1, 1]": (1.0, 0.0), "[0, 1]": (0.5, 1.0), "[0, 255]": (127.5, 1.0)}


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
                return ImageDataset(as_images(loaded[0][0]), as_labels(loaded[0][1]), path.stem, str(path),
                                    None if test[0] is None else as_images(test[0]), as_labels(test[1]))
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
        raise MnistGanError(f"{array.name}: holds no images")
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



def _to_uint8(stored: StoredArray) -> np.ndarray:
    """Read stored images and map them to uint8 (N, 28, 28): pixels 0-255, or floats in [0, 1] or [-1, 1]."""
    array = stored.read()
    array = array.reshape(len(array), IMAGE_SIZE, IMAGE_SIZE)
    if array.dtype == np.uint8:
        return array
    offset, scale = TO_PIXELS[pixel_range(array, stored.name)]
    out = np.empty(array.shape, np.uint8)
    start = 0
    for chunk in row_chunks(array):  # converted in pieces: a float64 copy of a large array never exists
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



def load_images(path: str | Path, n: int | None = None) -> torch.Tensor:
    """Images from an .npy or .npz file (key 'images', else its only array) as float (N, 1, 28, 28) in [-1, 1].

    uint8 arrays are pixels 0-255 (what `mnist-gan generate --format npz` writes); float arrays may be in
    [-1, 1], [0, 1] or [0, 255]. With n, only the first n images are read. The header is checked (dtype, shape,
    count) before any data is read; damaged data (a CRC mismatch included) is MnistGanError.
    """
    path = Path(path)
    with open_arrays(path, "image array", MAX_DATA_FILE_BYTES, MAX_DATA_FILE_BYTES) as arrays:
        if "images" not in arrays and len(arrays) != 1:
            names = ", ".join(quote(key) for key in sorted(arrays)[:10])
            raise MnistGanError(f"{path}: holds [{names}]; expected one array or one named 'images'")
        stored = arrays["images" if "images" in arrays else next(iter(arrays))]
        _check_images_header(stored)
        array = stored.read(rows=n)
    array = array.reshape(len(array), 28, 28)
    if array.dtype == np.uint8:
        return to_float(torch.from_numpy(np.ascontiguousarray(array)))
    divisor, shift = TO_UNIT[pixel_range(array, str(path))]
    images = torch.empty(len(array), 1, 28, 28)  # (N, 1, 28, 28), filled in pieces: no float64 copy of it all
    rows = max(1, CHUNK_BYTES // (28 * 28 * 8))
    for start in range(0, len(array), rows):
        chunk = torch.from_numpy(array[start:start + rows].astype(np.float32))
        images[start:start + rows, 0] = chunk / divisor - shift
    return images
