"""Reproduce the tutorial's reported failure: a ReLU generator collapses to flat gray.

    python -m benchmarks.seed_relu_collapse --iterations 2000

The tutorial reports d_loss ~0.0003 and g_loss ~7.6 by iteration 2,000 at batch 32. This trains `seed-relu`
(batch 32) and, for contrast, `seed`, and prints the losses, how flat 256 samples are (clamped to [-1, 1] as a
grid shows them: the share of pixels at mid-gray, and the spread of pixel values within each image, ~0.7 for real
digits and ~0 for a flat image), and the warnings the run raised.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnist_gan import preset
from mnist_gan.sampling.sample import generate
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--out", default="runs/bench-relu")
    parser.add_argument("--presets", nargs="+", default=["seed-relu", "seed"])
    args = parser.parse_args()
    data = str(SHARED_MNIST) if SHARED_MNIST.exists() else "mnist"
    print(f"data: {data}, batch 32, {args.iterations} iterations")
    print(f"{'preset':>10} {'d_loss':>9} {'g_loss':>8} {'D(x)':>6} {'D(G(z))':>8} {'mid-gray':>8} {'spread':>7}  warnings")
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
        from mnist_gan.run.checkpoint import load_generator

        model_config, G, _ = load_generator(result.checkpoint)
        images = generate(G, model_config, 256, seed=0).clamp(-1, 1)  # what a grid shows
        mid_gray = (images.abs() < 1 / 127.5).float().mean().item()  # pixels that render as 128, mid-gray
        spread = images.flatten(1).std(dim=1).mean().item()  # within-image pixel spread; real digits ~0.7
        warnings = sorted({w for r in result.history for w in r.get("warnings", [])})
        print(f"{name:>10} {last['d_loss']:>9.5f} {last['g_loss']:>8.3f} {last['d_x']:>6.3f} {last['d_g_z']:>8.4f} "
              f"{mid_gray:>8.1%} {spread:>7.3f}  {','.join(warnings) or '-'}   grids: {run_dir / 'samples'}")


if __name__ == "__main__":
    main()
