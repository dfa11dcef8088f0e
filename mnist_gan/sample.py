"""Sampling from a trained G: grids, array files, per-image PNGs, the tutorial's D-ranked "nice" mode, and walks
between latent points (interpolation strips and animations)."""

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


def sample_labels(n: int, model_config: ModelConfig, digit: int | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Labels (n,) for a conditional G: all `digit`, or every class in turn (0, 1, ..., 9, 0, ...); None for an
    unconditional G, which refuses a digit."""
    if not model_config.conditional:
        if digit is not None:
            raise MnistGanError("--digit needs a conditional model (trained with --conditional); this one is not")
        return None
    if digit is not None and not 0 <= digit < model_config.num_classes:
        raise MnistGanError(f"--digit must be in 0..{model_config.num_classes - 1}, got {digit}")
    labels = torch.full((n,), digit) if digit is not None else torch.arange(n) % model_config.num_classes
    return labels.to(device)


def grid_inputs(n: int, model_config: ModelConfig, seed: int, device: torch.device | str = "cpu"):
    """Fixed (z, labels) for the training grids: n noise vectors, or for a conditional G one row of 8 per class,
    the same 8 noise vectors in every row (so a column keeps its style)."""
    rng = torch.Generator().manual_seed(seed)
    if not model_config.conditional:
        return sample_z(n, model_config, rng, device), None
    classes = model_config.num_classes
    z = sample_z(8, model_config, rng, device).repeat(classes, 1)  # (8C, z_dim)
    return z, torch.arange(classes, device=device).repeat_interleave(8)  # (8C,)


@torch.no_grad()
def generate(G: nn.Module, model_config: ModelConfig, n: int, seed: int = 0, batch_size: int = 1000,
             device: torch.device | str = "cpu", digit: int | None = None) -> torch.Tensor:
    """Return n images in [-1, 1] (G's range), shape (n, 1, 28, 28), drawn with G in inference mode.

    A conditional G draws `digit`, or when None every class in turn (n // 10 of each, in order 0, 1, ..., 9)."""
    rng = torch.Generator().manual_seed(seed)
    labels = sample_labels(n, model_config, digit, device)
    was_training = G.training
    G.eval()
    chunks = [G(sample_z(min(batch_size, n - start), model_config, rng, device),
                None if labels is None else labels[start:start + batch_size]).float().cpu()
              for start in range(0, n, batch_size)]
    G.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, 1, 28, 28)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake; White 2016) between rows z0, z1 (B, D) at fractions t (T,) -> (B, T, D)."""
    cos = torch.nn.functional.cosine_similarity(z0, z1, dim=1).clamp(-1 + 1e-7, 1 - 1e-7)[:, None, None]  # (B,1,1)
    omega = torch.arccos(cos)
    t = t[None, :, None]  # (1, T, 1)
    return (torch.sin((1 - t) * omega) * z0[:, None] + torch.sin(t * omega) * z1[:, None]) / torch.sin(omega)


@torch.no_grad()
def interpolate(G: nn.Module, model_config: ModelConfig, steps: int = 10, rows: int = 1, seed: int = 0,
                from_digit: int | None = None, to_digit: int | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Return images (rows, steps, 1, 28, 28) in [-1, 1] walking from one random z to another in `steps` steps.

    Gaussian z walk along a great circle (slerp), which keeps them at the norms the prior gives; uniform z walk
    a straight line, which stays inside the cube. A conditional G walks its label too, from `from_digit` to
    `to_digit` (either defaults to the other; both None: the walk keeps the classes 0, 1, ... row by row)."""
    if steps < 2 or rows < 1:
        raise MnistGanError(f"interpolation needs --steps >= 2 and --rows >= 1, got {steps} and {rows}")
    if (from_digit is not None or to_digit is not None) and not model_config.conditional:
        raise MnistGanError("--from-digit/--to-digit need a conditional model (trained with --conditional)")
    rng = torch.Generator().manual_seed(seed)
    z0, z1 = sample_z(rows, model_config, rng), sample_z(rows, model_config, rng)  # (R, z_dim) each
    t = torch.linspace(0, 1, steps)
    if model_config.z_distribution == "normal":
        z = slerp(z0, z1, t)  # (R, T, z_dim)
    else:
        z = torch.lerp(z0[:, None], z1[:, None], t[None, :, None])
    labels = None
    if model_config.conditional:
        start = from_digit if from_digit is not None else to_digit
        end = to_digit if to_digit is not None else from_digit
        first = sample_labels(rows, model_config, start)  # (R,)
        last = sample_labels(rows, model_config, end)
        one_hot_first = torch.nn.functional.one_hot(first, model_config.num_classes).float()[:, None]  # (R, 1, C)
        one_hot_last = torch.nn.functional.one_hot(last, model_config.num_classes).float()[:, None]
        labels = torch.lerp(one_hot_first, one_hot_last, t[None, :, None]).flatten(0, 1).to(device)  # (R*T, C)
    was_training = G.training
    G.eval()
    images = G(z.flatten(0, 1).to(device), labels).float().cpu()  # (R*T, 1, 28, 28)
    G.train(was_training)
    return images.view(rows, steps, 1, 28, 28)


def save_interpolation(images: torch.Tensor, path: str | Path, scale: int = 2, duration_ms: int = 120) -> Path:
    """Write a walk (rows, steps, 1, 28, 28) as a PNG strip (a row per walk) or, for a .gif path, an animation
    whose frames are the steps (the walks side by side), played forth and back."""
    from PIL import Image

    path = Path(path)
    rows, steps = images.shape[:2]
    if path.suffix.lower() != ".gif":
        return save_grid(images.flatten(0, 1), path, nrow=steps, scale=scale)
    frames = []
    for step in list(range(steps)) + list(range(steps - 2, 0, -1)):
        frame = grid_image(images[:, step], nrow=rows)
        frames.append(frame.resize((frame.width * scale, frame.height * scale), Image.Resampling.NEAREST))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    atomic_write_bytes(path, buffer.getvalue())
    return path


@torch.no_grad()
def generate_nice(G: nn.Module, D: nn.Module | None, model_config: ModelConfig, n: int, seed: int = 0,
                  factor: int = NICE_FACTOR, device: torch.device | str = "cpu",
                  digit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw factor*n samples and return the n that D scores highest, with D's probabilities, best first."""
    if D is None:
        raise MnistGanError("--nice ranks samples with the discriminator, and a generator export has none: "
                            "pass a checkpoint (.ckpt) or a run directory instead")
    candidates = generate(G, model_config, n * factor, seed=seed, device=device, digit=digit)
    labels = sample_labels(n * factor, model_config, digit, device)
    label_chunks = [None] * len(candidates.split(1000)) if labels is None else labels.split(1000)
    was_training = D.training
    D.eval()
    scores = torch.cat([torch.sigmoid(D(chunk.to(device), chunk_labels).float()).cpu()
                        for chunk, chunk_labels in zip(candidates.split(1000), label_chunks, strict=True)])
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
