"""Images in memory: a data set of uint8 digits, the limits every reader holds it to, and the conversions between
pixels (uint8 0-255) and what the networks see (float in [-1, 1]), the random shift included."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mnist_gan.errors import MnistGanError
from mnist_gan.io.untrusted import CHUNK_BYTES

IMAGE_SIZE = 28
# Images one array or folder may hold: EMNIST ByClass, the largest 28x28 set, has 814,255; and the output of
# `generate -n 1000000` must load.
MAX_IMAGES = 1_000_000
# Labels are class numbers below this: EMNIST, the 28x28 set with the most classes, has 62. It bounds the feature
# classifier's head and a conditional model's embedding, which a label of 2**63 would otherwise size.
MAX_CLASSES = 1000
# A data file: MAX_IMAGES float64 images (6.3 GB) and their labels.
MAX_DATA_FILE_BYTES = 8 * 2**30
# The ranges stored images may use, as the names pixel_range returns; uint8 arrays are always pixels 0-255.
PIXEL_RANGES = ("[0, 255]", "[0, 1]", "[-1, 1]")


@dataclass
class ImageDataset:
    """Images (N, 28, 28) uint8 (or (N, C, 28, 28) with several channels) with labels (N,) int64 or None, plus
    where they came from and, where the source names them, what the classes are (label i is class_names[i])."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    source: str  # human-readable origin, e.g. "cache ~/.cache/mnist-gan/mnist (train split)"
    test_images: torch.Tensor | None = None  # held-out split, when the source has one
    test_labels: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None  # e.g. Fashion-MNIST's ("T-shirt/top", ..., "Ankle boot")
    base: ImageDataset | None = field(default=None, repr=False)  # the one-channel set a stacked set was drawn from

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return 1 if self.images.dim() == 3 else self.images.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if self.labels is not None and len(self.labels) else 0


def names_for(class_names, count: int) -> list[str]:
    """The names of `count` classes: class_names when it names exactly that many, else "0", "1", ..."""
    names = [str(name) for name in class_names or ()]
    return names if len(names) == count else [str(c) for c in range(count)]


def class_index(class_names: list[str], name: str, flag: str = "--class") -> int:
    """The label of the class called `name` among class_names (case and outer spaces ignored; failing a name, a
    label number is taken as it is); an unknown one is a MnistGanError naming the valid ones."""
    wanted = name.strip().casefold()
    for label, known in enumerate(class_names):
        if known.casefold() == wanted:
            return label
    if wanted.isdigit() and int(wanted) < len(class_names):
        return int(wanted)
    raise MnistGanError(f"{flag}: no class {name!r}; the classes are {', '.join(class_names)}")


def as_images(images: np.ndarray) -> torch.Tensor:
    """A writable uint8 tensor (N, 28, 28) of its own (arrays read from a buffer are read-only)."""
    return torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))


def as_labels(labels: np.ndarray | None) -> torch.Tensor | None:
    """Labels (N,) as an int64 tensor of its own, or None."""
    return None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """Map uint8 images (N, 28, 28) to float (N, 1, 28, 28) in [-1, 1], as the tutorial does; (N, C, 28, 28) keep
    their channels."""
    images = images_uint8.unsqueeze(1) if images_uint8.dim() == 3 else images_uint8
    return images.float().sub_(127.5).div_(127.5)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map float images in [-1, 1], shape (N, 1, 28, 28) or (N, 28, 28), to uint8 (N, 28, 28); (N, C, 28, 28)
    with several channels keep them."""
    images = images.detach().float().cpu()
    if images.dim() == 4 and images.shape[1] == 1:
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


def pixel_range(array: np.ndarray, name: str) -> str:
    """Which of PIXEL_RANGES the numeric images (N, ...) are stored in, judged from their minimum and maximum
    (read in chunks); NaN, infinity or values in none of the ranges is MnistGanError."""
    low, high = math.inf, -math.inf
    for chunk in row_chunks(array):
        chunk = chunk.astype(np.float64)
        if not np.isfinite(chunk).all():
            raise MnistGanError(f"{name}: images contain NaN or infinite values")
        low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if low >= -1 and high <= 1 and low < 0:
        return "[-1, 1]"
    if low >= 0 and high <= 1:
        return "[0, 1]"
    if low >= 0 and high <= 255:
        return "[0, 255]"
    raise MnistGanError(f"{name}: pixel values span [{low}, {high}]; expected {', '.join(PIXEL_RANGES[:-1])} or "
                        f"{PIXEL_RANGES[-1]}")


def row_chunks(array: np.ndarray) -> list[np.ndarray]:
    """Views of array's rows, each at most CHUNK_BYTES once converted to float64."""
    rows = max(1, CHUNK_BYTES // max(1, array[:1].nbytes * 8 // array.itemsize))  # rows per chunk as float64
    return [array[start:start + rows] for start in range(0, len(array), rows)]
