"""The `seed` preset on this machine: training speed at batch 32 and 128, and what it draws after a few minutes.

    python -m benchmarks.seed_run --minutes 3 --out runs/bench-seed

Speed is read from the real training loop (metrics.jsonl's images_per_s, excluding the first logging window,
which includes start-up). Trains on ../shared/data/mnist (10,000 real digits) when present, else the default data.
Prints a table to stdout (--save also writes it to benchmarks/results/seed_run_cpu_YYYY-MM-DD.txt); the grid is
written to <out>/seed-b<batch>/samples/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks import record
from mnist_gan import preset
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def run(batch_size: int, iterations: int | None, minutes: float | None, out: Path, data: str) -> dict:
    config = preset("seed")
    config.data.data = data
    config.train.batch_size = batch_size
    config.train.iterations = iterations
    config.train.max_minutes = minutes
    config.train.log_every = 10
    config.train.sample_every = 100
    config.train.checkpoint_every = 0
    run_dir = out / f"seed-b{batch_size}"
    # overwrite: a run this script wrote before is replaced; anything else there is refused
    result = train(config, run_dir, overwrite=True, progress=False)
    steady = result.history[1:] or result.history
    images_per_s = sum(r["images_per_s"] for r in steady) / len(steady)
    last = result.history[-1]
    return {"batch": batch_size, "iterations": result.iteration, "s_per_iter": batch_size / images_per_s,
            "images_per_s": images_per_s, "d_loss": last["d_loss"], "g_loss": last["g_loss"],
            "grid": sorted((run_dir / "samples").glob("iter_*.png"))[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training time for the batch-32 grid run")
    parser.add_argument("--speed-iterations", type=int, default=60, help="iterations for the batch-128 speed run")
    parser.add_argument("--out", default="runs/bench-seed")
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. whether the CPU was shared)")
    args = parser.parse_args()
    with record.saved_output("seed_run", args.save, args.note):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    data = str(SHARED_MNIST) if SHARED_MNIST.exists() else "mnist"
    out = Path(args.out)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data: {data}")
    rows = [run(32, None, args.minutes, out, data), run(128, args.speed_iterations, None, out, data)]
    print(f"{'batch':>5} {'iterations':>10} {'s/iter':>8} {'images/s':>9} {'d_loss':>7} {'g_loss':>7}  last grid")
    for r in rows:
        print(f"{r['batch']:>5} {r['iterations']:>10} {r['s_per_iter']:>8.4f} {r['images_per_s']:>9.1f} "
              f"{r['d_loss']:>7.4f} {r['g_loss']:>7.4f}  {r['grid']}")


if __name__ == "__main__":
    main()
