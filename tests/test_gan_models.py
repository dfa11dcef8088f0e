"""The `seed` models against the tutorial's Keras model: shapes, ranges, parameter counts, init, and a
functional reference forward pass written straight from the tutorial's layer list."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import (
    SeedDiscriminator,
    SeedGenerator,
    build_discriminator,
    build_generator,
    count_parameters,
    sample_z,
)
from mnist_gan.settings.config import ModelConfig, preset


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
