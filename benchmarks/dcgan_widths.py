"""Quality per second of the dcgan preset at a few widths: training speed and early quality at equal time.

    flock /tmp/cpu.lock python -m benchmarks.dcgan_widths --widths 16 32 64 --minutes 1 --out runs/widths

Each width trains the `dcgan` preset (--width W) on the 10,000 real digits in ../shared/data/mnist for the same
wall-clock budget, then n samples are scored with mnist_gan.evaluation.metrics (classifier-FID, confidence, classes
covered). images/s is the training loop's own figure (metrics.jsonl), excluding the first logging window, which
includes start-up. The preset's default width is the one that reaches the lowest FID in the budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mnist_gan import preset
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.evaluation.evaluator import Evaluator
from mnist_gan.gan.models import build_discriminator, build_generator, count_parameters
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--minutes", type=float, default=1.0, help="training minutes per width (default: 1)")
    parser.add_argument("--n", type=int, default=5000, help="samples evaluated per width (default: 5000)")
    parser.add_argument("--out", default="runs/widths")
    args = parser.parse_args()
    dataset = load_idx_directory(SHARED_MNIST)
    evaluator = Evaluator.for_dataset(dataset)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(dataset)} digits; "
          f"{args.minutes:g} min per width, {args.n} samples evaluated")
    print(f"{'width':>5} {'G params':>9} {'D params':>9} {'iterations':>10} {'images/s':>9} {'FID':>8} "
          f"{'confidence':>10} {'classes':>7}")
    for width in args.widths:
        config = preset("dcgan")
        config.model.width = width
        config.train.max_minutes, config.train.iterations = args.minutes, 10**9
        config.train.sample_every, config.train.checkpoint_every, config.train.log_every = 0, 0, 50
        run_dir = Path(args.out) / f"width-{width}"
        # overwrite: a run this script wrote before is replaced; anything else there is refused
        result = train(config, run_dir, overwrite=True, dataset=dataset, progress=False)
        steady = result.history[1:-1] or result.history
        images_per_s = sum(r["images_per_s"] for r in steady) / len(steady)
        model_config, G, _ = load_generator(run_dir)
        scores = evaluator.evaluate_generator(G, model_config, n=args.n, seed=0)
        g_params = count_parameters(build_generator(config.model))[1]
        d_params = count_parameters(build_discriminator(config.model))[1]
        print(f"{width:>5} {g_params:>9,} {d_params:>9,} {result.iteration:>10} {images_per_s:>9.0f} "
              f"{scores['fid']:>8.2f} {scores['confidence']:>10.3f} {scores['classes_covered']:>7}", flush=True)


if __name__ == "__main__":
    main()
