"""Images in memory: [-1, 1] floats and uint8 pixels convert both ways exactly, and the random shift behind
--augment-shift moves digits within its range, keeps their shape, fills with the background and passes gradients."""

from __future__ import annotations

import torch

from mnist_gan.data.images import random_shift, to_float, to_uint8


def test_to_float_and_back():
    every_value = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    scaled = to_float(every_value)
    assert scaled.shape == (1, 1, 16, 16) and scaled.dtype == torch.float32
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    assert torch.equal(to_uint8(scaled), every_value)
    assert torch.equal(to_uint8(scaled[:, 0]), every_value)  # (N, 28, 28) too


def test_to_uint8_clamps():
    out = to_uint8(torch.tensor([[-3.0, -1.0, 0.0, 1.0, 5.0]]).reshape(1, 1, 1, 5))
    assert out.tolist() == [[[0, 0, 128, 255, 255]]]


def test_random_shift_moves_digits_and_keeps_shape():
    images = torch.full((4, 1, 28, 28), -1.0)
    images[:, :, 13, 13] = 1.0
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    positions = {tuple(torch.nonzero(s[0] == 1)[0].tolist()) for s in shifted}
    assert all(11 <= r <= 15 and 11 <= c <= 15 for r, c in positions) and len(positions) > 1


def test_random_shift_is_differentiable_and_fills_with_background():
    images = (torch.rand(8, 1, 28, 28) + 0.01).requires_grad_(True)  # every pixel above the background, -1
    shifted = random_shift(images, 3, torch.Generator().manual_seed(0))
    shifted.sum().backward()
    assert set(images.grad.unique().tolist()) <= {0.0, 1.0}  # each output pixel copies one input pixel ...
    assert int(images.grad.sum()) == int((shifted > -1).sum())  # ... or is background
    assert (shifted == -1).any() and random_shift(images, 0) is images
