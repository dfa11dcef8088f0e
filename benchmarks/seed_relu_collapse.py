"""Reproduce the tutorial's reported failure: a ReLU generator collapses to flat gray.

    python -m benchmarks.seed_relu_collapse --iterations 2000

The tutorial reports d_loss ~0.0003 and g_loss ~7.6 by iteration 2,000 at batch 32. This trains `seed-relu`
(batch 32) and, for contrast, `seed`, and prints the losses, how flat 256 samples are (clamped to [-1, 1] as a
grid shows them: the share of pixels at mid-gray, and the spread of pixel values within each image, ~0.7 for real
digits and ~0 for a flat image), G's and D's gradient norms at the first and last log
steps, and the warnings the run raised, each at the iteration of the metrics line that first carried it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import record
from mnist_gan import preset
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.sample import generate
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--out", default="runs/bench-relu")
    parser.add_argument("--presets", nargs="+", default=["seed-relu", "seed"])
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. whether the CPU was shared)")
    args = parser.parse_args()
    with record.saved_output("seed_relu_collapse", args.save, args.note):
        collapse(args)


def collapse(args: argparse.Namespace) -> None:
    data = str(SHARED_MNIST) if SHARED_MNIST.exists() else "mnist"
    print(f"data: {data}, batch 32, {args.iterations} iterations")
    print(f"{'preset':>10} {'d_loss':>9} {'g_loss':>8} {'D(x)':>6} {'D(G(z))':>8} {'mid-gray':>8} {'spread':>7} "
          f"{'|grad G| 1st->last':>14} {'|grad D| 1st->last':>15}  warnings (first iteration)")
    for name in args.presets:
        config = preset(name)
        config.data.data = data
        config.train.batch_size = 32
        config.train.iterations = args.iterations
        config.train.checkpoint_every = 0
        config.train.sample_every = 250
        run_dir = Path(args.out) / name
        # overwrite: a run this script wrote before is replaced; anything else there is refused
        result = train(config, run_dir, overwrite=True, progress=False)
        last = result.history[-1]
        model_config, G, _ = load_generator(result.checkpoint)
        images = generate(G, model_config, 256, seed=0).clamp(-1, 1)  # what a grid shows
        mid_gray = (images.abs() < 1 / 127.5).float().mean().item()  # pixels that render as 128, mid-gray
        spread = images.flatten(1).std(dim=1).mean().item()  # within-image pixel spread; real digits ~0.7
        first = {}  # each warning's first iteration
        for r in result.history:
            for code in r.get("warnings", []):
                first.setdefault(code, r["iteration"])
        warnings = [f"{code}@{iteration}" for code, iteration in sorted(first.items(), key=lambda item: item[1])]
        norms = [r for r in result.history if "grad_norm_g" in r and "grad_norm_d" in r]
        grads = (f"{norms[0]['grad_norm_g']:.2f} -> {norms[-1]['grad_norm_g']:.2f}",
                 f"{norms[0]['grad_norm_d']:.2f} -> {norms[-1]['grad_norm_d']:.3f}") if norms else ("-", "-")
        print(f"{name:>10} {last['d_loss']:>9.5f} {last['g_loss']:>8.3f} {last['d_x']:>6.3f} {last['d_g_z']:>8.4f} "
              f"{mid_gray:>8.1%} {spread:>7.3f} {grads[0]:>14} {grads[1]:>15}  {','.join(warnings) or '-'}   "
              f"grids: {run_dir / 'samples'}", flush=True)


if __name__ == "__main__":
    main()
