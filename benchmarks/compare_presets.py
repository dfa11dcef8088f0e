"""Presets and losses at equal wall-clock time: train each for a fixed budget, evaluate, print a Markdown table.

    flock /tmp/cpu.lock python -m benchmarks.compare_presets --minutes 5 --loss-minutes 1.5 --out runs/compare

Trains on the 10,000 real digits in ../shared/data/mnist (or --data: another IDX directory, such as Debian's
Fashion-MNIST, trained on its training split and scored against its test split), evaluates n samples of each
generator with
mnist_gan.evaluation.metrics (classifier-FID against those digits, mean max-softmax confidence, classes covered, and for the
conditional model the classifier's accuracy against the requested digit), and writes a sample grid per run to
<out>/grids/. The presets (seed; dcgan: fp32, BatchNorm, BCE, no EMA; recommended; recommended --conditional)
get --minutes each; the losses (the recommended preset with each --loss) get --loss-minutes each. Training time
excludes data loading and evaluation. Prints the table to stdout and the target checks after it; --save appends
them to benchmarks/results/compare_presets_cpu_YYYY-MM-DD.txt under a header naming the date, commit, CPU and
torch.

Candidates for `recommended` (self-conditioning's cluster count and re-clustering, packing, top-k, and the
unconditioned networks) are rows too, run only when named with --only; --seeds runs every row once per seed (the
spread of the winner). The 5-minute comparison of docs/benchmarks.md:

    flock /tmp/cpu.lock python -m benchmarks.compare_presets --minutes 5 --out runs/candidates \
        --only unconditioned conditional-pack1 no-pack recommended
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks import record
from mnist_gan import preset
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.evaluation.evaluator import Evaluator, conditional_accuracy
from mnist_gan.gan.losses import LOSSES
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.grids import save_grid
from mnist_gan.sampling.sample import grid_inputs
from mnist_gan.settings.config import apply_overrides
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"

PRESET_RUNS = {  # row name -> (preset, overrides)
    "seed": ("seed", {}),
    "dcgan": ("dcgan", {"train.precision": "fp32"}),  # plain: fp32, BatchNorm, BCE, no EMA
    "recommended": ("recommended", {}),
    "conditional": ("recommended", {"model.conditional": True}),  # labels in place of the preset's clusters
}
CANDIDATE_RUNS = {  # row name -> (preset, overrides): run only when --only names them
    "unconditioned": ("recommended", {"model.self_condition": 0, "model.pack": 1}),  # recommended until issue 14
    "conditional-pack1": ("recommended", {"model.conditional": True, "model.pack": 1}),
    "no-pack": ("recommended", {"model.pack": 1}),
    **{f"sc{k}": ("recommended", {"model.self_condition": k}) for k in (10, 20, 50, 200)},  # recommended: 100
    "recluster": ("recommended", {"train.recluster_every": 2000}),  # the paper's re-clustering on D's features
    "top-k": ("recommended", {"train.top_k": True}),
    "unconditioned-pack2": ("recommended", {"model.self_condition": 0}),
    "unconditioned-top-k": ("recommended", {"model.self_condition": 0, "model.pack": 1, "train.top_k": True}),
}
RECOMMENDED_WIDTH = preset("recommended").model.width
if RECOMMENDED_WIDTH != preset("dcgan").model.width:  # how much of the gain is the width alone
    PRESET_RUNS["dcgan-wide"] = ("dcgan", {"train.precision": "fp32", "model.width": RECOMMENDED_WIDTH})


def timed_config(preset_name: str, overrides: dict, minutes: float):
    """The preset for a row: `minutes` of training, no grids or checkpoints on the way, then the row's overrides
    (after the defaults above, so a row may set its own iterations)."""
    config = preset(preset_name)
    config.train.max_minutes, config.train.iterations = minutes, 10**9
    config.train.sample_every, config.train.checkpoint_every, config.train.log_every = 0, 0, 50
    return apply_overrides(config, overrides)


def run_one(name: str, preset_name: str, overrides: dict, minutes: float, out: Path, dataset, evaluator,
            n: int) -> dict:
    config = timed_config(preset_name, overrides, minutes)
    run_dir = out / name
    started = time.perf_counter()
    # overwrite: a run this script wrote before is replaced; anything else there is refused, never deleted
    result = train(config, run_dir, overwrite=True, dataset=dataset, progress=False)
    seconds = time.perf_counter() - started
    return {**score_run(run_dir, out / "grids" / f"{name}.png", evaluator, n),
            "name": name, "preset": preset_name, "loss": config.train.loss, "minutes": minutes,
            "seconds": seconds, "iterations": result.iteration, "iterations_per_s": result.iteration / seconds,
            "images_per_s": result.iteration * config.train.batch_size / seconds}


def score_run(run_dir: Path, grid: Path, evaluator, n: int) -> dict:
    """A trained run's figures as every row of this script gets them: n samples of its generator (the EMA
    weights when the run kept them, noise seed 0) scored by `evaluator`, the classifier's accuracy on the
    requested class for a conditional model, and an 8 x 8 grid (noise seed 1) written to `grid`."""
    model_config, G, _ = load_generator(run_dir)
    scores = evaluator.evaluate_generator(G, model_config, n=n, seed=0)
    z, labels = grid_inputs(64, model_config, seed=1)
    with torch.no_grad():
        G.eval()
        save_grid(G(z, labels), grid, nrow=8, scale=2)
    row = {**scores, "evaluation_seconds": scores["seconds"]}  # the caller's "seconds" is the training's
    if model_config.conditional:
        row.update(conditional_accuracy(evaluator, G, model_config, n=n, seed=0))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| run | preset | loss | minutes | iterations | it/s | images/s | classifier-FID | confidence | classes "
             "| smallest class | largest class | recall | coverage | accuracy on requested digit | grid |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        histogram = r.get("class_histogram") or [0.0]
        accuracy = f"{r['label_accuracy']:.3f}" if "label_accuracy" in r else "-"
        lines.append(f"| {r['name']} | {r['preset']} | {r['loss']} | {r['minutes']:g} | {r['iterations']} "
                     f"| {r['iterations_per_s']:.1f} | {r['images_per_s']:.0f} | {r['fid']:.2f} | {r['confidence']:.3f} "
                     f"| {r['classes_covered']} | {min(histogram):.3f} | {max(histogram):.3f} | {r['recall']:.3f} "
                     f"| {r['coverage']:.3f} | {accuracy} | grids/{r['name']}.png |")
    return "\n".join(lines)


def check_targets(rows: dict[str, dict]) -> list[str]:
    lines = []
    if {"seed", "dcgan", "recommended"} <= rows.keys():
        rec, seed, dcgan = rows["recommended"], rows["seed"], rows["dcgan"]
        histogram = rec.get("class_histogram") or [0.0]
        lines += [
            f"recommended FID / seed FID  = {rec['fid'] / seed['fid']:.3f} (target <= 0.333)",
            f"recommended FID / dcgan FID = {rec['fid'] / dcgan['fid']:.3f} (target <= 0.6)",
            f"recommended classes covered = {rec['classes_covered']}, smallest share {min(histogram):.3f} "
            "(target 10, each >= 0.05)",
            f"recommended confidence      = {rec['confidence']:.3f} (target >= 0.9)",
        ]
    if {"dcgan-wide", "recommended"} <= rows.keys():
        lines.append(f"recommended FID / dcgan at width {RECOMMENDED_WIDTH} FID = "
                     f"{rows['recommended']['fid'] / rows['dcgan-wide']['fid']:.3f} (for reference: no target)")
    lines += candidate_checks(rows)
    if "conditional" in rows:
        per_digit = " ".join(f"{a:.2f}" for a in rows["conditional"]["label_accuracy_per_class"])
        lines.append(f"conditional accuracy        = {rows['conditional']['label_accuracy']:.3f} (target >= 0.95); "
                     f"per class 0-9: {per_digit}")
        if "recommended" in rows:  # the labels against self-conditioning's clusters
            lines.append(f"conditional FID / recommended FID = "
                         f"{rows['conditional']['fid'] / rows['recommended']['fid']:.3f}")
    return lines


def candidate_checks(rows: dict[str, dict]) -> list[str]:
    """Issue 14's targets for each candidate row (recommended included): FID within 1.5x the conditional model's,
    every class 7-13% of samples, recall not below the unconditioned networks' (`recommended` before
    self-conditioning), iterations/s within 15% of theirs. Without an `unconditioned` row, `recommended` is the
    baseline."""
    if not {"recommended", "conditional"} <= rows.keys():
        return []
    base_name = "unconditioned" if "unconditioned" in rows else "recommended"
    base, cond = rows[base_name], rows["conditional"]
    lines = []
    for name, r in rows.items():
        row = name.split(":")[0]  # a --seeds row's name carries its seed
        if name.startswith("loss:") or (row in PRESET_RUNS and row != "recommended"):
            continue
        histogram = r.get("class_histogram") or [0.0]
        lines.append(f"{name}: FID / conditional FID = {r['fid'] / cond['fid']:.2f} (target <= 1.5); classes "
                     f"{min(histogram):.3f}-{max(histogram):.3f} (target 0.07-0.13); recall {r['recall']:.3f} "
                     f"({base_name} {base['recall']:.3f}); coverage {r['coverage']:.3f} ({base_name} "
                     f"{base['coverage']:.3f}); it/s {r['iterations_per_s'] / base['iterations_per_s']:.2f}x "
                     f"{base_name}'s (target >= 0.85)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes per preset (default: 5)")
    parser.add_argument("--loss-minutes", type=float, default=1.5, help="training minutes per loss (default: 1.5)")
    parser.add_argument("--n", type=int, default=5000, help="samples evaluated per run (default: 5000)")
    parser.add_argument("--only", nargs="*", help="run only these rows (e.g. seed dcgan loss:hinge); candidates "
                                                  f"run only when named here: {', '.join(CANDIDATE_RUNS)}")
    parser.add_argument("--row", nargs=3, action="append", default=[], metavar=("NAME", "PRESET", "JSON"),
                        help='add a row, e.g. --row sc30 recommended \'{"model.self_condition": 30}\'')
    parser.add_argument("--seeds", type=int, nargs="*", default=[0], help="run every row once per seed (default: 0)")
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--data", type=Path, default=SHARED_MNIST, help="IDX directory (default: the real digits)")
    parser.add_argument("--save", action="store_true")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    dataset = load_idx_directory(args.data)
    out = Path(args.out)
    plan = [(name, p, o, args.minutes) for name, (p, o) in PRESET_RUNS.items()]
    plan += [(name, p, o, args.minutes) for name, (p, o) in CANDIDATE_RUNS.items() if args.only and name in args.only]
    plan += [(f"loss:{loss}", "recommended", {"train.loss": loss, "train.n_critic": 5 if loss == "wgan-gp" else 1},
              args.loss_minutes) for loss in LOSSES]
    if args.only:
        plan = [step for step in plan if step[0] in args.only]
    plan += [(name, p, json.loads(o), args.minutes) for name, p, o in args.row]
    if args.seeds != [0]:  # one row per seed; names carry it (recommended:1), row 0's name stays plain
        plan = [(name if seed == 0 else f"{name}:{seed}", p, {**o, "train.seed": seed}, minutes)
                for seed in args.seeds for name, p, o, minutes in plan]
    with record.saved_output("compare_presets", args.save, args.note):
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(dataset)} images from "
              f"{args.data}; {args.n} samples evaluated per run")
        evaluator = Evaluator.for_dataset(dataset)
        rows = {}
        for name, preset_name, overrides, minutes in plan:
            rows[name] = run_one(name, preset_name, overrides, minutes, out, dataset, evaluator, args.n)
            print(f"{name}: FID {rows[name]['fid']:.2f}", file=sys.stderr, flush=True)
        print(table(list(rows.values())))
        floor = evaluator.floor()
        if floor is not None:  # what "perfect" is on this data set
            print(f"real-vs-real floor (two halves of the reference images): FID {floor['fid']:.3f}")
        print("\n".join(check_targets(rows)))


if __name__ == "__main__":
    main()
