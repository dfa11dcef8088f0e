"""The seed networks' faster forms compute the tutorial's functions: UpsampledConv2d (nearest 2x upsampling and a
'same' convolution, done as one convolution on the small image) against upsample-then-convolve, in values and in
every gradient; D's pool-before-tanh against tanh-before-pool; and a short training run of the `seed` preset with
the faster forms against the same run with the layers as written, within a stated bound."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_gan.data.images import to_float
from mnist_gan.gan.flops import layer_flops
from mnist_gan.gan.models import UpsampledConv2d, build_discriminator, build_generator, upsample_first
from mnist_gan.gan.step import GanStep
from mnist_gan.settings.config import preset


def _as_written(layer: UpsampledConv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), layer.weight, layer.bias,
                    padding=layer.padding)


@pytest.mark.parametrize(("kernel", "in_channels", "out_channels", "size"),
                         [(5, 128, 64, 7), (5, 64, 1, 14), (3, 8, 5, 6), (7, 3, 4, 5), (1, 4, 2, 3)])
def test_upsampled_conv_equals_upsampling_then_convolving_in_value_and_every_gradient(kernel, in_channels,
                                                                                      out_channels, size):
    torch.manual_seed(kernel + size)
    layer = UpsampledConv2d(in_channels, out_channels, kernel, padding=kernel // 2)
    nn.init.uniform_(layer.bias, -0.5, 0.5)  # non-zero, so a misplaced bias shows
    x = torch.randn(3, in_channels, size, size, requires_grad=True)
    upstream = torch.randn(3, out_channels, 2 * size, 2 * size)  # an arbitrary gradient from above

    fast = layer(x)
    fast_grads = torch.autograd.grad(fast, (x, layer.weight, layer.bias), upstream)
    slow = _as_written(layer, x)
    slow_grads = torch.autograd.grad(slow, (x, layer.weight, layer.bias), upstream)

    assert fast.shape == (3, out_channels, 2 * size, 2 * size)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    for mine, reference in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)
    assert slow.abs().max() > 0.5, "the comparison must be between non-trivial outputs"


def test_upsample_first_switches_the_layers_back_to_the_written_order():
    torch.manual_seed(0)
    G = build_generator(preset("seed").model).eval()
    layers = [m for m in G.modules() if isinstance(m, UpsampledConv2d)]
    assert len(layers) == 2 and all(layer.on_small_image for layer in layers)
    z = torch.rand(4, 100) * 2 - 1
    with torch.no_grad():
        fast = G(z)
        upsample_first(G)
        assert not any(layer.on_small_image for layer in layers)
        written = G(z)
    torch.testing.assert_close(fast, written, rtol=1e-5, atol=1e-5)
    assert not torch.equal(fast, torch.zeros_like(fast))


def test_upsampled_conv_refuses_a_kernel_it_cannot_split():
    with pytest.raises(ValueError, match="odd kernel"):
        UpsampledConv2d(4, 4, 4, padding=2)
    with pytest.raises(ValueError, match="odd kernel"):
        UpsampledConv2d(4, 4, 5, padding=0)


def test_state_dict_names_and_shapes_are_the_tutorial_layers():
    """Checkpoints and exports written before the faster forms still load: same names, same shapes."""
    G = build_generator(preset("seed").model)
    shapes = {name: tuple(t.shape) for name, t in G.state_dict().items() if name.startswith("upsample")}
    assert shapes == {"upsample.1.weight": (64, 128, 5, 5), "upsample.1.bias": (64,),
                      "upsample.4.weight": (1, 64, 5, 5), "upsample.4.bias": (1,)}


def test_flops_count_what_the_small_image_convolution_does():
    """A 5x5 kernel on the upsampled image costs 25 multiply-adds per output and input channel; on the small
    image each output phase takes 3x3 of them."""
    G = build_generator(preset("seed").model)
    counts = dict(layer_flops(G, (100,)))
    assert counts["upsample.1"] == 2 * 64 * 14 * 14 * 128 * 9
    assert counts["upsample.4"] == 2 * 1 * 28 * 28 * 64 * 9


def test_pooling_before_tanh_is_the_tutorial_discriminator(mnist_5k):
    """D pools before its tanh (tanh is increasing, so the max commutes with it): the same logits and gradients as
    tanh-then-pool."""
    torch.manual_seed(1)
    D = build_discriminator(preset("seed").model)
    conv1, conv2, classify = D.features[0], D.features[3], D.classify
    written = nn.Sequential(conv1, nn.Tanh(), nn.MaxPool2d(2), conv2, nn.Tanh(), nn.MaxPool2d(2), classify)
    images = to_float(mnist_5k.images[:16])
    fast = D(images)
    fast_grads = torch.autograd.grad(fast.sum(), list(D.parameters()))
    slow = written(images).squeeze(1)
    slow_grads = torch.autograd.grad(slow.sum(), list(D.parameters()))
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    for mine, reference in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)
    assert fast.std() > 0


# A short seed run with the faster forms stays within these of the same run with the layers as written: the
# distance between the two runs' weights over the distance the run moved them, after RUN_ITERATIONS fp32
# iterations. The functions are the same; only the order of floating-point sums differs, and G's gradient through
# BatchNorm and a batch of 8 cancels to ~1e-3 of its terms, so a 1e-7 rounding becomes ~5e-4 of one update, as
# it does when only the memory layout of the written layers changes (the test shows both).
RUN_ITERATIONS = 10
MOVED_APART_BOUND = {"G": 1e-2, "D": 1e-3}
LOSS_BOUND = 1e-4


def _written_discriminator(D: nn.Module) -> None:
    """D's features as the tutorial lists them (tanh, then pool), sharing D's convolutions."""
    conv1, conv2 = D.features[0], D.features[3]
    D.features = nn.Sequential(conv1, nn.Tanh(), nn.MaxPool2d(2), conv2, nn.Tanh(), nn.MaxPool2d(2))


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _train_side_by_side(first: GanStep, second: GanStep, batches: torch.Tensor) -> dict:
    """Train both steps on the same batches and noise; how far apart they end, per network, over how far the
    second moved, and the largest loss difference."""
    start = {"G": _flat(second.G), "D": _flat(second.D)}
    loss_gap = 0.0
    for batch in batches:
        rng = torch.get_rng_state()
        mine = first(batch)
        torch.set_rng_state(rng)
        loss_gap = max(loss_gap, (mine - second(batch)).abs().max().item())
    apart = {name: ((_flat(getattr(first, name)) - _flat(getattr(second, name))).norm()
                    / (_flat(getattr(second, name)) - start[name]).norm()).item() for name in ("G", "D")}
    return {**apart, "losses": loss_gap}


def test_a_short_seed_run_with_the_faster_forms_matches_the_layers_as_written(mnist_5k):
    batches = to_float(mnist_5k.images[:RUN_ITERATIONS * 8]).view(RUN_ITERATIONS, 8, 1, 28, 28)
    config = preset("seed")
    config.train.batch_size, config.train.precision = 8, "fp32"

    def written_step(layout: torch.memory_format = torch.channels_last) -> GanStep:
        step = GanStep(config)
        upsample_first(step.G)
        _written_discriminator(step.D)
        for layer in step.G.modules():
            if isinstance(layer, nn.Conv2d):
                layer.weight.data = layer.weight.data.contiguous(memory_format=layout)
        return step

    fast, written = GanStep(config), written_step()
    assert torch.equal(_flat(fast.G), _flat(written.G)) and torch.equal(_flat(fast.D), _flat(written.D))
    gap = _train_side_by_side(fast, written, batches)
    assert gap["losses"] < LOSS_BOUND
    assert gap["G"] < MOVED_APART_BOUND["G"] and gap["D"] < MOVED_APART_BOUND["D"], gap
    # The same order of difference appears between two written runs that differ only in G's memory layout: the
    # bound is rounding, not a different function.
    layout_gap = _train_side_by_side(written_step(torch.contiguous_format), written_step(), batches)
    assert 0 < layout_gap["G"] < MOVED_APART_BOUND["G"]
    assert gap["G"] < 10 * layout_gap["G"], (gap, layout_gap)


# The default preset trains in bf16 where the CPU has it (batch 128). bf16 keeps 8 bits of mantissa in G's and D's
# products (weights, optimizer state, losses stay fp32), and Adam without momentum turns small gradient differences
# into whole steps, so a short bf16 run follows the fp32 run loosely: after BF16_ITERATIONS its G is ~0.3 of the
# run's distance from the fp32 G, against ~1.2 for the fp32 run on other noise.
BF16_ITERATIONS = 10
BF16_LOSS_BOUND = 0.05  # largest difference of any logged figure (losses, D's scores) at any iteration
BF16_MOVED_APART_BOUND = 0.5  # G's weights: distance between the runs over the distance the fp32 run moved


def test_a_short_default_run_in_bf16_follows_the_fp32_run(mnist_5k):
    batches = to_float(mnist_5k.images[:BF16_ITERATIONS * 32]).view(BF16_ITERATIONS, 32, 1, 28, 28)
    config = preset("recommended")
    config.model.self_condition, config.model.width, config.train.batch_size = 0, 16, 32

    def step_in(precision: str, noise_seed: int = 0) -> GanStep:
        config.train.precision = precision
        step = GanStep(config)
        step.noise_rng.manual_seed(noise_seed)
        return step

    bf16, fp32 = step_in("bf16"), step_in("fp32")
    assert bf16.precision == "bf16" and fp32.precision == "fp32"
    gap = _train_side_by_side(bf16, fp32, batches)
    assert 0 < gap["losses"] < BF16_LOSS_BOUND and gap["G"] < BF16_MOVED_APART_BOUND, gap
    other_noise = _train_side_by_side(step_in("fp32", noise_seed=1), step_in("fp32"), batches)
    assert gap["G"] < other_noise["G"] / 2, (gap, other_noise)
