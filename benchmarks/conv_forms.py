"""The default networks' convolutions in other forms, timed against the form the step uses (oneDNN's convolution,
channels-last), to say what each alternative would gain or lose on this CPU.

    python -m benchmarks.conv_forms --save

Forms: a strided convolution as `unfold` + a matrix product; a transposed convolution as a matrix product +
`fold`. Each layer of the `recommended` preset at its shape in one step (G at the preset's batch, D at twice it
over the pack), forward and forward+backward (weights and input), fp32 and bf16 autocast; each form is checked
against the convolution first. Prints median milliseconds and the form's speed relative to the convolution
(above 1: faster). --save appends the output to benchmarks/results/conv_forms_cpu_YYYY-MM-DD.txt under a header
naming the date, commit, CPU and torch.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import record
from mnist_gan import preset


def conv_as_unfold(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A strided convolution as im2col (`unfold`) and one matrix product."""
    batch, _, side, _ = x.shape
    out_side = (side + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
    columns = F.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)  # (B, C k k, L)
    y = (layer.weight.reshape(layer.out_channels, -1) @ columns).view(batch, layer.out_channels, out_side, out_side)
    return y if layer.bias is None else y + layer.bias.view(1, -1, 1, 1)


def transposed_as_fold(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """A transposed convolution as one matrix product and col2im (`fold`)."""
    batch, channels, side, _ = x.shape
    k, stride, padding = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    out_side = (side - 1) * stride - 2 * padding + k
    columns = x.permute(0, 2, 3, 1).reshape(-1, channels) @ layer.weight.reshape(channels, -1)  # (B L, out k k)
    columns = columns.view(batch, side * side, -1).transpose(1, 2)
    y = F.fold(columns, (out_side, out_side), k, padding=padding, stride=stride)
    return y if layer.bias is None else y + layer.bias.view(1, -1, 1, 1)


def median_ms(function, repeats: int) -> float:
    for _ in range(3):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_form(form, x: torch.Tensor, precision: str, repeats: int) -> tuple[float, float]:
    """(forward ms, forward+backward ms) of form(x) in `precision`."""
    def autocast():
        return torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def forward():
        with torch.no_grad(), autocast():
            return form(x)

    def both():
        with autocast():
            y = form(x)
        y.float().sum().backward()

    return median_ms(forward, repeats), median_ms(both, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    config = preset("recommended")
    width, batch, pack = config.model.width, config.train.batch_size, config.model.pack
    layers = [
        (f"G convT {2 * width}->{width} 7->14", nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), batch, 7,
         transposed_as_fold, "fold"),
        (f"G convT {width}->1 14->28", nn.ConvTranspose2d(width, 1, 4, 2, 1), batch, 14, transposed_as_fold, "fold"),
        (f"D conv {pack}->{width} 28->14", nn.Conv2d(pack, width, 4, 2, 1), 2 * batch // pack, 28, conv_as_unfold,
         "unfold"),
        (f"D conv {width}->{2 * width} 14->7", nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), 2 * batch // pack, 14,
         conv_as_unfold, "unfold"),
    ]
    torch.manual_seed(0)
    with record.saved_output("conv_forms", args.save):
        print(f"recommended preset, batch {batch}; {torch.get_num_threads()} threads; median ms over {args.repeats} "
              "repeats; relative: convolution's time / the form's (above 1: the form is faster)")
        print(f"{'layer':24s} {'batch':>5s} {'prec':4s} {'form':6s} {'conv fwd':>8s} {'form fwd':>8s} {'rel':>5s} "
              f"{'conv f+b':>8s} {'form f+b':>8s} {'rel':>5s}")
        for name, layer, n, side, form, form_name in layers:
            layer = layer.to(memory_format=torch.channels_last)
            x = torch.randn(n, layer.in_channels, side, side).to(memory_format=torch.channels_last)
            with torch.no_grad():
                torch.testing.assert_close(form(layer, x), layer(x), rtol=1e-4, atol=1e-4)
            x.requires_grad_(True)
            for precision in ("fp32", "bf16"):
                conv = time_form(layer, x, precision, args.repeats)
                other = time_form(lambda inputs, layer=layer, form=form: form(layer, inputs), x, precision,
                                  args.repeats)
                print(f"{name:24s} {n:5d} {precision:4s} {form_name:6s} {conv[0]:8.2f} {other[0]:8.2f} "
                      f"{conv[0] / other[0]:5.2f} {conv[1]:8.2f} {other[1]:8.2f} {conv[1] / other[1]:5.2f}", flush=True)


if __name__ == "__main__":
    main()
