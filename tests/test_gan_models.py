"""The networks: the `seed` models against the tutorial's Keras model (shapes, ranges, parameter counts, init, and
a functional reference forward pass written straight from the tutorial's layer list), DCGAN's, spectral
normalisation, PacGAN's packed D, three-channel networks, and the conditional G end to end."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import small_dataset, tiny_run_config
from torch import nn

from mnist_gan.cli.parser import main
from mnist_gan.data.datasets import stack_digits
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import (
    SeedDiscriminator,
    SeedGenerator,
    build_discriminator,
    build_generator,
    count_parameters,
    sample_z,
    score_each,
)
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.sample import grid_inputs
from mnist_gan.settings.config import ModelConfig, preset
from mnist_gan.training.loop import train

# -------------------------------------------------------------------------------------------- the seed models

@pytest.fixture(scope="module")
def seed_models():
    torch.manual_seed(0)
    config = preset("seed").model
    return config, build_generator(config), build_discriminator(config)


def test_generator_shape_and_range(seed_models):
    config, G, _ = seed_models
    z = sample_z(8, config, torch.Generator().manual_seed(1))
    G.eval()
    with torch.no_grad():
        images = G(z)
    assert images.shape == (8, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert images.std() > 0, "different z must give different pixels"


def test_discriminator_gives_one_logit_per_image(seed_models, mnist_5k):
    _, _, D = seed_models
    from mnist_gan.data.images import to_float

    with torch.no_grad():
        logits = D(to_float(mnist_5k.images[:5]))
    assert logits.shape == (5,) and torch.isfinite(logits).all()
    assert logits.std() > 0


def test_parameter_counts_equal_the_keras_model(seed_models):
    _, G, D = seed_models
    assert count_parameters(G) == (6_763_777, 6_751_233)
    assert count_parameters(D) == (3_485_441, 3_485_441)


def test_seed_relu_generator_is_relu_everywhere():
    config = preset("seed-relu").model
    G = build_generator(config)
    activations = [m for m in G.modules() if isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU))]
    assert len(activations) == 4 and all(isinstance(m, nn.ReLU) for m in activations)
    assert isinstance(list(G.modules())[-1], nn.ReLU), "the output activation is ReLU too"
    with torch.no_grad():
        images = G.eval()(sample_z(16, config, torch.Generator().manual_seed(0)))
    assert images.min() >= 0, "a ReLU output never goes below 0 (mid-gray on the [-1, 1] scale)"
    assert count_parameters(G) == (6_763_777, 6_751_233)
    assert all(isinstance(m, nn.Tanh) for m in build_discriminator(config).modules()
               if isinstance(m, (nn.ReLU, nn.Tanh)))


def _glorot_bound(layer: nn.Module) -> float:
    receptive = layer.weight[0, 0].numel() if layer.weight.dim() > 2 else 1
    fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
    return math.sqrt(6 / (fan_in + fan_out))


@pytest.mark.parametrize("which", ["G", "D"])
def test_glorot_uniform_weights_and_zero_biases(seed_models, which):
    _, G, D = seed_models
    layers = [m for m in (G if which == "G" else D).modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) == 4
    for layer in layers:
        bound = _glorot_bound(layer)
        weight = layer.weight.detach()
        assert weight.abs().max() <= bound
        # U(-b, b) has standard deviation b / sqrt(3); PyTorch's default init would give another one.
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(layer.bias) == 0


def test_batchnorm_uses_keras_momentum_and_epsilon(seed_models):
    config, G, _ = seed_models
    norms = [m for m in G.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 1
    norm = norms[0]
    assert norm.eps == 1e-3 and norm.momentum == pytest.approx(0.01)
    # Keras momentum 0.99 keeps 99% of the old moving mean at each step.
    fresh = build_generator(config)
    fresh.train()
    x = torch.randn(32, 6272)
    before = fresh.project[3].running_mean.clone()
    fresh.project[3](x)
    expected = 0.99 * before + 0.01 * x.mean(0)
    assert torch.allclose(fresh.project[3].running_mean, expected, atol=1e-6)


def _reference_generator(G: SeedGenerator, z: torch.Tensor) -> torch.Tensor:
    """The tutorial's G, layer by layer, with the module's own weights (BatchNorm in inference mode)."""
    linear1, _, linear2, norm, _ = G.project
    conv1, conv2 = G.upsample[1], G.upsample[4]
    x = torch.tanh(F.linear(z, linear1.weight, linear1.bias))  # Dense 1024, tanh
    x = F.linear(x, linear2.weight, linear2.bias)  # Dense 128*7*7
    x = (x - norm.running_mean) / torch.sqrt(norm.running_var + 1e-3) * norm.weight + norm.bias
    x = torch.tanh(x).reshape(-1, 128, 7, 7)
    x = F.interpolate(x, scale_factor=2, mode="nearest")  # UpSampling2D
    x = torch.tanh(F.conv2d(x, conv1.weight, conv1.bias, padding="same"))  # Conv 5x5 64 'same'
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    return torch.tanh(F.conv2d(x, conv2.weight, conv2.bias, padding="same"))  # Conv 5x5 1 'same'


def _reference_discriminator(D: SeedDiscriminator, images: torch.Tensor) -> torch.Tensor:
    conv1, conv2 = D.features[0], D.features[3]
    linear1, linear2 = D.classify[1], D.classify[3]
    x = F.max_pool2d(torch.tanh(F.conv2d(images, conv1.weight, conv1.bias, padding="same")), 2)
    x = F.max_pool2d(torch.tanh(F.conv2d(x, conv2.weight, conv2.bias)), 2)  # 'valid'
    assert x.shape[1:] == (128, 5, 5)
    x = torch.tanh(F.linear(x.flatten(1), linear1.weight, linear1.bias))
    return F.linear(x, linear2.weight, linear2.bias)[:, 0]  # the logit; sigmoid lives in the loss


def test_forward_passes_match_the_tutorial_layer_list(seed_models):
    config, G, D = seed_models
    G = copy.deepcopy(G).eval()
    with torch.no_grad():
        norm = G.project[3]  # non-trivial moving statistics, so the reference must use them right
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        z = sample_z(6, config, torch.Generator().manual_seed(3))
        images = G(z)
        assert torch.allclose(images, _reference_generator(G, z), atol=1e-5)
        assert torch.allclose(D(images), _reference_discriminator(D, images), atol=1e-5)


def test_noise_prior():
    uniform = preset("seed").model  # z ~ U(-1, 1)
    z = sample_z(4000, uniform, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 100) and z.min() >= -1 and z.max() < 1
    assert z.mean().abs() < 0.02 and z.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.02)
    assert torch.equal(z, sample_z(4000, uniform, torch.Generator().manual_seed(0)))
    normal = sample_z(4000, ModelConfig(z_distribution="normal"), torch.Generator().manual_seed(0))
    assert normal.std().item() == pytest.approx(1.0, rel=0.02) and normal.abs().max() > 1


def test_unknown_architecture():
    with pytest.raises(MnistGanError, match="unknown architecture 'nope'"):
        build_generator(ModelConfig(architecture="nope"))


# ------------------------------------------------------------------------------------------------------ DCGAN

@pytest.mark.parametrize("width, conditional", [(8, False), (32, False), (16, True)])
def test_dcgan_shapes(width, conditional):
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", z_distribution="normal", width=width,
                                 conditional=conditional)
    G, D = build_generator(config), build_discriminator(config)
    labels = torch.arange(5) if conditional else None
    images = G(sample_z(5, config), labels)
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images, labels).shape == (5,)
    assert G.net[0].out_features == 2 * width * 7 * 7  # the projection to (2w, 7, 7)
    convolutions = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in convolutions] == [width, 1]
    assert any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in D.modules())


def test_dcgan_projection_is_radfords_7x7_transposed_convolution():
    """G's first layer is a Linear for speed; it must compute what a 7x7 transposed conv of a 1x1 input does."""
    torch.manual_seed(0)
    G = build_generator(dataclasses.replace(preset("seed").model, architecture="dcgan", z_distribution="normal",
                                            width=4))
    projection, reshape = G.net[0], G.net[1]
    convolution = nn.ConvTranspose2d(100, 8, 7, bias=False)
    with torch.no_grad():  # Linear weight (8*49, 100) -> ConvTranspose weight (100, 8, 7, 7)
        convolution.weight.copy_(projection.weight.t().reshape(100, 8, 7, 7))
    z = torch.randn(3, 100)
    torch.testing.assert_close(reshape(projection(z)), convolution(z[:, :, None, None]))


def test_spectral_norm_bounds_every_d_layer():
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", width=8, d_batchnorm=False,
                                 spectral_norm=True)
    D = build_discriminator(config)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3
    with torch.no_grad():
        for layer in layers:
            layer.parametrizations.weight.original.mul_(50)  # far from 1-Lipschitz before normalisation
        for _ in range(30):  # power iteration runs once per training-mode forward pass
            D(torch.randn(4, 1, 28, 28))
    for layer in layers:
        raw = torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach().flatten(1), ord=2)
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert raw > 5 and sigma == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("architecture", ["dcgan", "seed"])
def test_a_packed_d_takes_m_images_along_its_channels(architecture, real):
    D = build_discriminator(dataclasses.replace(preset("seed").model, architecture=architecture, width=8, pack=4))
    assert D.features[0].in_channels == 4
    with torch.no_grad():
        assert D(real).shape == (2,)  # 8 images, 4 per verdict
        assert score_each(D, real).shape == (8,)  # each image judged as a pack of 4 copies of itself
        assert torch.equal(score_each(D, real[:1]), D(real[:1].repeat(4, 1, 1, 1)))
    with pytest.raises(MnistGanError, match="judges 4 images at once; got a batch of 6"):
        D(real[:6])


# --------------------------------------------------------------------------------------------- three channels

def test_a_three_channel_model_trains_and_draws_colour_grids(tmp_path, mnist_5k):
    from PIL import Image

    from mnist_gan import preset, train
    from mnist_gan.run.checkpoint import load_generator

    config = preset("recommended")
    config.model.width, config.model.channels, config.model.pack = 8, 3, 2
    config.model.self_condition = 4  # 32 images, clustered on their 3 channels' pixels
    config.train.batch_size, config.train.iterations, config.train.device = 8, 3, "cpu"
    config.train.sample_every, config.train.tensorboard = 3, True
    result = train(config, tmp_path / "run", dataset=stack_digits(small_dataset(mnist_5k, 500), 32), progress=False)
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


def test_a_channel_mismatch_is_one_line(tmp_path, mnist_5k):
    from mnist_gan import preset, train
    from mnist_gan.errors import MnistGanError

    config = preset("recommended")
    with pytest.raises(MnistGanError, match="3-channel images and the model 1: pass --channels 3"):
        train(config, tmp_path / "run", dataset=stack_digits(small_dataset(mnist_5k, 500), 32), progress=False)


# ------------------------------------------------------------------------------------------ the conditional G

def test_conditional_run_grid_generate_and_export(tmp_path, mnist_5k, capsys):
    from PIL import Image

    config = tiny_run_config("recommended", {"conditional": True, "self_condition": 0})
    run = tmp_path / "run"
    train(config, run, dataset=small_dataset(mnist_5k), progress=False)
    grid = Image.open(run / "samples" / "iter_00000004.png")
    assert grid.size == (8 * 30 + 2, 10 * 30 + 2)  # one row of 8 per class
    model_config, G, _ = load_generator(run / "generator.safetensors")
    assert model_config.conditional
    z, labels = grid_inputs(64, model_config, seed=1)
    assert labels.tolist() == [digit for digit in range(10) for _ in range(8)]
    with torch.no_grad():
        threes, eights = G(z[:8], torch.full((8,), 3)), G(z[:8], torch.full((8,), 8))
    # the label reaches the image: an ignored label gives exactly 0 (after 4 iterations the exported average
    # is still close to its start, where the labels' effect is ~1% of the output)
    assert (threes - eights).abs().max() > 1e-3 * threes.abs().max()
    assert main(["generate", str(run), "--digit", "7", "-n", "4", "--out", str(tmp_path / "sevens.npz"),
                 "--format", "npz"]) == 0
    assert main(["generate", str(run), "--digit", "12", "--out", str(tmp_path / "bad.png")]) == 2
    assert "--digit must be in 0..9" in capsys.readouterr().err
    with pytest.raises(MnistGanError, match="needs a label"):
        G(z[:2])


def test_conditional_training_needs_labels(tmp_path, mnist_5k):
    with pytest.raises(MnistGanError, match="labelled images"):
        train(tiny_run_config(model={"conditional": True}), tmp_path / "run",
              dataset=small_dataset(mnist_5k, labels=False), progress=False)
    assert not (tmp_path / "run").exists()
