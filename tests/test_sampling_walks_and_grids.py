"""Sampling facts kept once: the grid reader inverts the writer, the explorer walks as `interpolate` walks, and
the nice view reads D's own outputs, ranked as `generate --nice` ranks them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_gan.data.images import to_float, to_uint8
from mnist_gan.gan.models import build_discriminator, build_generator, sample_z
from mnist_gan.sampling.grids import PADDING, grid_image, grid_size, read_grid, save_grid
from mnist_gan.sampling.sample import generate_nice, interpolate, latent_walk, nicest
from mnist_gan.serve.explorer import Explorer, View
from mnist_gan.settings.config import ModelConfig


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
    config = ModelConfig(z_distribution=distribution, conditional=True)
    rng = torch.Generator().manual_seed(0)
    z0, z1 = sample_z(3, config, rng), sample_z(3, config, rng)  # (3, z_dim)
    z, labels = latent_walk(config, 5, z0, z1, torch.tensor([1, 2, 3]), torch.tensor([7, 2, 0]))
    assert z.shape == (3, 5, config.z_dim) and labels.shape == (3, 5, config.num_classes)
    assert torch.allclose(z[:, 0], z0, atol=1e-5) and torch.allclose(z[:, -1], z1, atol=1e-5)
    assert labels[0, 2, 1] == labels[0, 2, 7] == 0.5 and labels[1, :, 2].eq(1).all()
    assert latent_walk(config, 5, z0, z1)[1] is None


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    config = ModelConfig(width=8, self_condition=0, pack=1, conditional=True)
    return config, build_generator(config).eval(), build_discriminator(config).eval()


def test_the_explorer_walks_as_interpolate_walks(networks):
    config, G, D = networks
    explorer = Explorer(config, G, D, "lsgan")
    view = View(seed=4, n=6, digit=5)
    z, labels = explorer.latents(view)
    walked = explorer.walk(view, 1, 4, 7)
    path, soft = latent_walk(config, 7, z[[1]], z[[4]], labels[[1]], labels[[4]])
    with torch.no_grad():
        assert torch.equal(walked.images, G(path[0], soft[0]).float())
    strip = interpolate(G, config, steps=7, rows=2, seed=4, from_digit=5)  # (2, 7, 1, 28, 28): the CLI's walk
    rng = torch.Generator().manual_seed(4)
    fives = torch.tensor([5, 5])
    path, soft = latent_walk(config, 7, sample_z(2, config, rng), sample_z(2, config, rng), fives, fives)
    with torch.no_grad():
        assert torch.equal(strip.flatten(0, 1), G(path.flatten(0, 1), soft.flatten(0, 1)).float())


def test_the_nice_view_reads_ds_outputs_without_a_round_trip(networks):
    config, G, D = networks
    images, outputs = nicest(G, D, config, 8, seed=2)
    kept, probabilities = generate_nice(G, D, config, 8, seed=2)
    assert torch.equal(images, kept) and torch.equal(torch.sigmoid(outputs), probabilities)
    nice = Explorer(config, G, D, "lsgan").nice(View(seed=2, n=8))
    assert torch.equal(nice.images, images)
    assert torch.equal(nice.scores, outputs.clamp(0, 1))  # LSGAN's reading of D: its output, clipped to [0, 1]
