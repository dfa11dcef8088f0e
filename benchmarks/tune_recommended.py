"""Variants of a preset at equal wall-clock time: the search behind the `recommended` preset's settings.

    python -m benchmarks.tune_recommended 5 '[["w32-lsgan", "recommended", {"model.width": 32, "train.loss": "lsgan"}]]'

Arguments: minutes per run, then a JSON list of [name, preset, {"section.field": value, ...}] rows. Each row is
trained and scored exactly as a row of benchmarks/compare_presets.py (the 10,000 digits in ../shared/data/mnist,
5,000 samples, classifier-FID, confidence, classes covered) and printed as one line, also appended to
--results. Runs go one after another: two at once would share the CPU and each get less training.

A row may fix its own length instead ({"train.iterations": 13000, "train.max_minutes": null}): that is how
benchmarks/tune_on_gpu.sh screens many variants at once on a GPU, each for the iterations it would reach in the
same minutes on the CPU, before the equal-time CPU runs decide.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import compare_presets
from mnist_gan.evaluation.evaluator import Evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("minutes", type=float)
    parser.add_argument("rows", help='JSON: [[name, preset, {"section.field": value}], ...]')
    parser.add_argument("--data", default=str(compare_presets.SHARED_MNIST), help="IDX directory of the digits")
    parser.add_argument("--device", default=None, help="train on this device (default: the preset's, auto)")
    parser.add_argument("--out", default="runs/tune")
    parser.add_argument("--results", default="runs/tune/results.txt")
    args = parser.parse_args()
    dataset = compare_presets.load_idx_directory(args.data)
    evaluator = Evaluator.for_dataset(dataset)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
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
