"""FLOP counting: two FLOPs per multiply-add, grouped and transposed convolutions, and the seed pair's training
FLOPs against a count by hand."""

from __future__ import annotations

from torch import nn

from mnist_gan.gan.flops import layer_flops, training_flops_per_image
from mnist_gan.gan.models import build_discriminator, build_generator
from mnist_gan.settings.config import preset


def test_layer_flops_counts_two_flops_per_multiply_add():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(18, 4))
    # conv: 2 x 3 x 3 outputs, each 1 x 3 x 3 multiply-adds -> 162 MACs; linear: 18 x 4 = 72 MACs
    assert layer_flops(net, (1, 5, 5)) == [("0", 324), ("3", 144)]


def test_layer_flops_respects_groups_and_leaves_mode_alone():
    net = nn.Sequential(nn.Conv2d(4, 4, 1, groups=4), nn.BatchNorm2d(4)).train()
    assert layer_flops(net, (4, 2, 2)) == [("0", 2 * 16)]  # 16 outputs, 1 input channel each
    assert net.training


def test_transposed_convolution_flops_count_every_scattered_product():
    # 2 input channels x 5x5 positions, each scattered into 3 output channels x a 4x4 kernel, 2 FLOPs per product
    assert layer_flops(nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1), (2, 5, 5)) == [("", 2 * 2 * 25 * 3 * 16)]


def test_training_flops_of_the_seed_pair_match_a_hand_count():
    config = preset("seed").model
    # G's 5x5 convolutions of the upsampled image run on the small image, 3x3 taps per output (UpsampledConv2d)
    g = 2 * (100 * 1024 + 1024 * 6272 + 64 * 14 * 14 * 128 * 9 + 1 * 28 * 28 * 64 * 9)
    d = 2 * (64 * 28 * 28 * 25 + 128 * 10 * 10 * 64 * 25 + 3200 * 1024 + 1024)
    g_first, d_first = 2 * 100 * 1024, 2 * 64 * 28 * 28 * 25
    parts = training_flops_per_image(build_generator(config), build_discriminator(config), config.z_dim)
    expected = (g + 2 * d + 2 * (2 * d - d_first)) + (g + d + d + 2 * g - g_first)
    assert parts["total"] == expected
    assert 5.5e8 < parts["total"] < 5.8e8  # 7.8e8 with the 5x5 kernels on the upsampled image
