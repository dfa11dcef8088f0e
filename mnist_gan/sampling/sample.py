"""Sampling from a trained G: grids (laid out by mnist_gan.sampling.grids), array files, per-image PNGs, the
tutorial's D-ranked "nice" mode, and walks between latent points (interpolation strips and animations)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_gan.data.images import to_uint8
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import sample_z, score_each
from mnist_gan.io.files import atomic_directory, atomic_path, atomic_write_bytes
from mnist_gan.sampling.grids import grid_image, grid_size, save_grid
from mnist_gan.settings.config import ModelConfig

NICE_FACTOR = 20  # the tutorial draws 20x as many samples and keeps the ones D likes best
CHUNK = 1000  # images drawn and written at a time: memory stays flat whatever -n is

# Upper bounds, checked before anything is allocated.
MAX_SAMPLES = 10_000_000  # an npz of N 28x28 uint8 images holds 784*N bytes: 7.8 GB, far past what FID needs
MAX_NICE_SAMPLES = 10_000  # --nice holds 20 float candidates per kept image (63 KB each): 627 MB at this bound
MAX_DIR_IMAGES = 1_000_000  # one PNG file per image: past a million, listing the folder stalls most tools
MAX_IMAGE_PIXELS = 89_478_485  # PIL's decompression-bomb threshold: a bigger PNG warns or fails where it is read
MAX_ANIMATION_PIXELS = 400_000_000  # a GIF's frames are all held in memory at a byte a pixel: 400 MB
MAX_SCALE = 64  # a 28-pixel digit enlarged 64x is 1,792 pixels tall, a whole screen
MAX_WALK_IMAGES = 10_000  # G draws a whole walk (rows x steps) in one batch: 31 MB of float images


def sample_labels(n: int, model_config: ModelConfig, digit: int | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Labels (n,) for a conditional G: all `digit`, or every class in turn (0, 1, ..., 9, 0, ...); None for an
    unconditional G, which refuses a digit."""
    if not model_config.conditional:
        if digit is not None and model_config.self_condition:
            raise MnistGanError(f"--digit: this model is self-conditioned on {model_config.self_condition} clusters "
                                "it found without labels, not on digits; it draws each cluster in proportion itself")
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
def generate(G: nn.Module, model_config: ModelConfig, n: int, seed: int = 0, batch_size: int = CHUNK,
             device: torch.device | str = "cpu", digit: int | None = None) -> torch.Tensor:
    """Return n images in [-1, 1] (G's range), shape (n, 1, 28, 28), drawn with G in inference mode.

    A conditional G draws `digit`, or when None every class in turn (n // 10 of each, in order 0, 1, ..., 9)."""
    chunks = list(generate_chunks(G, model_config, n, seed, batch_size, device, digit))
    return torch.cat(chunks) if chunks else torch.empty(0, model_config.channels, 28, 28)


def generate_chunks(G: nn.Module, model_config: ModelConfig, n: int, seed: int = 0, batch_size: int = CHUNK,
                    device: torch.device | str = "cpu", digit: int | None = None) -> Iterator[torch.Tensor]:
    """Yield the images `generate` returns, (<= batch_size, 1, 28, 28) at a time on the CPU, so that any n fits in
    memory; the concatenated chunks equal generate(...) exactly."""
    sample_labels(1, model_config, digit)  # a bad --digit stops before the first image
    rng = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    try:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            labels = sample_labels(count, model_config, digit, device)  # (count,): class i of all n is i % C
            if labels is not None and digit is None:
                labels = (labels + start) % model_config.num_classes
            with torch.no_grad():  # not around the yield: the caller's code between chunks keeps its grad mode
                images = G(sample_z(count, model_config, rng, device), labels).float().cpu()  # (count, 1, 28, 28)
            yield images
    finally:
        G.train(was_training)


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
    """Return images (rows, steps, 1, 28, 28) in [-1, 1] walking from one random z to another in `steps` steps
    (see latent_walk). A conditional G walks its label too, from `from_digit` to `to_digit` (either defaults to
    the other; both None: the walk keeps the classes 0, 1, ... row by row)."""
    check_walk(steps, rows)
    if (from_digit is not None or to_digit is not None) and not model_config.conditional:
        raise MnistGanError("--from-digit/--to-digit need a conditional model (trained with --conditional)")
    rng = torch.Generator().manual_seed(seed)
    z0, z1 = sample_z(rows, model_config, rng), sample_z(rows, model_config, rng)  # (R, z_dim) each
    first = last = None
    if model_config.conditional:
        start = from_digit if from_digit is not None else to_digit
        end = to_digit if to_digit is not None else from_digit
        first, last = sample_labels(rows, model_config, start), sample_labels(rows, model_config, end)  # (R,) each
    z, labels = latent_walk(model_config, steps, z0, z1, first, last)  # (R, T, z_dim), (R, T, C) or None
    if labels is not None:
        labels = labels.flatten(0, 1).to(device)  # (R*T, C)
    was_training = G.training
    G.eval()
    images = G(z.flatten(0, 1).to(device), labels).float().cpu()  # (R*T, 1, 28, 28)
    G.train(was_training)
    return images.view(rows, steps, 1, 28, 28)


def latent_walk(model_config: ModelConfig, steps: int, z0: torch.Tensor, z1: torch.Tensor,
                first: torch.Tensor | None = None, last: torch.Tensor | None = None):
    """The walks from rows z0 to rows z1 (B, z_dim) in `steps` steps, (B, steps, z_dim): along a great circle
    (slerp) for Gaussian z, which keeps the norms the prior gives, a straight line for uniform z, which stays inside
    the cube; and a conditional G's labels, classes `first` to `last` (B,), blended alike as soft labels
    (B, steps, C) (None without labels)."""
    t = torch.linspace(0, 1, steps)  # (T,)
    if model_config.z_distribution == "normal":
        z = slerp(z0, z1, t)  # (B, T, z_dim)
    else:
        z = torch.lerp(z0[:, None], z1[:, None], t[None, :, None])
    if first is None or last is None:
        return z, None
    one_hot_first = torch.nn.functional.one_hot(first, model_config.num_classes).float()[:, None]  # (B, 1, C)
    one_hot_last = torch.nn.functional.one_hot(last, model_config.num_classes).float()[:, None]
    return z, torch.lerp(one_hot_first, one_hot_last, t[None, :, None])  # (B, T, C)


def check_walk(steps: int, rows: int, scale: int = 1, gif: bool = False) -> None:
    """Raise MnistGanError unless a walk of this size can be drawn and written (see the MAX_ bounds)."""
    if steps < 2 or rows < 1:
        raise MnistGanError(f"interpolation needs --steps >= 2 and --rows >= 1, got {steps} and {rows}")
    if not 1 <= scale <= MAX_SCALE:
        raise MnistGanError(f"--scale must be in 1..{MAX_SCALE}, got {scale}")
    if steps * rows > MAX_WALK_IMAGES:
        raise MnistGanError(f"--steps {steps} x --rows {rows} is {steps * rows:,} images; at most "
                            f"{MAX_WALK_IMAGES:,} (MAX_WALK_IMAGES)")
    if gif:  # frames: the steps forth and back; each the walks side by side
        frames, (height, width) = max(1, 2 * steps - 2), grid_size(rows, rows)
        pixels, limit, name = frames * height * width * scale ** 2, MAX_ANIMATION_PIXELS, "MAX_ANIMATION_PIXELS"
    else:
        height, width = grid_size(rows * steps, steps)
        pixels, limit, name = height * width * scale ** 2, MAX_IMAGE_PIXELS, "MAX_IMAGE_PIXELS"
    if pixels > limit:
        raise MnistGanError(f"that {'animation' if gif else 'strip'} would be {pixels:,} pixels; at most {limit:,} "
                            f"({name}): lower --steps, --rows or --scale")


def save_interpolation(images: torch.Tensor, path: str | Path, scale: int = 2, duration_ms: int = 120, *,
                       overwrite: bool = True) -> Path:
    """Write a walk (rows, steps, 1, 28, 28) as a PNG strip (a row per walk) or, for a .gif path, an animation
    whose frames are the steps (the walks side by side), played forth and back. overwrite=False: refuse (even
    one created meanwhile by another process) an existing file."""
    from PIL import Image

    path = Path(path)
    rows, steps = images.shape[:2]
    check_walk(steps, rows, scale, gif=path.suffix.lower() == ".gif")
    if path.suffix.lower() != ".gif":
        return save_grid(images.flatten(0, 1), path, nrow=steps, scale=scale, overwrite=overwrite)
    frames = []
    for step in list(range(steps)) + list(range(steps - 2, 0, -1)):
        frame = grid_image(images[:, step], nrow=rows)
        frames.append(frame.resize((frame.width * scale, frame.height * scale), Image.Resampling.NEAREST))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    atomic_write_bytes(path, buffer.getvalue(), replace=overwrite)
    return path


def generate_nice(G: nn.Module, D: nn.Module | None, model_config: ModelConfig, n: int, seed: int = 0,
                  factor: int = NICE_FACTOR, device: torch.device | str = "cpu",
                  digit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw factor*n samples and return the n that D scores highest, with D's probabilities (the sigmoid of its
    outputs), best first."""
    images, outputs = nicest(G, D, model_config, n, seed, factor, device, digit)
    return images, torch.sigmoid(outputs)


@torch.no_grad()
def nicest(G: nn.Module, D: nn.Module | None, model_config: ModelConfig, n: int, seed: int = 0,
           factor: int = NICE_FACTOR, device: torch.device | str = "cpu",
           digit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images `generate_nice` returns (n, 1, 28, 28), best first, with D's raw output of each (n,), for a
    reader that scores them its own way (the loss's reading of D, as `mnist-gan serve` shows)."""
    if n > MAX_NICE_SAMPLES:
        raise MnistGanError(f"--nice keeps at most {MAX_NICE_SAMPLES:,} images (MAX_NICE_SAMPLES: it holds "
                            f"{factor}x as many in memory), got -n {n:,}")
    if D is None:
        raise MnistGanError("--nice ranks samples with the discriminator, and a generator export has none: "
                            "pass a checkpoint (.ckpt) or a run directory instead")
    candidates = generate(G, model_config, n * factor, seed=seed, device=device, digit=digit)
    labels = sample_labels(n * factor, model_config, digit, device)
    label_chunks = [None] * len(candidates.split(1000)) if labels is None else labels.split(1000)
    was_training = D.training
    D.eval()
    outputs = torch.cat([score_each(D, chunk.to(device), chunk_labels).float().cpu()
                         for chunk, chunk_labels in zip(candidates.split(1000), label_chunks, strict=True)])
    D.train(was_training)
    # Ranked by the probability, as `generate --nice` always has: where the sigmoid saturates, outputs tie.
    order = torch.argsort(torch.sigmoid(outputs), descending=True)[:n]
    return candidates[order], outputs[order]


def check_output(n: int, fmt: str, nrow: int | None = None, nice: bool = False) -> None:
    """Raise MnistGanError unless n images can be written as `fmt` (see the MAX_ bounds); allocates nothing."""
    if n <= 0:
        raise MnistGanError(f"-n must be positive, got {n}")
    if nrow is not None and nrow <= 0:
        raise MnistGanError(f"--nrow must be positive, got {nrow}")
    limit, name = {"dir": (MAX_DIR_IMAGES, "MAX_DIR_IMAGES")}.get(fmt, (MAX_SAMPLES, "MAX_SAMPLES"))
    if nice:
        limit, name = MAX_NICE_SAMPLES, "MAX_NICE_SAMPLES"
    if n > limit:
        raise MnistGanError(f"-n {n:,} is more than {limit:,} images ({name}) for {'--nice' if nice else fmt}")
    if fmt == "png":
        height, width = grid_size(n, nrow)
        if height * width > MAX_IMAGE_PIXELS:
            raise MnistGanError(f"a grid of {n:,} images{f' at --nrow {nrow:,}' if nrow else ''} would be "
                                f"{width:,}x{height:,} pixels, over {MAX_IMAGE_PIXELS:,} (MAX_IMAGE_PIXELS); "
                                "use --format npz or dir for many images")


def save_images(images: torch.Tensor, path: str | Path, fmt: str, nrow: int | None = None, *,
                overwrite: bool = True) -> Path:
    """Save images (N, 1, 28, 28) in [-1, 1] as a PNG grid ('png'), a uint8 (N, 28, 28) array ('npz', key
    'images'), or one PNG per image in a new directory ('dir')."""
    return write_images(images.split(CHUNK), len(images), path, fmt, nrow, overwrite=overwrite)


def write_images(chunks: Iterable[torch.Tensor], n: int, path: str | Path, fmt: str, nrow: int | None = None, *,
                 overwrite: bool = True) -> Path:
    """Write n images arriving in chunks ((B, 1, 28, 28) in [-1, 1]) as `save_images` does, holding one chunk at a
    time for 'npz' and 'dir'. The output appears whole or not at all: a file is renamed into place, a 'dir' is
    built in a hidden folder beside it; overwrite=False refuses an existing file, even one created meanwhile."""
    path = Path(path)
    check_output(n, fmt, nrow)
    if fmt == "png":
        pixels = np.concatenate([to_uint8(chunk).numpy() for chunk in chunks])  # (n, 28, 28): bounded by the grid
        return save_grid(pixels, path, nrow, overwrite=overwrite)
    if fmt == "npz":
        with atomic_path(path, replace=overwrite) as tmp:
            _write_npz(chunks, n, tmp)
        return path
    if fmt == "dir":
        from PIL import Image

        width = max(4, len(str(n - 1)))
        with atomic_directory(path) as tmp:
            index = 0
            for chunk in chunks:
                for image in to_uint8(chunk).numpy():  # (28, 28), or (3, 28, 28) in colour
                    image = image.transpose(1, 2, 0) if image.ndim == 3 else image
                    Image.fromarray(image, mode="RGB" if image.ndim == 3 else "L").save(
                        tmp / f"{index:0{width}d}.png", format="PNG")
                    index += 1
        return path
    raise MnistGanError(f"unknown format {fmt!r}; choose png, npz or dir")


def _write_npz(chunks: Iterable[torch.Tensor], n: int, path: Path) -> None:
    """Stream n images into an npz that np.load reads as np.savez_compressed(path, images=...) would write it."""
    import zipfile

    written, pending = 0, iter(chunks)
    first = next(pending, None)  # its shape says the header's: (28, 28), or (3, 28, 28) in colour
    shape = (n, *to_uint8(first[:1]).shape[1:]) if first is not None else (n, 28, 28)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("images.npy", "w", force_zip64=True) as member:  # zip64: over 4 GB past 5.4M images
        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for chunk in itertools.chain([] if first is None else [first], pending):
            pixels = to_uint8(chunk).numpy()  # (B, 28, 28) or (B, 3, 28, 28), C order
            member.write(pixels.tobytes())
            written += len(pixels)
    if written != n:
        raise ValueError(f"_write_npz: promised {n} images, got {written}")


def save_gif(frame_paths: list[Path], path: str | Path, duration_ms: int = 200) -> Path | None:
    """Assemble PNG frames into an animated GIF (the last frame held longer); None if there are no frames."""
    from PIL import Image

    if not frame_paths:
        return None
    frames = [Image.open(p) for p in frame_paths]
    frames = [frame.convert("RGB" if frame.mode == "RGB" else "L") for frame in frames]
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 5]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
