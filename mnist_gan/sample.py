"""Sampling from a trained G: grids, array files, per-image PNGs, and the tutorial's D-ranked "nice" mode."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_gan.config import ModelConfig
from mnist_gan.data import to_uint8
from mnist_gan.errors import MnistGanError
from mnist_gan.files import atomic_path, atomic_write_bytes
from mnist_gan.models import sample_z

NICE_FACTOR = 20  # the tutorial draws 20x as many samples and keeps the ones D likes best


@torch.no_grad()
def generate(G: nn.Module, model_config: ModelConfig, n: int, seed: int = 0, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Return n images in [-1, 1] (G's range), shape (n, 1, 28, 28), drawn with G in inference mode."""
    rng = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    chunks = [G(sample_z(min(batch_size, n - start), model_config, rng, device)).float().cpu()
              for start in range(0, n, batch_size)]
    G.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, 1, 28, 28)


@torch.no_grad()
def generate_nice(G: nn.Module, D: nn.Module | None, model_config: ModelConfig, n: int, seed: int = 0,
                  factor: int = NICE_FACTOR, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw factor*n samples and return the n that D scores highest, with D's probabilities, best first."""
    if D is None:
        raise MnistGanError("--nice ranks samples with the discriminator, and a generator export has none: "
                            "pass a checkpoint (.ckpt) or a run directory instead")
    candidates = generate(G, model_config, n * factor, seed=seed, device=device)
    was_training = D.training
    D.eval()
    scores = torch.cat([torch.sigmoid(D(chunk.to(device)).float()).cpu() for chunk in candidates.split(1000)])
    D.train(was_training)
    order = torch.argsort(scores, descending=True)[:n]
    return candidates[order], scores[order]


def grid_image(images: torch.Tensor, nrow: int | None = None, padding: int = 2):
    """Tile images (N, 1, 28, 28) in [-1, 1] into one PIL grayscale image, nrow per row (default: square)."""
    from PIL import Image

    pixels = to_uint8(images).numpy()  # (N, 28, 28)
    count = len(pixels)
    nrow = nrow or max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / nrow))
    height, width = pixels.shape[1:] if count else (28, 28)
    canvas = np.zeros((rows * (height + padding) + padding, nrow * (width + padding) + padding), dtype=np.uint8)
    for index, image in enumerate(pixels):
        row, col = divmod(index, nrow)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        canvas[top: top + height, left: left + width] = image
    return Image.fromarray(canvas, mode="L")


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Write a PNG grid of images (N, 1, 28, 28) in [-1, 1] atomically; scale > 1 enlarges it for viewing."""
    from PIL import Image

    grid = grid_image(images, nrow)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def save_images(images: torch.Tensor, path: str | Path, fmt: str, nrow: int | None = None) -> Path:
    """Save images (N, 1, 28, 28) in [-1, 1] as a PNG grid ('png'), a uint8 (N, 28, 28) array ('npz', key
    'images'), or one PNG per image in a new directory ('dir')."""
    path = Path(path)
    if fmt == "png":
        return save_grid(images, path, nrow)
    if fmt == "npz":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, images=to_uint8(images).numpy())
        return path
    if fmt == "dir":
        from PIL import Image

        if path.exists() and not path.is_dir():
            raise MnistGanError(f"{path}: exists and is not a directory; choose another --out")
        if path.exists() and any(path.iterdir()):
            raise MnistGanError(f"{path}: directory exists and is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        width = max(4, len(str(len(images) - 1)))
        for index, image in enumerate(to_uint8(images).numpy()):
            buffer = io.BytesIO()
            Image.fromarray(image, mode="L").save(buffer, format="PNG")
            atomic_write_bytes(path / f"{index:0{width}d}.png", buffer.getvalue())
        return path
    raise MnistGanError(f"unknown format {fmt!r}; choose png, npz or dir")


def save_gif(frame_paths: list[Path], path: str | Path, duration_ms: int = 200) -> Path | None:
    """Assemble PNG frames into an animated GIF (the last frame held longer); None if there are no frames."""
    from PIL import Image

    if not frame_paths:
        return None
    frames = [Image.open(p).convert("L") for p in frame_paths]
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 5]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
