"""Grids of 28x28 images, written and read back in one place: the PNG tiles that training saves under a run's
samples, `generate` writes and `mnist-gan diagnose` re-reads, PADDING pixels apart."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from mnist_gan.data.images import to_uint8
from mnist_gan.io.files import atomic_write_bytes

PADDING = 2  # pixels between the images of a grid, and around them


def grid_size(count: int, nrow: int | None = None, padding: int = PADDING) -> tuple[int, int]:
    """(height, width) in pixels of a grid of `count` 28x28 images, nrow per row (default: square)."""
    nrow = nrow or max(1, math.isqrt(count - 1) + 1 if count else 1)  # ceil(sqrt(count)), exact for any count
    rows = max(1, math.ceil(count / nrow))
    return rows * (28 + padding) + padding, nrow * (28 + padding) + padding


def tile_origin(index: int, nrow: int, padding: int = PADDING) -> tuple[int, int]:
    """(top, left) pixel of the index-th image of a grid, nrow per row."""
    row, col = divmod(index, nrow)
    return padding + row * (28 + padding), padding + col * (28 + padding)


def grid_image(images: torch.Tensor | np.ndarray, nrow: int | None = None, padding: int = PADDING):
    """Tile images (N, 1, 28, 28) in [-1, 1] (or uint8 pixels (N, 28, 28)) into one PIL grayscale image, nrow per
    row (default: square); 3-channel images (N, 3, 28, 28) into a colour (RGB) one."""
    from PIL import Image

    pixels = images if isinstance(images, np.ndarray) else to_uint8(images).numpy()  # (N, 28, 28) or (N, 3, 28, 28)
    colour = pixels.ndim == 4
    if colour:
        pixels = pixels.transpose(0, 2, 3, 1)  # (N, 28, 28, 3), as PIL lays out RGB
    count = len(pixels)
    nrow = nrow or max(1, math.isqrt(count - 1) + 1 if count else 1)
    canvas = np.zeros(grid_size(count, nrow, padding) + ((3,) if colour else ()), dtype=np.uint8)
    for index, image in enumerate(pixels):
        top, left = tile_origin(index, nrow, padding)
        canvas[top: top + 28, left: left + 28] = image
    return Image.fromarray(canvas, mode="RGB" if colour else "L")


def read_grid(path: str | Path, count: int = 64, nrow: int = 8, padding: int = PADDING) -> np.ndarray:
    """The first `count` 28x28 tiles of a grayscale grid PNG that `save_grid` wrote with `nrow` images per row, as
    floats (count, 1, 28, 28) in [-1, 1]: `grid_image` inverted, up to its rounding to 8 bits."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)  # (H, W)
    rows = (pixels.shape[0] - padding) // (28 + padding)
    tiles = []
    for index in range(min(count, rows * nrow)):
        top, left = tile_origin(index, nrow, padding)
        tiles.append(pixels[top:top + 28, left:left + 28])
    return (np.stack(tiles)[:, None] / 127.5 - 1) if tiles else np.zeros((0, 1, 28, 28), np.float32)


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None, scale: int = 1, *,
              overwrite: bool = True) -> Path:
    """Write a PNG grid of images (N, 1, 28, 28) in [-1, 1] atomically; scale > 1 enlarges it for viewing.
    overwrite=False: refuse an existing file, even one created meanwhile."""
    from PIL import Image

    grid = grid_image(images, nrow)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue(), replace=overwrite)
    return Path(path)
