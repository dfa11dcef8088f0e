"""Scoring generated images: the Evaluator (the real data's features, computed once) and the figures of
mnist_gan.evaluation.metrics it returns as one flat dict, the table that prints them, and known cases to check them on.

    from mnist_gan.evaluation.evaluator import evaluate_generator
    result = evaluate_generator(G, model_config, load_dataset(DataConfig()), n=10_000)
    print(result["fid"], result["precision"], result["recall"])

Every figure compares generated images with real images the generator should resemble: the data set's held-out
split (see mnist_gan.evaluation.classifier.split; the result's "reference" says which). The figures are listed in
mnist_gan.evaluation.metrics.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_gan.data.images import ImageDataset, to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation.classifier import Classifier, get_classifier, split
from mnist_gan.evaluation.metrics import (
    DC_NEIGHBOURS,
    KID_SUBSETS,
    PR_NEIGHBOURS,
    class_histogram,
    classifier_score,
    feature_statistics,
    frechet_distance,
    kernel_distance,
    kl_divergence,
    nearest_distances,
    neighbourhood_figures,
)
from mnist_gan.settings.config import ModelConfig

PR_MAX = 10_000  # precision/recall use at most this many samples and reference images (memory grows as its square)
MEMORIZATION_MAX = 1000  # samples (and held-out images) whose nearest training image is searched
COVERAGE_THRESHOLD = 0.05  # share of the samples that makes a class covered (not the coverage figure)
TRAINING_EVAL_SAMPLES = 2000  # samples per evaluation during training (--eval-every)
TRAINING_KID_SUBSETS = 20  # fewer KID subsets there, to keep each evaluation to a second or two


class Evaluator:
    """Everything about the real data that evaluation needs, computed once; `evaluate` then scores images.

    reference: real uint8 images (M, 28, 28) the samples are compared with (held out from the classifier).
    training: the uint8 images a generator may have trained on, for the memorization figure; when the reference
    images are among them, reference_index[i] is the position of reference image i there (left out of its own
    nearest-neighbour search).
    """

    def __init__(self, classifier: Classifier, reference: torch.Tensor, training: torch.Tensor,
                 reference_name: str, *, reference_index: torch.Tensor | None = None, data_source: str = "",
                 device: torch.device | str = "cpu"):
        if len(reference) < PR_NEIGHBOURS + 1:
            raise MnistGanError(f"the reference set has {len(reference)} images; the metrics need at least "
                                f"{PR_NEIGHBOURS + 1}")
        self.classifier, self.reference_name, self.data_source, self.device = \
            classifier, reference_name, data_source, device
        self.reference_images = reference
        features, probabilities = classifier.features_and_probabilities(to_float(reference), device=device)
        self.reference_features = features.numpy()  # (M, 128)
        self.mu, self.sigma = feature_statistics(self.reference_features)
        self.num_classes = probabilities.shape[1]
        self.reference_histogram = class_histogram(probabilities.numpy(), self.num_classes)
        self.training = _flat(training)  # (T, 784)
        count = min(MEMORIZATION_MAX, len(reference))
        exclude = None if reference_index is None else reference_index[:count]
        self.real_nearest = float(nearest_distances(_flat(reference[:count]), self.training, exclude).median())

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, cache_dir: str | Path | None = None, *,
                    classifier: Classifier | None = None, device: torch.device | str = "cpu") -> Evaluator:
        """Reference: the data set's held-out images; training images: all of dataset.images."""
        data = split(dataset)
        classifier = classifier or get_classifier(dataset, cache_dir, device=device)
        return cls(classifier, data.heldout_images, dataset.images, data.description,
                   reference_index=data.heldout_index, data_source=dataset.source, device=device)

    def evaluate(self, images: torch.Tensor, seed: int = 0, kid_subsets: int = KID_SUBSETS) -> dict:
        """Score images (N, 1, 28, 28) in [-1, 1] against the reference; return a flat dict of plain values."""
        images = _check_images(images)
        started = time.perf_counter()
        features, probabilities = self.classifier.features_and_probabilities(images, device=self.device)
        features, probabilities = features.numpy(), probabilities.numpy()
        rng = np.random.RandomState(seed)
        kid, kid_std, kid_size = kernel_distance(features, self.reference_features, kid_subsets, seed=seed)
        pr_n = min(PR_MAX, len(features), len(self.reference_features))
        neighbourhoods = neighbourhood_figures(features[_subset(rng, len(features), pr_n)],
                                               self.reference_features[_subset(rng, len(self.reference_features), pr_n)])
        histogram = class_histogram(probabilities, self.num_classes)
        chosen = _subset(rng, len(images), min(MEMORIZATION_MAX, len(images)))
        sample_nearest = float(nearest_distances(_flat(images[torch.from_numpy(chosen)]), self.training).median())
        return {
            "n": len(images), "seed": seed, "reference": self.reference_name,
            "n_reference": len(self.reference_features), "data": self.data_source,
            "fid": frechet_distance(*feature_statistics(features), self.mu, self.sigma),
            "kid": kid, "kid_std": kid_std, "kid_subsets": kid_subsets, "kid_subset_size": kid_size,
            "classifier_score": classifier_score(probabilities),
            "confidence": float(probabilities.max(axis=1).mean()),
            "classes_covered": int((histogram >= COVERAGE_THRESHOLD).sum()), "num_classes": self.num_classes,
            "class_histogram": [round(float(v), 6) for v in histogram],
            "class_kl": kl_divergence(histogram, self.reference_histogram),
            **neighbourhoods, "pr_n": pr_n, "pr_k": PR_NEIGHBOURS, "dc_k": DC_NEIGHBOURS,
            "memorization": sample_nearest / max(self.real_nearest, 1e-12),
            "nn_distance_samples": sample_nearest, "nn_distance_real": self.real_nearest,
            "classifier": self.classifier.fingerprint[:16],
            "classifier_accuracy": self.classifier.heldout_accuracy,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def evaluate_generator(self, G: nn.Module, model_config: ModelConfig, n: int = 10_000, seed: int = 0,
                           kid_subsets: int = KID_SUBSETS) -> dict:
        """Draw n samples from G (mnist_gan.sampling.sample.generate, noise seed `seed`) and score them."""
        from mnist_gan.sampling.sample import generate

        device = next(G.parameters()).device
        images = generate(G, model_config, n, seed=seed, device=device)
        return self.evaluate(images.clamp(-1, 1), seed=seed, kid_subsets=kid_subsets)


def evaluate_images(images: torch.Tensor, reference: ImageDataset, *, seed: int = 0,
                    cache_dir: str | Path | None = None, classifier: Classifier | None = None,
                    device: torch.device | str = "cpu") -> dict:
    """Score images (N, 1, 28, 28) in [-1, 1] against the held-out images of `reference` (see module doc)."""
    return Evaluator.for_dataset(reference, cache_dir, classifier=classifier, device=device).evaluate(images, seed)


def evaluate_generator(G: nn.Module, model_config: ModelConfig, reference: ImageDataset, n: int = 10_000,
                       seed: int = 0, *, cache_dir: str | Path | None = None, classifier: Classifier | None = None,
                       device: torch.device | str = "cpu") -> dict:
    """Draw n samples from G with noise seed `seed` and score them as evaluate_images does."""
    evaluator = Evaluator.for_dataset(reference, cache_dir, classifier=classifier, device=device)
    return evaluator.evaluate_generator(G, model_config, n, seed)


def conditional_accuracy(evaluator: Evaluator, G: nn.Module, model_config: ModelConfig, n: int = 10_000,
                         seed: int = 0) -> dict:
    """For a conditional G: how often the feature classifier reads a generated digit as the digit requested.

    Draws n samples, every class in turn (mnist_gan.sampling.sample.generate), and returns the overall accuracy and one
    accuracy per requested class."""
    from mnist_gan.sampling.sample import generate, sample_labels

    if not model_config.conditional:
        raise MnistGanError("label accuracy needs a conditional model (trained with --conditional)")
    device = next(iter(G.state_dict().values())).device
    images = generate(G, model_config, n, seed=seed, device=device).clamp(-1, 1)
    requested = sample_labels(n, model_config)  # (n,) the labels generate used
    _, probabilities = evaluator.classifier.features_and_probabilities(images, device=evaluator.device)
    correct = (probabilities.argmax(dim=1) == requested).double()  # (n,)
    per_class = [float(correct[requested == c].mean()) for c in range(model_config.num_classes)]
    return {"label_accuracy": float(correct.mean()), "label_accuracy_per_class": [round(v, 6) for v in per_class]}


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise MnistGanError(f"images to evaluate must be a tensor (N, 1, 28, 28) in [-1, 1], got {shape}")
    if len(images) < PR_NEIGHBOURS + 1:
        raise MnistGanError(f"need at least {PR_NEIGHBOURS + 1} images to evaluate, got {len(images)}")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise MnistGanError("images to evaluate contain NaN or infinite values")
    return images


def _flat(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) or float (N, 1, 28, 28) -> float32 (N, 784) in [-1, 1]."""
    if images.dtype == torch.uint8:
        images = to_float(images)
    return images.reshape(len(images), -1).float()


def _subset(rng: np.random.RandomState, count: int, size: int) -> np.ndarray:
    return np.arange(count) if size >= count else np.sort(rng.choice(count, size, replace=False))


# --------------------------------------------------------------------------------------------- known cases

def sanity_cases(real: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """Known cases for checking that metrics order quality correctly, each (N, 1, 28, 28) in [-1, 1].

    From real uint8 digits (N, 28, 28): the digits themselves, blurred (Gaussian, sigma 1 px), one class only
    (the most frequent, repeated to N, as a collapsed generator would give), constant mid-gray, and uniform noise.
    """
    images = to_float(real)
    count = len(images)
    single = images[labels == torch.bincount(labels).argmax()]
    return {
        "real held-out": images,
        "blurred": gaussian_blur(images, sigma=1.0),
        "single class": single.repeat(math.ceil(count / len(single)), 1, 1, 1)[:count],
        "constant gray": torch.zeros_like(images),
        "uniform noise": torch.rand(images.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1,
    }


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur images (N, 1, 28, 28) in [-1, 1] with a Gaussian of `sigma` pixels (background-padded)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(images + 1, (radius,) * 4)  # pad with background (-1 -> 0)
    out = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1))
    return out - 1  # (N, 1, 28, 28)


# --------------------------------------------------------------------------------------------- presentation

ROWS = [  # key, label, format, which way is better
    ("fid", "FID (classifier features)", "{:.3f}", "lower; 0 = the reference's own statistics"),
    ("kid", "KID", "{:.5f}", "lower; about 0 for real data"),
    ("classifier_score", "classifier score", "{:.3f}", "higher; at most the number of classes"),
    ("confidence", "confidence (mean max p)", "{:.3f}", "higher; recognisable digits"),
    ("classes_covered", "classes covered", "{}", "classes with >= 5% of samples"),
    ("class_kl", "class KL", "{:.4f}", "lower; KL(sample classes || real classes)"),
    ("precision", "precision", "{:.3f}", "higher; samples on the real manifold"),
    ("recall", "recall", "{:.3f}", "higher; real variety the samples cover"),
    ("density", "density", "{:.3f}", "about 1 for real data; above: samples crowd the commonest digits"),
    ("coverage", "coverage", "{:.3f}", "higher; real variety covered, blind to stray samples"),
    ("memorization", "memorization ratio", "{:.3f}", "< 1: samples nearer training images than real digits"),
]


def format_table(result: dict, title: str = "") -> str:
    """A readable table of an evaluate_* result, stating n, the reference set and the seed."""
    lines = [title] if title else []
    lines.append(f"samples: {result['n']} (seed {result['seed']}); reference: {result['reference']}")
    lines.append(f"feature classifier {result['classifier']}: {100 * result['classifier_accuracy']:.2f}% "
                 "held-out accuracy")
    if "inception_fid" in result:
        lines.append(f"Inception FID ({result['inception_backend']}): {result['inception_fid']:.3f}  "
                     "(for comparison with published tables; not suited to 28x28 digits)")
    lines.append("")
    width = max(len(label) for _, label, _, _ in ROWS)
    for key, label, fmt, better in ROWS:
        value = fmt.format(result[key])
        if key == "kid":
            value += f" +- {result['kid_std']:.5f}"
        elif key == "classes_covered":
            value += f" / {result['num_classes']}"
        lines.append(f"{label:<{width}}  {value:<24} {better}")
    histogram = "  ".join(f"{c}:{100 * v:.1f}%" for c, v in enumerate(result["class_histogram"]))
    lines.append(f"{'class histogram':<{width}}  {histogram}")
    if "label_accuracy" in result:  # a conditional model: is a requested 7 read as a 7?
        per_class = "  ".join(f"{c}:{100 * v:.1f}%" for c, v in enumerate(result["label_accuracy_per_class"]))
        lines.append(f"{'requested digit read':<{width}}  {100 * result['label_accuracy']:.2f}%  ({per_class})")
    return "\n".join(lines)
