"""Quality against wall-clock seconds: the default preset against the previous default step, in one run.

    python -m benchmarks.time_to_digits --minutes 10 --save

Trains each row for --minutes with the real training loop (`mnist_gan.training.loop.train`) on the 10,000 digits
of ../shared/data/mnist, keeping a checkpoint every few iterations; a checkpoint's time is its file's modification
time less the moment train() was called, so data loading, the self-conditioning clusters and the checkpoints
themselves count. Then it scores the checkpoints nearest below each time mark, the last one (and the `previous`
row's iterations 3,200 and 8,000) with the evaluator's classifier-FID (mnist_gan.evaluation.evaluator; 10,000 samples of G's moving
average, noise seed 0, against the same digits). Prints one line per scored checkpoint, the targets of the speed
work, and plots FID against seconds for both rows (--plot). Run it on an otherwise idle machine: both rows share
its speed, so their ratio holds even where the machine's speed does not. --save appends the output to
benchmarks/results/time_to_digits_cpu_YYYY-MM-DD.txt under a header naming the date, commit, CPU and torch.

Rows: `default` is the preset as it is (`mnist-gan train`); `previous` the default before it (batch 32, fp32,
--lr 4e-4, --lr-d 8e-4; `mnist-gan train --batch-size 32 --precision fp32 --lr 4e-4 --lr-d 8e-4`). Candidate
settings are further rows, each the default with some overrides, scored at the same marks:

    python -m benchmarks.time_to_digits --minutes 3 --row equal-rates '{"train.lr": 1.2e-3, "train.lr_d": 1.2e-3}'
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import record
from mnist_gan import preset
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.evaluation.evaluator import Evaluator
from mnist_gan.run.checkpoint import list_checkpoints, load_checkpoint, models_from_checkpoint
from mnist_gan.settings.config import apply_overrides
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
# The default preset before this benchmark's speed work, as flags over today's preset
PREVIOUS_DEFAULT = {"train.batch_size": 32, "train.precision": "fp32", "train.lr": 4e-4, "train.lr_d": 8e-4}
ROWS = {  # name -> (overrides of the default preset, iterations between checkpoints)
    "previous": (PREVIOUS_DEFAULT, 400),
    "default": ({}, 100),
}
MARKS_MINUTES = (0.5, 1, 1.5, 2, 3, 5, 7.5, 10)
PREVIOUS_SHORT, PREVIOUS_LONG = 3200, 8000  # the target: the default reaches PREVIOUS_LONG's FID in SHORT's time


def train_row(name: str, minutes: float, out: Path, dataset) -> dict[int, float]:
    """Train one row for `minutes`; return {iteration: seconds since train() was called} of its checkpoints."""
    overrides, every = ROWS[name]
    config = apply_overrides(preset("recommended"), overrides)
    config.train.max_minutes, config.train.iterations = minutes, 10**9
    config.train.checkpoint_every, config.train.keep = every, 10**6
    config.train.sample_every, config.train.log_every = 0, 50
    return train_timed(config, out, dataset)


def train_timed(config, out: Path, dataset) -> dict[int, float]:
    """Train `config` quietly into `out`; {iteration: seconds since train() was called} of its checkpoints (each
    file's modification time, so data loading, clustering and the checkpoints themselves count)."""
    started = time.time()
    with contextlib.redirect_stderr(io.StringIO()):
        train(config, out, overwrite=True, dataset=dataset, progress=False)
    return {int(path.stem.split("_")[1]): path.stat().st_mtime - started for path in list_checkpoints(out)}


def score(out: Path, iteration: int, evaluator: Evaluator, n: int) -> dict:
    path = out / "checkpoints" / f"iter_{iteration:08d}.ckpt"
    config, G, _ = models_from_checkpoint(load_checkpoint(path), path)
    return evaluator.evaluate_generator(G, config.model, n=n, seed=0)


def latest_before(times: dict[int, float], seconds: float) -> int | None:
    earlier = [iteration for iteration, at in times.items() if at <= seconds]
    return max(earlier) if earlier else None


def plot(curves: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        if not points:
            continue
        seconds, fids = zip(*sorted(points), strict=True)
        axes.plot(seconds, fids, marker="o", label=name)
    axes.set(xlabel="seconds of training (2-core CPU)", ylabel="classifier-FID (lower is better)", yscale="log",
             title="Time to digits")
    axes.grid(alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time of each row")
    parser.add_argument("--data", type=Path, default=SHARED_MNIST, help="MNIST IDX directory")
    parser.add_argument("--n", type=int, default=10_000, help="samples per evaluation")
    parser.add_argument("--plot", type=Path, help="write the curves here (PNG)")
    parser.add_argument("--row", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                        help="a candidate row: the default preset with these overrides, e.g. "
                             "equal-rates '{\"train.lr\": 1.2e-3, \"train.lr_d\": 1.2e-3}'")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    for name, overrides in args.row:
        ROWS[name] = (json.loads(overrides), ROWS["default"][1])

    dataset = load_idx_directory(args.data)
    with record.saved_output("time_to_digits", args.save, args.note), tempfile.TemporaryDirectory() as scratch:
        print(f"{len(dataset)} digits from {args.data}; {args.minutes:g} minutes per row; "
              f"{torch.get_num_threads()} threads; classifier-FID of {args.n} samples, noise seed 0")
        times = {name: train_row(name, args.minutes, Path(scratch) / name, dataset) for name in ROWS}
        evaluator = Evaluator.for_dataset(dataset)
        fids: dict[str, dict[int, float]] = {name: {} for name in ROWS}
        print("row       iteration   seconds  classifier-FID  smallest-largest class")
        for name in ROWS:
            wanted = {latest_before(times[name], 60 * mark) for mark in MARKS_MINUTES if mark <= args.minutes}
            wanted.add(max(times[name]))  # where the row stopped
            if name == "previous":
                wanted |= {PREVIOUS_SHORT, PREVIOUS_LONG} & times[name].keys()
            elif PREVIOUS_SHORT in times["previous"]:  # the target's budget: the previous step's 3,200 iterations
                wanted.add(latest_before(times[name], times["previous"][PREVIOUS_SHORT]))
            for iteration in sorted(i for i in wanted if i is not None):
                result = score(Path(scratch) / name, iteration, evaluator, args.n)
                fids[name][iteration] = result["fid"]
                histogram = result.get("class_histogram") or [0.0]
                print(f"{name:9s} {iteration:9d} {times[name][iteration]:9.1f} {result['fid']:15.2f}  "
                      f"{100 * min(histogram):.1f}-{100 * max(histogram):.1f}%", flush=True)
            shutil.rmtree(Path(scratch) / name)  # gigabytes of checkpoints
        for name in ROWS:
            last = max(times[name])
            print(f"{name}: {last} iterations in {times[name][last]:.1f} s ({last / times[name][last]:.1f} it/s)")
        previous = fids["previous"]
        rows = [name for name in ROWS if name != "previous"]
        if {PREVIOUS_SHORT, PREVIOUS_LONG} <= previous.keys():
            budget = times["previous"][PREVIOUS_SHORT]
            print(f"target 1: previous step, {PREVIOUS_SHORT} iterations: {budget:.1f} s; its FID at "
                  f"{PREVIOUS_LONG} iterations: {previous[PREVIOUS_LONG]:.2f}")
            for name in rows:
                reached = latest_before({i: times[name][i] for i in fids[name]}, budget)
                if reached is not None:
                    verdict = "met" if fids[name][reached] <= previous[PREVIOUS_LONG] else "NOT met"
                    print(f"          {name} within {budget:.1f} s: FID {fids[name][reached]:.2f} at iteration "
                          f"{reached} ({times[name][reached]:.1f} s): {verdict}")
        if args.minutes >= 5:
            at_five = {name: latest_before({i: times[name][i] for i in fids[name]}, 300) for name in ROWS}
            for name in rows:
                if at_five[name] is not None and at_five["previous"] is not None:
                    five, before = fids[name][at_five[name]], previous[at_five["previous"]]
                    verdict = "met" if five <= before else "NOT met"
                    print(f"at 5 minutes: {name} FID {five:.2f}, previous {before:.2f} ({five / before:.2f} of "
                          f"it): {verdict}")
        if args.plot:
            plot({name: [(times[name][i], fid) for i, fid in fids[name].items()] for name in ROWS}, args.plot)
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
