"""The tutorial notebook's helpers: its scale, its training runs, and the figures it shows.

gan_tutorial.ipynb (both editions, built by build.py from cells.py) imports this module from beside itself.
Like the notebook it calls only mnist-gan's public API: grids are tiled by `mnist_gan.grid_image` and loss curves
drawn by `mnist_gan.plot_losses`, the same pictures a run writes.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image
from scipy.special import xlogy

from mnist_gan import (
    DataConfig,
    MnistGanError,
    RunConfig,
    grid_image,
    load_dataset,
    plot_losses,
    sample_z,
    train,
)

SMALL = os.environ.get("MNIST_GAN_TUTORIAL_SCALE", "full") == "small"  # small: every training a few iterations
DATA = os.environ.get("MNIST_GAN_TUTORIAL_DATA", "mnist")  # mnist (downloaded once), or an IDX directory, .npz...
# Part 6's second data set: fashion-mnist (Debian's dataset-fashion-mnist offline, else downloaded once), or a path
FASHION = os.environ.get("MNIST_GAN_TUTORIAL_FASHION", "fashion-mnist")
RUNS = Path("runs/tutorial")  # under the notebook's working directory


# ------------------------------------------------------------------------------------------- part 1: densities
def normal(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """The density of N(mean, std²) at x."""
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def kl(p: np.ndarray, q: np.ndarray, dx: float) -> float:
    """KL(p || q) of two densities sampled on a grid of spacing dx."""
    return np.sum(xlogy(p, p) - xlogy(p, q)) * dx  # 0 log 0 = 0


# ------------------------------------------------------------------------------------------- training runs
def budget(config: RunConfig, minutes: float | None = None, iterations: int | None = None,
           small_iterations: int = 6) -> RunConfig:
    """`config` (changed in place) set to train on DATA, with one checkpoint at the end. Full size: stop after
    `minutes` or `iterations`; small: after `small_iterations`, whatever the full size says."""
    config.data.data = DATA
    config.train.iterations = small_iterations if SMALL else iterations
    config.train.max_minutes = None if SMALL else minutes
    config.train.checkpoint_every = 0  # one checkpoint, at the end
    return config


def run(config: RunConfig, name: str, dataset):
    """Train `config` on `dataset` into runs/tutorial/<name>, replacing what an earlier run of the notebook left
    there; print how long it took and return train()'s result."""
    started = time.perf_counter()
    result = train(config, RUNS / name, overwrite=True, dataset=dataset, progress=False)
    print(f"{name}: {result.iteration} iterations in {time.perf_counter() - started:.0f} s")
    return result


def saved_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(iteration, path) of each checkpoint a run kept, oldest first."""
    paths = sorted((Path(run_dir) / "checkpoints").glob("iter_*.ckpt"))
    return [(int(path.stem.removeprefix("iter_")), path) for path in paths]


def generator_gradient_norm(G: torch.nn.Module, D: torch.nn.Module, model_config, loss) -> tuple[float, float]:
    """(|d loss / d G's weights|, mean D(G(z))) on a batch of fakes, `loss` a function of D's logits; G in
    training mode as in the G step (on a copy: G stays as it is)."""
    G = copy.deepcopy(G).train()
    logits = D(G(sample_z(32 if SMALL else 256, model_config, torch.Generator().manual_seed(0))))
    grads = torch.autograd.grad(loss(logits), list(G.parameters()))
    return torch.sqrt(sum(g.pow(2).sum() for g in grads)).item(), torch.sigmoid(logits).mean().item()


# ------------------------------------------------------------------------------------------- part 6: your images
def fashion_or_digits(digits):
    """(name, data set) of FASHION, or ("digits", `digits`) with the reason printed where it can be neither found
    nor downloaded, so that part 6 still runs (on the digits) offline."""
    try:
        return FASHION, load_dataset(DataConfig(data=FASHION))
    except MnistGanError as error:
        print(f"{error}\ngoing on with the digits: part 6 works the same on them")
        return DATA, digits


def write_image_folder(dataset, folder: str | Path, per_class: int) -> Path:
    """Write the first `per_class` images of each class of `dataset` as PNG files into folder/<class name>/, the
    layout a folder of your own images takes (one sub-folder per class; a flat folder means no labels)."""
    folder = Path(folder)
    names = dataset.class_names or [str(label) for label in range(dataset.num_classes)]
    for label, name in enumerate(names):
        subfolder = folder / name.replace("/", "-")  # "T-shirt/top" is one folder, not two
        subfolder.mkdir(parents=True, exist_ok=True)
        chosen = (dataset.labels == label).nonzero().flatten()[:per_class]
        for number, index in enumerate(chosen.tolist()):
            Image.fromarray(dataset.images[index].numpy()).save(subfolder / f"{number:05d}.png")
    return folder


def as_grid_input(dataset, count: int) -> torch.Tensor:
    """The first `count` images of a data set as (count, 1, 28, 28) in [-1, 1], G's range, for `show`."""
    return dataset.images[:count].float().div(127.5).sub(1).unsqueeze(1)


# ------------------------------------------------------------------------------------------- figures
def show(*panels: tuple[str, torch.Tensor], nrow: int = 8, size: float = 3.0) -> None:
    """Show (title, images) panels side by side, each a grid of images (N, 1, 28, 28) in [-1, 1] tiled as a run's
    sample grids are, nrow a row, on a black background: -1 black, 0 mid-gray, +1 white."""
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels, strict=True):
        ax.imshow(np.asarray(grid_image(images, nrow)), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    plt.show()


def show_losses(result) -> None:
    """Show a run's d_loss and g_loss, and D's mean output on real and fake images, as it logged them (the
    picture of its losses.png)."""
    from IPython.display import Image, display

    with tempfile.TemporaryDirectory() as folder:
        path = plot_losses(result.history, Path(folder) / "losses.png", result.evaluations)
        display(Image(data=path.read_bytes(), format="png"))


def show_saved_grids(run_dir: str | Path, count: int = 4) -> None:
    """Show `count` of the sample grids a run saved while training, evenly spaced from the first to the last."""
    grids = sorted((Path(run_dir) / "samples").glob("iter_*.png"))
    chosen = [grids[round(i * (len(grids) - 1) / max(1, count - 1))] for i in range(count)]
    fig, axes = plt.subplots(1, count, figsize=(3.25 * count, 3.4), squeeze=False)
    for ax, path in zip(axes[0], chosen, strict=True):
        ax.imshow(plt.imread(path), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"iteration {int(path.stem.removeprefix('iter_'))}", fontsize=10)
        ax.axis("off")
    plt.show()


def show_class_drift(iterations: list[int], histograms: list[list[float]], fids: list[float]) -> None:
    """Show which digit the samples look like over training (a histogram per checkpoint) beside their FID."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    image = left.imshow(np.array(histograms).T, aspect="auto", cmap="viridis", vmin=0,
                        extent=(-0.5, len(iterations) - 0.5, 9.5, -0.5))
    left.set_xticks(range(len(iterations)), iterations)
    left.set_yticks(range(10))
    left.set_xlabel("iteration")
    left.set_ylabel("digit the classifier reads")
    left.grid(False)
    fig.colorbar(image, ax=left, label="share of samples")
    right.plot(iterations, fids, "o-")
    right.set_xlabel("iteration")
    right.set_ylabel("FID (classifier features)")
    plt.show()
