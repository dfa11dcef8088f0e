"""Stacked MNIST mode coverage (PacGAN, Lin et al. 2018, Table 2): train each row for a fixed wall-clock budget on
Stacked MNIST, draw samples, read each channel with the project's MNIST classifier, and print modes covered (of
1,000) and KL(samples' mode histogram || uniform) beside the published figures, with the FID in the classifier's
features of the three channels.

    flock /tmp/cpu.lock python -m benchmarks.stacked_mnist --minutes 20 --out runs/stacked

Data: mnist_gan.data.datasets.stack_digits of the 10,000 real digits in ../shared/data/mnist (60,000 images, each channel
a digit drawn with replacement under seed 0). Scoring is `mnist-gan evaluate`'s for a stacked set
(mnist_gan.evaluation.evaluator.StackedEvaluator): the classifier trained once on those digits (cached), applied to
each channel alone. Rows: a preset with overrides (section.field: value), always
with --channels 3; `--row NAME PRESET JSON` adds one. Training time excludes data loading and scoring.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.compare_presets import SHARED_MNIST, timed_config
from mnist_gan.data.datasets import stack_digits
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.evaluation.evaluator import Evaluator
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.grids import save_grid
from mnist_gan.sampling.sample import generate, grid_inputs
from mnist_gan.training.loop import train

SAMPLES = 26_000  # as VEEGAN and PacGAN count modes

ROWS = {  # name -> (preset, overrides)
    "dcgan": ("dcgan", {"train.precision": "fp32"}),
    "unconditioned": ("recommended", {"model.self_condition": 0, "model.pack": 1}),  # recommended until issue 14
    "recommended": ("recommended", {}),  # self-conditioned on 100 pixel clusters, packs of 2
    "unconditioned-pack2": ("recommended", {"model.self_condition": 0}),
    "no-pack": ("recommended", {"model.pack": 1}),
    "top-k": ("recommended", {"train.top_k": True}),
}
# PacGAN's Table 2 (Stacked MNIST, DCGAN-style networks): (modes of 1,000, KL); None where not quoted here.
PUBLISHED = [("DCGAN", 99.0, 3.40), ("Unrolled GAN", 48.7, None), ("VEEGAN", 150.0, None), ("PacDCGAN2", 1000.0, 0.06)]


def configured(preset_name: str, overrides: dict, minutes: float):
    return timed_config(preset_name, {"model.channels": 3, **overrides}, minutes)


def run_one(name: str, preset_name: str, overrides: dict, minutes: float, out: Path, dataset, evaluator,
            n: int) -> dict:
    config = configured(preset_name, overrides, minutes)
    run_dir = out / name
    started = time.perf_counter()
    # overwrite: a run this script wrote before is replaced; anything else there is refused, never deleted
    result = train(config, run_dir, overwrite=True, dataset=dataset, progress=False)
    seconds = time.perf_counter() - started
    model_config, G, _ = load_generator(run_dir)
    images = generate(G, model_config, n, seed=0)  # (n, 3, 28, 28)
    z, labels = grid_inputs(64, model_config, seed=1)
    with torch.no_grad():
        save_grid(G.eval()(z, labels), out / "grids" / f"{name}.png", nrow=8, scale=2)
    scores = evaluator.evaluate(images.clamp(-1, 1), kid_subsets=10)
    return {"name": name, "preset": preset_name, "overrides": overrides, "minutes": minutes,
            "iterations": result.iteration, "iterations_per_s": result.iteration / seconds,
            "modes": scores["modes"], "kl": scores["mode_kl"], "fid": scores["fid"], "n": n}


def table(rows: list[dict]) -> str:
    lines = ["| run | preset | overrides | minutes | iterations | it/s | modes (of 1,000) | KL | FID |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['preset']} | `{json.dumps(r['overrides'])}` | {r['minutes']:g} "
                     f"| {r['iterations']} | {r['iterations_per_s']:.1f} | {r['modes']} | {r['kl']:.2f} | {r['fid']:.2f} |")
    for name, modes, kl in PUBLISHED:
        lines.append(f"| {name} (PacGAN Table 2) | - | - | - | - | - | {modes:g} | "
                     f"{'-' if kl is None else f'{kl:.2f}'} | - |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes per row (default: 20)")
    parser.add_argument("--n", type=int, default=SAMPLES, help=f"samples scored per row (default: {SAMPLES:,})")
    parser.add_argument("--only", nargs="*", help=f"run only these rows (of: {', '.join(ROWS)})")
    parser.add_argument("--row", nargs=3, action="append", default=[], metavar=("NAME", "PRESET", "JSON"),
                        help='add a row, e.g. --row sc50 recommended \'{"model.self_condition": 50}\'')
    parser.add_argument("--out", default="runs/stacked")
    args = parser.parse_args()
    base = load_idx_directory(SHARED_MNIST)
    dataset = stack_digits(base)
    evaluator = Evaluator.for_dataset(dataset)  # a StackedEvaluator: the base digits' classifier, channel by channel
    classifier = evaluator.feature_classifier
    plan = {name: row for name, row in ROWS.items() if not args.only or name in args.only}
    plan |= {name: (preset_name, json.loads(overrides)) for name, preset_name, overrides in args.row}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {dataset.source}; classifier "
          f"{100 * classifier.heldout_accuracy:.2f}% on held-out digits; {args.n:,} samples per row")
    rows = []
    for name, (preset_name, overrides) in plan.items():
        rows.append(run_one(name, preset_name, overrides, args.minutes, Path(args.out), dataset, evaluator, args.n))
        print(f"{name}: {rows[-1]['modes']} modes, KL {rows[-1]['kl']:.2f}", file=sys.stderr, flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
