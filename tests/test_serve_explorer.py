"""The explorer behind `mnist-gan serve`: its GANSpace directions recover a known generator's dominant axis, it
walks as `interpolate` walks, and its nice view reads D's own outputs, ranked as `generate --nice` ranks them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_gan.gan.models import build_discriminator, build_generator, sample_z
from mnist_gan.sampling.sample import generate_nice, interpolate, latent_walk, nicest
from mnist_gan.serve.explorer import Explorer, View
from mnist_gan.settings.config import ModelConfig, preset


def test_directions_recover_the_dominant_axis_of_a_known_generator():
    """On a G whose first layer stretches one z-direction 10x more than any other, the first direction is it."""
    from torch import nn

    from mnist_gan.serve.explorer import latent_directions

    config = dataclasses.replace(preset("seed").model, z_dim=8, z_distribution="normal")  # unconditional, no clusters
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0]
    stretch = torch.tensor([10.0, 3.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.2])

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(8, 8, bias=False)
            self.first.weight.data = 0.01 * torch.diag(stretch) @ rotation.T  # small: tanh stays linear
            self.act = nn.Tanh()

        def forward(self, z, labels=None):
            return self.act(self.first(z)).view(-1, 1, 2, 4)

    directions = latent_directions(Toy(), config, count=3)
    assert directions.layer == "act"
    assert abs(float(directions.vectors[0] @ rotation[:, 0])) > 0.99
    assert abs(float(directions.vectors[1] @ rotation[:, 1])) > 0.95
    assert directions.explained[0] > 0.85


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
    assert torch.equal(nice.scores, outputs)  # LSGAN's reading of D shown: its output, unclipped (no ties at 0)
