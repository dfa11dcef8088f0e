"""Sample-quality metrics, measured in the feature space of a classifier trained on the data set in use.

    from mnist_gan.metrics import evaluate_generator
    result = evaluate_generator(G, model_config, load_dataset(DataConfig()), n=10_000)
    print(result["fid"], result["precision"], result["recall"])

Every figure compares generated images with real images the generator should resemble: the data set's held-out
split (see mnist_gan.classifier.split; the result's "reference" says which). Figures:
- fid: Frechet distance between Gaussians fitted to the classifier's penultimate features (0 = same statistics);
- kid, kid_std: unbiased squared MMD with the cubic polynomial kernel, mean and std over random subsets;
- classifier_score: exp(E_x KL(p(y|x) || p(y))), the Inception Score with the data set's own classifier
  (10 is the ceiling on ten classes); confidence: mean max softmax probability;
- classes_covered: classes that hold at least 5% of the predicted labels; class_histogram; class_kl:
  KL(sample histogram || the reference set's predicted histogram);
- precision, recall: k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019, k = 3), on equally many
  samples and reference images;
- memorization: median pixel distance from samples to their nearest training image, divided by the same for
  real held-out images; below 1 means samples sit closer to training images than fresh real digits do.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_gan.classifier import Classifier, get_classifier, split
from mnist_gan.config import ModelConfig
from mnist_gan.data import ImageDataset, to_float
from mnist_gan.errors import MnistGanError, quote
from mnist_gan.headers import open_arrays
from mnist_gan.untrusted import CHUNK_BYTES

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3
PR_MAX = 10_000  # precision/recall use at most this many samples and reference images (memory grows as its square)
MEMORIZATION_MAX = 1000  # samples (and held-out images) whose nearest training image is searched
COVERAGE_THRESHOLD = 0.05
TRAINING_EVAL_SAMPLES = 2000  # samples per evaluation during training (--eval-every)
TRAINING_KID_SUBSETS = 20  # fewer KID subsets there, to keep each evaluation to a second or two


# --------------------------------------------------------------------------------------------- the math

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), as pytorch-fid computes it.

    The square root is scipy.linalg.sqrtm's. A singular product (e.g. identical samples) is retried with eps
    added to both diagonals; the tiny imaginary parts rounding leaves are dropped. Should they not be tiny, the
    trace is taken from the eigenvalues of the product instead (torch-fidelity's formula), which stays real.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is expected (e.g. identical images); handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            covmean = covmean.real
        else:
            eigenvalues = np.linalg.eigvals(sigma1.dot(sigma2)).astype(np.complex128)
            tr_covmean = float(np.sum(np.sqrt(eigenvalues)).real)
            return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between x (m, D) and y (m, D) with k(a, b) = (a.b / D + 1)^3, as KID defines it."""
    m, dim = x.shape
    k_xx = (x @ x.T / dim + 1) ** 3
    k_yy = (y @ y.T / dim + 1) ** 3
    k_xy = (x @ y.T / dim + 1) ** 3
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kernel_distance(x: np.ndarray, y: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                    seed: int = 0) -> tuple[float, float, int]:
    """KID: mean and std of polynomial_mmd2 over random subsets (without replacement); also the subset size.

    Subsets hold at most half the smaller side, so they differ and their spread means something.
    """
    size = min(subset_size, max(2, min(len(x), len(y)) // 2))
    if size < 2:
        raise MnistGanError(f"KID needs at least 2 images on each side, got {len(x)} and {len(y)}")
    rng = np.random.RandomState(seed)
    values = np.array([polynomial_mmd2(x[rng.choice(len(x), size, replace=False)],
                                       y[rng.choice(len(y), size, replace=False)]) for _ in range(subsets)])
    return float(values.mean()), float(values.std()), size


def _kth_neighbour_radii(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Distance from each row of features (N, D) to its k-th nearest other row."""
    radii = [torch.cdist(part, features).kthvalue(k + 1, dim=1).values for part in features.split(chunk)]
    return torch.cat(radii)


def _inside_any_ball(queries: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> float:
    """Fraction of queries within radii[j] of some centre j."""
    hits = [(torch.cdist(part, centres) <= radii).any(dim=1) for part in queries.split(chunk)]
    return float(torch.cat(hits).double().mean())


def precision_recall(fake: np.ndarray, real: np.ndarray, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of fake (N, D) against real (M, D) features.

    Precision: fraction of fake points inside some real point's k-NN ball; recall: the converse.
    """
    fake_t, real_t = torch.as_tensor(fake, dtype=torch.float64), torch.as_tensor(real, dtype=torch.float64)
    if min(len(fake_t), len(real_t)) <= k:
        raise MnistGanError(f"precision/recall with k={k} need more than {k} images on each side")
    precision = _inside_any_ball(fake_t, real_t, _kth_neighbour_radii(real_t, k))
    recall = _inside_any_ball(real_t, fake_t, _kth_neighbour_radii(fake_t, k))
    return precision, recall


def nearest_distances(queries: torch.Tensor, pool: torch.Tensor, exclude: torch.Tensor | None = None,
                      chunk: int = 256) -> torch.Tensor:
    """Euclidean distance (N,) from each query (N, P) to its nearest row of pool (M, P).

    exclude[i], when given, is a row of pool that query i may not match (itself, for leave-one-out).
    """
    pool_norms = pool.pow(2).sum(1)  # (M,)
    nearest = []
    for start in range(0, len(queries), chunk):
        part = queries[start:start + chunk]
        squared = part.pow(2).sum(1, keepdim=True) + pool_norms - 2 * part @ pool.T  # (c, M)
        if exclude is not None:
            squared[torch.arange(len(part)), exclude[start:start + chunk]] = math.inf
        nearest.append(squared.min(dim=1).values.clamp_min(0).sqrt())
    return torch.cat(nearest)


def classifier_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) || p(y))) for class probabilities (N, C); between 1 and C."""
    p = np.asarray(probabilities, dtype=np.float64)
    marginal = p.mean(axis=0, keepdims=True)
    kl = np.sum(p * (np.log(p + 1e-12) - np.log(marginal + 1e-12)), axis=1)
    return float(np.exp(kl.mean()))


def class_histogram(probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of images (C,) predicted as each class."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    return np.bincount(predicted, minlength=num_classes)[:num_classes] / max(1, len(predicted))


def kl_divergence(p: np.ndarray, q: np.ndarray, floor: float = 1e-6) -> float:
    """KL(p || q) in nats for two histograms; q is floored so that a class missing from it stays finite."""
    p = np.asarray(p, dtype=np.float64)
    q = np.maximum(np.asarray(q, dtype=np.float64), floor)
    q = q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


# --------------------------------------------------------------------------------------------- evaluation

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
        precision, recall = precision_recall(features[_subset(rng, len(features), pr_n)],
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
            "precision": precision, "recall": recall, "pr_n": pr_n, "pr_k": PR_NEIGHBOURS,
            "memorization": sample_nearest / max(self.real_nearest, 1e-12),
            "nn_distance_samples": sample_nearest, "nn_distance_real": self.real_nearest,
            "classifier": self.classifier.fingerprint[:16],
            "classifier_accuracy": self.classifier.heldout_accuracy,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def evaluate_generator(self, G: nn.Module, model_config: ModelConfig, n: int = 10_000, seed: int = 0,
                           kid_subsets: int = KID_SUBSETS) -> dict:
        """Draw n samples from G (mnist_gan.sample.generate, noise seed `seed`) and score them."""
        from mnist_gan.sample import generate

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

    Draws n samples, every class in turn (mnist_gan.sample.generate), and returns the overall accuracy and one
    accuracy per requested class."""
    from mnist_gan.sample import generate, sample_labels

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


def load_images(path: str | Path, n: int | None = None) -> torch.Tensor:
    """Images from an .npy or .npz file (key 'images', else its only array) as float (N, 1, 28, 28) in [-1, 1].

    uint8 arrays are pixels 0-255 (what `mnist-gan generate --format npz` writes); float arrays may be in
    [-1, 1], [0, 1] or [0, 255]. With n, only the first n images are read. The header is checked (dtype, shape,
    count) before any data is read; damaged data (a CRC mismatch included) is MnistGanError.
    """
    from mnist_gan.data import MAX_DATA_FILE_BYTES, MAX_IMAGES, pixel_range

    path = Path(path)
    with open_arrays(path, "image array", MAX_DATA_FILE_BYTES, MAX_DATA_FILE_BYTES) as arrays:
        if "images" not in arrays and len(arrays) != 1:
            names = ", ".join(quote(key) for key in sorted(arrays)[:10])
            raise MnistGanError(f"{path}: holds [{names}]; expected one array or one named 'images'")
        stored = arrays["images" if "images" in arrays else next(iter(arrays))]
        shape = stored.shape
        if len(shape) == 4 and shape[1:] in ((1, 28, 28), (28, 28, 1)):
            shape = (shape[0], 28, 28)
        if len(shape) != 3 or shape[1:] != (28, 28):
            raise MnistGanError(f"{path}: images must have shape (N, 28, 28), got {stored.shape}")
        if shape[0] == 0:
            raise MnistGanError(f"{path}: holds no images")
        if shape[0] > MAX_IMAGES:
            raise MnistGanError(f"{path}: {shape[0]:,} images (at most {MAX_IMAGES:,})")
        array = stored.read(rows=n)
    array = array.reshape(len(array), 28, 28)
    if array.dtype == np.uint8:
        return to_float(torch.from_numpy(np.ascontiguousarray(array)))
    low, high = pixel_range(array, str(path))
    if low >= -1 and high <= 1 and low < 0:
        to_unit = lambda x: x  # noqa: E731
    elif low >= 0 and high <= 1:
        to_unit = lambda x: x * 2 - 1  # noqa: E731
    elif low >= 0 and high <= 255:
        to_unit = lambda x: x / 127.5 - 1  # noqa: E731
    else:
        raise MnistGanError(f"{path}: pixel values span [{low}, {high}]; expected [-1, 1], [0, 1] or [0, 255]")
    images = torch.empty(len(array), 1, 28, 28)  # (N, 1, 28, 28), filled in pieces: no float64 copy of it all
    rows = max(1, CHUNK_BYTES // (28 * 28 * 8))
    for start in range(0, len(array), rows):
        chunk = torch.from_numpy(array[start:start + rows].astype(np.float32))
        images[start:start + rows, 0] = to_unit(chunk)
    return images


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


# --------------------------------------------------------------------------------------------- Inception FID

def require_inception():
    """Return the torch_fidelity module, or raise MnistGanError saying how to get it."""
    try:
        import torch_fidelity
    except ImportError:
        raise MnistGanError("--inception needs the torch-fidelity package and the Inception weights it downloads "
                            "on first use; it is not installed here (pip install torch-fidelity on a machine with "
                            "network access). The classifier-feature metrics need neither") from None
    return torch_fidelity


def inception_fid(images: torch.Tensor, reference: torch.Tensor) -> tuple[float, str]:
    """Inception-v3 FID of images (N, 1, 28, 28) in [-1, 1] against reference uint8 (M, 28, 28), via torch-fidelity.

    Raises MnistGanError (one line) when torch-fidelity is missing or its weights cannot be had.
    """
    from mnist_gan.data import to_uint8

    torch_fidelity = require_inception()

    class _Gray(torch.utils.data.Dataset):  # uint8 (3, 28, 28) items, as torch-fidelity reads them
        def __init__(self, pixels: torch.Tensor):
            self.pixels = pixels

        def __len__(self) -> int:
            return len(self.pixels)

        def __getitem__(self, index: int) -> torch.Tensor:
            return self.pixels[index].unsqueeze(0).expand(3, -1, -1).contiguous()

    try:
        result = torch_fidelity.calculate_metrics(input1=_Gray(to_uint8(images)), input2=_Gray(reference),
                                                  fid=True, cuda=torch.cuda.is_available(), verbose=False)
        return float(result["frechet_inception_distance"]), f"torch-fidelity {torch_fidelity.__version__}"
    except Exception as error:  # offline weight downloads fail in many ways; all mean "no Inception FID here"
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise MnistGanError(f"--inception: torch-fidelity could not compute Inception FID ({first}); its "
                            "Inception weights are downloaded on first use and need network access") from None
