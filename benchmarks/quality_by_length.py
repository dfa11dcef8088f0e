"""Quality against training length: one run of a preset, scored at several iteration counts.

    python -m benchmarks.quality_by_length --data /usr/share/datasets/fashion-mnist --save

Trains the preset (with --row's overrides, if any) once, to the last of --marks, with the real training loop
(`mnist_gan.training.loop.train`) on an IDX directory's training split (../shared/data/mnist's 10,000 digits by
default), keeping a checkpoint at every --marks iteration, then scores each of those checkpoints as
benchmarks/compare_presets.py scores a run (n samples of G's moving average, noise seed 0, classifier-FID and class
shares against the data set's test split) and prints, per mark, the seconds since train() was called (the
checkpoint file's modification time: data loading, clustering and checkpoints count), the FID and its ratio to the
first mark's. The real-vs-real floor is printed under the table. It answers "how far does more training alone take
this preset, and how long is that on this machine". --save appends the output to
benchmarks/results/quality_by_length_cpu_YYYY-MM-DD.txt under a header naming the date, commit, CPU and torch.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from functools import reduce
from pathlib import Path

import torch

from benchmarks import record
from benchmarks.compare_presets import score_run
from benchmarks.speed import SHARED_MNIST
from benchmarks.time_to_digits import train_timed
from mnist_gan import preset
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.evaluation.evaluator import Evaluator
from mnist_gan.settings.config import apply_overrides

DEFAULT_MARKS = (1000, 2600, 5000, 8000, 12000, 16000)


def train_with_marks(preset_name: str, overrides: dict, marks: list[int], out: Path, dataset) -> dict[int, float]:
    """Train to the last mark, a checkpoint every gcd(marks) iterations; {iteration: seconds} of every one."""
    config = apply_overrides(preset(preset_name), overrides)
    config.train.iterations, config.train.max_minutes = max(marks), None
    config.train.checkpoint_every, config.train.keep = reduce(math.gcd, marks), 10**6
    config.train.sample_every, config.train.log_every = 0, 50
    return train_timed(config, out, dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_MNIST, help="IDX directory (default: the real digits)")
    parser.add_argument("--preset", default="recommended")
    parser.add_argument("--row", default="{}", metavar="JSON", help="overrides of the preset, e.g. "
                                                                     "'{\"model.self_condition\": 300}'")
    parser.add_argument("--marks", type=int, nargs="+", default=list(DEFAULT_MARKS),
                        help="iterations at which the run is scored (it trains to the last)")
    parser.add_argument("--n", type=int, default=5000, help="samples evaluated per mark (default: 5000)")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    marks, overrides = sorted(set(args.marks)), json.loads(args.row)
    dataset = load_idx_directory(args.data)
    with record.saved_output("quality_by_length", args.save, args.note), tempfile.TemporaryDirectory() as scratch:
        print(f"{args.preset} {json.dumps(overrides)}; {len(dataset)} training images from {args.data}; "
              f"{torch.get_num_threads()} threads; {args.n} samples scored per mark, noise seed 0")
        run_dir = Path(scratch) / "run"
        times = train_with_marks(args.preset, overrides, marks, run_dir, dataset)
        evaluator = Evaluator.for_dataset(dataset)
        print("| iteration | seconds | it/s so far | classifier-FID | of the first mark's | smallest-largest class |")
        print("|---|---|---|---|---|---|")
        first = None
        for mark in marks:
            path = run_dir / "checkpoints" / f"iter_{mark:08d}.ckpt"
            scores = score_run(path, Path(scratch) / "grids" / f"{mark}.png", evaluator, args.n)
            first = first or scores["fid"]
            histogram = scores.get("class_histogram") or [0.0]
            print(f"| {mark} | {times[mark]:.1f} | {mark / times[mark]:.1f} | {scores['fid']:.2f} | "
                  f"{scores['fid'] / first:.3f} | {100 * min(histogram):.1f}-{100 * max(histogram):.1f}% |", flush=True)
        floor = evaluator.floor()
        if floor is not None:
            print(f"real-vs-real floor (two halves of the reference images): FID {floor['fid']:.3f}")


if __name__ == "__main__":
    main()
