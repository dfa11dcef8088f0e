"""K runs' convolutions three ways: K separate calls, one grouped convolution, and vmap over the K weights (what a
sweep's step runs, mnist_gan.gan.stacked), forward and backward, for each convolution of the default networks.

    python -m benchmarks.stacked_layers --runs 8 --save

The layers are the `recommended` preset's G and D convolutions at their shapes in one training step (G at the
preset's batch, D at twice it over the pack: real and fake together), in fp32 on the CPU. Each way computes the
same K outputs and gradients (checked here before timing). Prints the median milliseconds of forward+backward
(weights and input) per layer and way, and the speed-up of the grouped and vmapped forms over K separate calls.
--save appends the output to benchmarks/results/stacked_layers_cpu_YYYY-MM-DD.txt under a header naming the
date, commit, CPU and torch.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.func import vmap

from benchmarks import record
from benchmarks.conv_forms import median_ms
from mnist_gan import preset


def layer_cases(batch: int, width: int, pack: int) -> list[tuple[str, str, int, int, int]]:
    """(name, kind, in channels, out channels, input side) of each 4x4 stride-2 convolution of the default nets."""
    return [
        (f"G convT {2 * width}->{width} 7->14, batch {batch}", "transposed", 2 * width, width, 7),
        (f"G convT {width}->1 14->28, batch {batch}", "transposed", width, 1, 14),
        (f"D conv {pack}->{width} 28->14, batch {2 * batch // pack}", "conv", pack, width, 28),
        (f"D conv {width}->{2 * width} 14->7, batch {2 * batch // pack}", "conv", width, 2 * width, 14),
    ]


def convolve(kind: str, x: torch.Tensor, weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    if kind == "conv":
        return F.conv2d(x, weight, stride=2, padding=1, groups=groups)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=groups)


def time_layer(kind: str, cin: int, cout: int, side: int, n: int, K: int, repeats: int) -> list[float]:
    """Median ms of forward + backward (input and weights) of K runs' layer: separate, grouped, vmapped; each way
    checked against the separate calls first."""
    shape = (cin, cout, 4, 4) if kind == "transposed" else (cout, cin, 4, 4)
    xs = torch.randn(K, n, cin, side, side, requires_grad=True)  # (K, N, C, H, W): each run's own batch
    ws = torch.randn(K, *shape, requires_grad=True)

    def separate() -> torch.Tensor:
        return torch.stack([convolve(kind, xs[k], ws[k]) for k in range(K)])

    def grouped() -> torch.Tensor:
        x = xs.transpose(0, 1).reshape(n, K * cin, side, side)  # the runs side by side along the channels
        y = convolve(kind, x, ws.reshape(K * shape[0], *shape[1:]), groups=K)
        return y.view(n, K, -1, *y.shape[2:]).transpose(0, 1)

    def vmapped() -> torch.Tensor:
        return vmap(lambda x, w: convolve(kind, x, w))(xs, ws)

    reference = separate()
    upstream = torch.randn_like(reference)
    reference_grads = torch.autograd.grad(reference, (xs, ws), upstream)
    timings = []
    for way in (separate, grouped, vmapped):
        out = way()
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)
        for mine, theirs in zip(torch.autograd.grad(out, (xs, ws), upstream), reference_grads, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-3)
        timings.append(median_ms(lambda way=way: torch.autograd.grad(way(), (xs, ws), upstream), repeats))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="K")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    config = preset("recommended")
    K, batch = args.runs, config.train.batch_size
    cases = layer_cases(batch, config.model.width, config.model.pack)
    with record.saved_output("stacked_layers", args.save):
        print(f"K = {K} runs, fp32, {torch.get_num_threads()} threads; median ms of forward + backward over "
              f"{args.repeats} repeats")
        print(f"{'layer':36s} {'K separate':>10s} {'grouped':>8s} {'vmap':>8s}  grouped  vmap")
        torch.manual_seed(0)
        for name, kind, cin, cout, side in cases:
            timings = time_layer(kind, cin, cout, side, int(name.rsplit("batch ", 1)[1]), K, args.repeats)
            print(f"{name:36s} {timings[0]:10.2f} {timings[1]:8.2f} {timings[2]:8.2f}  "
                  f"{timings[0] / timings[1]:6.2f}x {timings[0] / timings[2]:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
