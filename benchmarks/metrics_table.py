"""The metric table for known cases and for the `seed` preset after a few minutes of training.

Rows: real held-out digits, the known-bad cases (blurred, one class only, constant gray, uniform noise) and
samples of the `seed` preset trained for --iterations (or --minutes of wall-clock time) on the classifier's
training images. Every row has the same
number of images and is scored against the same reference: a random half of the held-out digits. The real row
is the other half, so no row is scored against itself. Trains the feature classifier first if it is not cached.

    python -m benchmarks.metrics_table --data ../shared/data/mnist --iterations 250 --save

A fixed --iterations count gives the same table on any load; --minutes (wall-clock) depends on the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import record
from mnist_gan.data.datasets import load_dataset
from mnist_gan.data.images import ImageDataset
from mnist_gan.evaluation import evaluator as evaluation
from mnist_gan.evaluation.classifier import get_classifier, split
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.sample import generate
from mnist_gan.settings.config import DataConfig, preset
from mnist_gan.training.loop import train

COLUMNS = [("fid", "FID", "{:9.1f}"), ("kid", "KID", "{:10.2f}"), ("kid_std", "+-", "{:8.2f}"),
           ("classifier_score", "score", "{:6.2f}"), ("confidence", "conf", "{:5.3f}"),
           ("classes_covered", "classes", "{:7d}"), ("class_kl", "classKL", "{:7.3f}"),
           ("precision", "prec", "{:5.3f}"), ("recall", "recall", "{:6.3f}"),
           ("coverage", "cover", "{:5.3f}"), ("memorization", "memo", "{:5.2f}")]


def train_seed_preset(dataset: ImageDataset, minutes: float, seed: int, out: Path, iterations: int | None = None):
    """Train the seed preset for `iterations`, or else for `minutes` of wall-clock time (--max-minutes)."""
    config = preset("seed")
    if iterations:
        config.train.iterations = iterations
    else:
        config.train.max_minutes = minutes
    config.train.seed = seed
    config.train.sample_every = 0
    config.train.checkpoint_every = 0
    started = time.perf_counter()
    result = train(config, out, overwrite=True, dataset=dataset, progress=False)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/mnist", help="data set (default: ../shared/data/mnist)")
    parser.add_argument("--cache-dir", help="data and classifier cache (default: mnist-gan's)")
    parser.add_argument("--minutes", type=float, default=4.0, help="training time of the seed preset (default: 4)")
    parser.add_argument("--iterations", type=int, help="train the seed preset for this many iterations instead "
                        "(the same table whatever the load)")
    parser.add_argument("--seed", type=int, default=0, help="training, noise and subset seed (default: 0)")
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. whether the CPU was shared)")
    args = parser.parse_args()
    with record.saved_output("metrics_table", args.save, args.note):
        table(args)


def table(args: argparse.Namespace) -> None:
    """Train the classifier if needed, the seed preset, and print every case's figures."""

    dataset = load_dataset(DataConfig(data=args.data, cache_dir=args.cache_dir))
    data = split(dataset)
    classifier = get_classifier(dataset, args.cache_dir)
    order = torch.randperm(len(data.heldout_images), generator=torch.Generator().manual_seed(args.seed))
    half = len(order) // 2
    reference = data.heldout_images[order[:half]]
    real, real_labels = data.heldout_images[order[half:]], data.heldout_labels[order[half:]]
    evaluator = evaluation.Evaluator(classifier, reference, data.train_images, f"{half} of the held-out images")
    cases = evaluation.sanity_cases(real, real_labels, seed=args.seed)

    gan_data = ImageDataset(data.train_images, data.train_labels, dataset.name,
                            f"{dataset.source}, the classifier's {len(data.train_images)} training images")
    with tempfile.TemporaryDirectory() as tmp:
        result, seconds = train_seed_preset(gan_data, args.minutes, args.seed, Path(tmp) / "seed-run",
                                            args.iterations)
        model_config, G, _ = load_generator(result.run_dir / "generator.safetensors")
        cases[f"seed preset, {result.iteration} it"] = generate(G, model_config, len(real), seed=args.seed)

    print(f"data: {dataset.source}")
    print(f"feature classifier {classifier.fingerprint[:16]}: trained on {classifier.n_train} images; "
          f"{100 * classifier.heldout_accuracy:.2f}% accuracy on {data.description}")
    print(f"reference: {half} random held-out images; the real row is the other {len(real)}; "
          f"every row has {len(real)} images; seed {args.seed}")
    print(f"seed preset: {result.iteration} iterations in {seconds / 60:.1f} min on the classifier's training "
          f"images ({torch.get_num_threads()} threads)")
    print()
    width = max(len(name) for name in cases)
    print(f"{'case':<{width}}  " + "  ".join(f"{label:>{len(fmt.format(0))}}" for _, label, fmt in COLUMNS))
    for name, images in cases.items():
        figures = evaluator.evaluate(images, seed=args.seed)
        print(f"{name:<{width}}  " + "  ".join(fmt.format(figures[key]) for key, _, fmt in COLUMNS), flush=True)
    print()
    print("FID/KID lower is better (KID is MMD^2 in feature units); score = classifier score (10 at best); "
          "conf = mean max softmax; classes = classes with >= 5% of samples; memo < 1: closer to training "
          "images than real held-out digits are")


if __name__ == "__main__":
    main()
