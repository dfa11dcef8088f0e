"""Grids and walks through z: the grid reader inverts the writer, a walk starts and ends at its points (a great
circle for Gaussian z, a straight line for uniform z) and blends the labels, and `interpolate` writes strips and
GIFs of the right size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers import small_dataset, tiny_run_config

from mnist_gan.cli.parser import main
from mnist_gan.data.images import to_float, to_uint8
from mnist_gan.gan.models import build_generator, sample_z
from mnist_gan.sampling.grids import PADDING, grid_image, grid_size, read_grid, save_grid
from mnist_gan.sampling.sample import interpolate, latent_walk, slerp
from mnist_gan.settings.config import ModelConfig, preset
from mnist_gan.training.loop import train


@pytest.mark.parametrize("count, nrow", [(64, 8), (10, 8), (3, 1)])
def test_read_grid_inverts_save_grid(tmp_path, mnist_5k, count, nrow):
    images = to_float(mnist_5k.images[:count])  # (count, 1, 28, 28) in [-1, 1]
    path = save_grid(images, tmp_path / "grid.png", nrow=nrow)
    read = read_grid(path, count=count, nrow=nrow)  # (count, 1, 28, 28)
    assert read.shape == (count, 1, 28, 28)
    assert np.array_equal(to_uint8(torch.from_numpy(read)).numpy(), to_uint8(images).numpy())
    height, width = grid_size(count, nrow)
    assert grid_image(images, nrow).size == (width, height) and (height - PADDING) % (28 + PADDING) == 0


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_a_walk_starts_and_ends_at_its_points_and_blends_the_labels(distribution):
    config = ModelConfig(z_distribution=distribution, conditional=True, self_condition=0)  # labels, no clusters
    rng = torch.Generator().manual_seed(0)
    z0, z1 = sample_z(3, config, rng), sample_z(3, config, rng)  # (3, z_dim)
    z, labels = latent_walk(config, 5, z0, z1, torch.tensor([1, 2, 3]), torch.tensor([7, 2, 0]))
    assert z.shape == (3, 5, config.z_dim) and labels.shape == (3, 5, config.num_classes)
    assert torch.allclose(z[:, 0], z0, atol=1e-5) and torch.allclose(z[:, -1], z1, atol=1e-5)
    assert labels[0, 2, 1] == labels[0, 2, 7] == 0.5 and labels[1, :, 2].eq(1).all()
    assert latent_walk(config, 5, z0, z1)[1] is None


def test_slerp_keeps_the_norm_and_hits_the_end_points():
    z0, z1 = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    path = slerp(z0, z1, torch.linspace(0, 1, 5))  # (1, 5, 3)
    assert torch.allclose(path[0, 0], z0[0], atol=1e-5) and torch.allclose(path[0, -1], z1[0], atol=1e-5)
    assert torch.allclose(path.norm(dim=-1), torch.full((1, 5), 3.0), atol=1e-5)  # lerp's middle has norm 2.1


def test_uniform_z_walks_a_straight_line():
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", width=8, z_distribution="uniform")
    G = build_generator(config)
    seen = []
    G.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    interpolate(G, config, steps=5)
    z = seen[0]  # (5, z_dim)
    assert torch.allclose(z[2], (z[0] + z[4]) / 2, atol=1e-6)


def test_interpolate_writes_strip_and_gif_of_the_right_size(tmp_path, mnist_5k):
    from PIL import Image

    train(tiny_run_config("recommended", {"conditional": True, "self_condition": 0}), tmp_path / "run",
          dataset=small_dataset(mnist_5k), progress=False)
    strip, gif = tmp_path / "walk.png", tmp_path / "walk.gif"
    assert main(["interpolate", str(tmp_path / "run"), "--steps", "6", "--rows", "2", "--out", str(strip)]) == 0
    assert Image.open(strip).size == ((6 * 30 + 2) * 2, (2 * 30 + 2) * 2)
    assert main(["interpolate", str(tmp_path / "run"), "--steps", "6", "--rows", "3", "--scale", "1",
                 "--from-digit", "3", "--to-digit", "8", "--out", str(gif)]) == 0
    animation = Image.open(gif)
    assert animation.size == (3 * 30 + 2, 32) and animation.n_frames == 10  # 6 steps there, 4 back
    assert main(["interpolate", str(tmp_path / "run"), "--out", str(strip)]) == 2  # exists, not replaced
