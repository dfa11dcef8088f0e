"""Stacked MNIST: the deterministic 3-channel data set, 3-channel networks and colour grids, and the mode
metric of PacGAN's Table 2."""

from __future__ import annotations

import math

import pytest
import torch

from mnist_gan.data.datasets import stack_digits
from mnist_gan.data.images import ImageDataset
from mnist_gan.evaluation.metrics import stacked_mnist_modes


@pytest.fixture(scope="module")
def base(mnist_5k) -> ImageDataset:
    return ImageDataset(mnist_5k.images[:500], mnist_5k.labels[:500], "mnist", "500 real digits")


def test_the_stacked_set_is_deterministic_and_made_of_base_digits(base):
    first, again = stack_digits(base, 64), stack_digits(base, 64)
    assert first.images.shape == (64, 3, 28, 28) and first.channels == 3
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.images, stack_digits(base, 64, seed=1).images)
    flat = base.images.flatten(1)  # (500, 784)
    for image, label in zip(first.images[:8], first.labels[:8], strict=True):
        digits = []
        for channel in image:  # each channel is one of the base digits, and the label spells their digits
            match = (flat == channel.flatten()).all(1).nonzero().flatten()
            assert len(match) >= 1
            digits.append(int(base.labels[match[0]]))
        assert int(label) == 100 * digits[0] + 10 * digits[1] + digits[2]


def test_a_three_channel_model_trains_and_draws_colour_grids(tmp_path, base):
    from PIL import Image

    from mnist_gan import preset, train
    from mnist_gan.run.checkpoint import load_generator

    config = preset("recommended")
    config.model.width, config.model.channels, config.model.pack = 8, 3, 2
    config.model.self_condition = 4  # 32 images, clustered on their 3 channels' pixels
    config.train.batch_size, config.train.iterations, config.train.device = 8, 3, "cpu"
    config.train.sample_every, config.train.tensorboard = 3, True
    result = train(config, tmp_path / "run", dataset=stack_digits(base, 32), progress=False)
    assert result.iteration == 3
    grid = Image.open(tmp_path / "run" / "samples" / "iter_00000003.png")
    assert grid.mode == "RGB"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    board.Reload()
    assert [(e.step, e.width, e.height) for e in board.Images("samples")] == [(0, *grid.size), (3, *grid.size)]
    _, G, D = load_generator(tmp_path / "run")
    assert G(torch.zeros(2, config.model.z_dim)).shape == (2, 3, 28, 28)
    assert D.features[0].in_channels == 6  # 3 channels, packs of 2
    import numpy as np

    from mnist_gan.sampling.sample import generate, save_images

    images = generate(G, config.model, 5)
    save_images(images, tmp_path / "five.npz", "npz")
    save_images(images, tmp_path / "five", "dir")
    assert np.load(tmp_path / "five.npz")["images"].shape == (5, 3, 28, 28)
    assert Image.open(tmp_path / "five" / "0000.png").mode == "RGB"


def test_a_channel_mismatch_is_one_line(tmp_path, base):
    from mnist_gan import preset, train
    from mnist_gan.errors import MnistGanError

    config = preset("recommended")
    with pytest.raises(MnistGanError, match="3-channel images and the model 1: pass --channels 3"):
        train(config, tmp_path / "run", dataset=stack_digits(base, 32), progress=False)


class DigitFromBrightness:
    """Stands in for the feature classifier: reads digit d from an image filled with the value -1 + d / 5."""

    def features_and_probabilities(self, images):
        digits = ((images.flatten(1).mean(1) + 1) * 5).round().long()  # (N,)
        return None, torch.nn.functional.one_hot(digits, 10).double()


def _stacked(modes: torch.Tensor) -> torch.Tensor:
    digits = torch.stack([modes // 100, modes // 10 % 10, modes % 10], dim=1)  # (N, 3)
    return (-1 + digits / 5)[:, :, None, None].expand(-1, -1, 28, 28).float()  # (N, 3, 28, 28)


def test_every_mode_once_is_1000_modes_and_no_divergence():
    result = stacked_mnist_modes(_stacked(torch.arange(1000)), DigitFromBrightness())
    assert result["modes"] == 1000 and abs(result["kl"]) < 1e-9 and result["n"] == 1000


def test_a_constant_set_is_one_mode():
    result = stacked_mnist_modes(_stacked(torch.full((500,), 427)), DigitFromBrightness())
    assert result["modes"] == 1 and result["kl"] == pytest.approx(math.log(1000))
    assert result["histogram"][427] == 500


def test_two_modes_equally_often():
    result = stacked_mnist_modes(_stacked(torch.tensor([3, 998] * 50)), DigitFromBrightness())
    assert result["modes"] == 2 and result["kl"] == pytest.approx(math.log(500))
