"""Settings across seeds through the sweep engine: each row's seeds trained together as one sweep, for a fixed
number of iterations; every run scored as benchmarks/compare_presets.py scores a row; each figure's mean, std,
min and max per row.

    python -m benchmarks.seed_spread --iterations 2600 --seeds 0-2 --data /usr/share/datasets/fashion-mnist \\
        --row default recommended '{}' --row labels recommended '{"model.conditional": true}' --save

A row is a name, a preset and overrides {"section.field": value}. Its seeds are the runs of one sweep
(mnist_gan.training.sweep.train_runs_together: one batched computation, each run an ordinary run directory under
--out), so K seeds cost one stacked training, not K runs one after another. Rows share a budget of iterations,
not of time: the sweep's seconds are printed beside each row, and benchmarks/compare_presets.py is the script
for equal wall-clock time. With --baseline NAME, each row's mean FID is printed as a ratio of that row's. Without
--row: the default preset and the same with labels. Trains on --data's training split and scores --n samples
against its test split (the real digits of ../shared/data/mnist by default); the real-vs-real floor is printed
below the table. --save appends the output to benchmarks/results/seed_spread_cpu_YYYY-MM-DD.txt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks import record
from benchmarks.compare_presets import SHARED_MNIST, score_run, timed_config
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.evaluation.evaluator import Evaluator
from mnist_gan.settings.config import RunConfig
from mnist_gan.settings.sweep import parse_seeds
from mnist_gan.training.sweep import train_runs_together

DEFAULT_ROWS = [("default", "recommended", {}), ("labels", "recommended", {"model.conditional": True})]
SUMMARISED = ("fid", "precision", "recall", "coverage", "smallest", "largest", "label_accuracy")


def configs_for(preset_name: str, overrides: dict, seeds: list[int], iterations: int, data: Path) -> list[RunConfig]:
    """One config per seed: compare_presets' row config (no grids or checkpoints on the way; the run's last
    checkpoint is written at its end) for `iterations` instead of a time, on `data`, then the row's overrides."""
    fixed = {"train.iterations": iterations, "train.max_minutes": None, "data.data": str(data)}
    return [timed_config(preset_name, {**fixed, **overrides, "train.seed": seed}, None) for seed in seeds]


def run_row(name: str, preset_name: str, overrides: dict, args: argparse.Namespace, evaluator) -> dict:
    """Train the row's seeds as one sweep and score each run; return the row with its runs' figures."""
    configs = configs_for(preset_name, overrides, args.seeds, args.iterations, args.data)
    out = Path(args.out) / name
    run_dirs = [out / f"seed{seed}" for seed in args.seeds]
    started = time.perf_counter()
    # overwrite: a run this script wrote before is replaced; anything else there is refused, never deleted
    outcomes = train_runs_together(configs, run_dirs, overwrite=True)
    seconds = time.perf_counter() - started
    runs = []
    for seed, outcome in zip(args.seeds, outcomes, strict=True):
        figures = score_run(outcome.run_dir, out / f"grid_seed{seed}.png", evaluator, args.n)
        histogram = figures.get("class_histogram") or [0.0]
        runs.append({**figures, "seed": seed, "status": outcome.status, "iterations": outcome.iterations,
                     "smallest": min(histogram), "largest": max(histogram)})
    return {"name": name, "preset": preset_name, "overrides": overrides, "seconds": seconds, "runs": runs,
            "images_per_s": sum(r["iterations"] for r in runs) * configs[0].train.batch_size / seconds}


def spread(values: list[float]) -> str:
    """mean ± std (min-max) of a row's figure across its seeds."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f} ({min(values):.3f}-{max(values):.3f})"


def tables(rows: list[dict], baseline: str | None) -> str:
    """The runs, one line each, then one line per row with each figure's spread across its seeds."""
    lines = ["| row | seed | status | iterations | classifier-FID | precision | recall | coverage | smallest class "
             "| largest class | accuracy on requested class |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for r in row["runs"]:
            accuracy = f"{r['label_accuracy']:.3f}" if "label_accuracy" in r else "-"
            lines.append(f"| {row['name']} | {r['seed']} | {r['status']} | {r['iterations']} | {r['fid']:.2f} "
                         f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['coverage']:.3f} | {r['smallest']:.3f} "
                         f"| {r['largest']:.3f} | {accuracy} |")
    figures = [f for f in SUMMARISED if any(f in r for row in rows for r in row["runs"])]
    lines += ["", f"| row | seeds | sweep seconds | images/s | {' | '.join(figures)} |",
              "|---|---|---|---|" + "---|" * len(figures)]
    for row in rows:
        cells = [spread([r[f] for r in row["runs"]]) if f in row["runs"][0] else "-" for f in figures]
        lines.append(f"| {row['name']} | {len(row['runs'])} | {row['seconds']:.0f} | {row['images_per_s']:.0f} "
                     f"| {' | '.join(cells)} |")
    if baseline is not None:
        base = statistics.fmean(r["fid"] for r in next(row for row in rows if row["name"] == baseline)["runs"])
        lines += ["", *(f"{row['name']}: mean FID / {baseline}'s = "
                        f"{statistics.fmean(r['fid'] for r in row['runs']) / base:.3f}" for row in rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2600, help="iterations of every run (default: 2600)")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="seeds: 0-2, 0,3,5 (default: 0-2)")
    parser.add_argument("--row", nargs=3, action="append", default=[], metavar=("NAME", "PRESET", "JSON"),
                        help='a row, e.g. --row sc30 recommended \'{"model.self_condition": 30}\'')
    parser.add_argument("--baseline", help="print each row's mean FID as a ratio of this row's")
    parser.add_argument("--n", type=int, default=5000, help="samples evaluated per run (default: 5000)")
    parser.add_argument("--data", type=Path, default=SHARED_MNIST, help="IDX directory (default: the real digits)")
    parser.add_argument("--out", default="runs/seed_spread")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    plan = [(name, p, json.loads(o)) for name, p, o in args.row] or DEFAULT_ROWS
    if args.baseline is not None and args.baseline not in [name for name, _, _ in plan]:
        parser.error(f"--baseline {args.baseline} names no row")
    dataset = load_idx_directory(args.data)
    with record.saved_output("seed_spread", args.save, args.note):
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(dataset)} training images from "
              f"{args.data}; seeds {args.seeds}, {args.iterations} iterations each; {args.n} samples evaluated "
              "per run")
        evaluator = Evaluator.for_dataset(dataset)
        rows = []
        for name, preset_name, overrides in plan:
            rows.append(run_row(name, preset_name, overrides, args, evaluator))
            print(f"{name}: FID {[round(r['fid'], 2) for r in rows[-1]['runs']]}", file=sys.stderr, flush=True)
        print(tables(rows, args.baseline))
        floor = evaluator.floor()
        if floor is not None:
            print(f"real-vs-real floor (two halves of the reference images): FID {floor['fid']:.3f}")
        for row in rows:
            print(f"{row['name']}: {row['preset']} {json.dumps(row['overrides'])}")


if __name__ == "__main__":
    main()
