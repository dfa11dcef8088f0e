"""The search behind the `recommended` preset's settings: an Optuna study over a space file, or named variants
of a preset at equal wall-clock time.

    python -m benchmarks.tune_recommended --space benchmarks/tune_recommended.toml [--trials 40] [--storage URL]
    python -m benchmarks.tune_recommended 5 '[["w32-lsgan", "recommended", {"model.width": 32, "train.loss": "lsgan"}]]'

--space: a study of `mnist-gan tune` (mnist_gan.training.tune: Optuna's ask-and-tell, K trials trained together,
bad ones pruned at evaluations), each trial scored by the classifier-FID of the evaluations during training at
the space's budget of iterations, on the data the space names. Prints the table of trials and the best one, also
appended to --results; the study (runs, study.db, plots) is in --out and resumes when run again. With --storage
postgresql://... several machines work on one study (docs/sweep.md).

Rows (minutes, then a JSON list of [name, preset, {"section.field": value, ...}]): each row is trained for the
same minutes and scored exactly as a row of benchmarks/compare_presets.py (the 10,000 digits in
../shared/data/mnist, 5,000 samples, classifier-FID, confidence, classes covered), printed as one line and
appended to --results. A search's trials share a budget of iterations, not of time, so this equal-time check of
a few finalists stays a loop of its own: the runs go one after another, since two at once would share the CPU
and each get less training. A row may fix its own length instead ({"train.iterations": 13000,
"train.max_minutes": null}): that is how benchmarks/tune_on_gpu.sh screens many variants at once on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import compare_presets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float, nargs="?", help="rows: minutes of training per row")
    parser.add_argument("rows", nargs="?", help='rows: JSON [[name, preset, {"section.field": value}], ...]')
    parser.add_argument("--space", help="a search space file (.toml or .json) of mnist-gan tune: run its study")
    parser.add_argument("--trials", type=int, help="--space: trials in the study (default: the file's)")
    parser.add_argument("--storage", help="--space: an Optuna storage URL shared by several machines")
    parser.add_argument("--data", default=str(compare_presets.SHARED_MNIST), help="rows: IDX directory of the digits")
    parser.add_argument("--device", default=None, help="rows: train on this device (default: the preset's, auto)")
    parser.add_argument("--out", default="runs/tune")
    parser.add_argument("--results", default="runs/tune/results.txt")
    args = parser.parse_args()
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    if args.space:
        study(args)
    elif args.rows is not None:
        rows(args)
    else:
        parser.error("give --space FILE, or minutes and rows")


def study(args: argparse.Namespace) -> None:
    """Run (or resume) the space's study with the tune engine; print and keep its table and best trial."""
    from mnist_gan.settings.tune import read_space
    from mnist_gan.training.tune import run_study
    from mnist_gan.training.tune_report import trials_table, write_plots

    space = read_space(args.space)
    started = time.perf_counter()
    result = run_study(space, args.out, args.storage, trials=args.trials)
    plots = write_plots(result.study, Path(args.out), space.objective.figure)
    best = result.best
    lines = [f"{time.strftime('%H:%M')} study {result.name} ({args.space}): {len(result.trials)} trials, "
             f"{(time.perf_counter() - started) / 60:.1f} min this session",
             trials_table(result.trials, space, None if best is None else best.number),
             "best: none" if best is None else
             f"best: trial {best.number}, {space.objective.figure} {best.value:.3f}: {json.dumps(best.params)}",
             *(f"plot: {plot}" for plot in plots)]
    print("\n".join(lines), flush=True)
    with open(args.results, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def rows(args: argparse.Namespace) -> None:
    """Each row trained for the same minutes, one after another, scored as compare_presets scores a preset."""
    from mnist_gan.evaluation.evaluator import Evaluator

    dataset = compare_presets.load_idx_directory(args.data)
    evaluator = Evaluator.for_dataset(dataset)
    for name, preset_name, overrides in json.loads(args.rows):
        if args.device:
            overrides = {**overrides, "train.device": args.device}
        row = compare_presets.run_one(name, preset_name, overrides, args.minutes, Path(args.out), dataset,
                                      evaluator, 5000)
        histogram = row.get("class_histogram") or [0]
        line = (f"{time.strftime('%H:%M')} {name}: {row['seconds'] / 60:.2f}min it={row['iterations']} "
                f"img/s={row['images_per_s']:.0f} FID={row['fid']:.2f} conf={row['confidence']:.3f} "
                f"classes={row['classes_covered']} min={min(histogram):.3f} max={max(histogram):.3f} "
                f"recall={row['recall']:.3f} coverage={row['coverage']:.3f} {json.dumps(overrides)}")
        print(line, flush=True)
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
