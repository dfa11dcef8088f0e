"""The model FLOPs one trained image costs, counted from the layer shapes (2 FLOPs per multiply-add), as the
layers compute them (an UpsampledConv2d's on the small image).

Used to choose the precision (`mnist_gan.gan.device.resolve_precision`) and by benchmarks/speed.py to put images/s
against the hardware's measured peak.
"""

from __future__ import annotations

import torch
from torch import nn

from mnist_gan.gan.models import UpsampledConv2d


def layer_flops(module: nn.Module, input_shape: tuple[int, ...], conditional: bool = False,
                batch: int = 2) -> list[tuple[str, int]]:
    """FLOPs per sample of each Linear/Conv/ConvTranspose layer's forward pass, in execution order: 2 per multiply-add.

    Counted from the layer shapes seen in one forward pass of a batch of `batch` `input_shape` samples (a packed D
    sees them as batch/pack samples, each a pack: its counts are per pack); biases,
    activations, normalisation and pooling (a few percent at most here) are not counted.
    """
    counts: list[tuple[str, int]] = []
    names = {m: n for n, m in module.named_modules()}

    def hook(layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        per_sample = output[0]
        if isinstance(layer, nn.Linear):
            macs = layer.in_features * per_sample.numel()
        elif isinstance(layer, nn.ConvTranspose2d):  # each input element scatters into out_channels x kernel
            macs = inputs[0][0].numel() * (layer.out_channels // layer.groups) * layer.kernel_size[0] \
                * layer.kernel_size[1]
        elif isinstance(layer, UpsampledConv2d):  # computed on the small image: each output sums k' x k' taps
            macs = per_sample.numel() * layer.in_channels * layer.small_kernel_size ** 2
        else:  # Conv2d: each output element sums in_channels/groups x kernel products
            macs = per_sample.numel() * (layer.in_channels // layer.groups) * layer.kernel_size[0] \
                * layer.kernel_size[1]
        counts.append((names[layer], 2 * macs))

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    was_training = module.training
    try:
        module.eval()
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            inputs = [torch.zeros((batch, *input_shape), device=device)]
            if conditional:  # a conditional G or D also takes a label per sample
                inputs.append(torch.zeros(batch, dtype=torch.long, device=device))
            module(*inputs)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def training_flops_per_image(G: nn.Module, D: nn.Module, z_dim: int, conditional: bool = False, *,
                             channels: int = 1, pack: int = 1) -> dict[str, int]:
    """Model FLOPs one iteration spends per real image (B real and B fake images per D step, B fakes per G step).

    A layer's backward pass costs its forward FLOPs once for the weight gradient and once more for the input
    gradient, which the first layer of a network skips when its input needs no gradient.
      D step: G forward (no grad), D forward on real+fake, D backward (weights and inputs) on real+fake.
      G step: G forward, D forward, D backward for the input gradient only (D is frozen), G backward.
    A packed D's (PacGAN) counts per pack are shared among the pack's images.
    """
    g_layers = [f for _, f in layer_flops(G, (z_dim,), conditional)]
    d_layers = [f // pack for _, f in layer_flops(D, (channels, 28, 28), conditional, batch=2 * pack)]
    g, d = sum(g_layers), sum(d_layers)
    parts = {
        "G forward (fakes for D)": g,
        "D forward (real + fake)": 2 * d,
        "D backward (real + fake)": 2 * (d + d - d_layers[0]),
        "G forward (G step)": g,
        "D forward (G step)": d,
        "D backward to its input (G step)": d,
        "G backward": g + g - g_layers[0],
    }
    parts["total"] = sum(parts.values())
    return parts
