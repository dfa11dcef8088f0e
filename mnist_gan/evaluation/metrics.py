"""Sample-quality metrics, the maths: each figure as a plain function of features, class probabilities or
pixels. mnist_gan.evaluation.evaluator computes them in the feature space of a classifier trained on the data set in use.

Every figure compares generated images with real images the generator should resemble: the data set's held-out
split (see mnist_gan.evaluation.classifier.split; the result's "reference" says which). Figures:
- fid: Frechet distance between Gaussians fitted to the classifier's penultimate features (0 = same statistics);
- kid, kid_std: unbiased squared MMD with the cubic polynomial kernel, mean and std over random subsets;
- classifier_score: exp(E_x KL(p(y|x) || p(y))), the Inception Score with the data set's own classifier
  (10 is the ceiling on ten classes); confidence: mean max softmax probability;
- classes_covered: classes that hold at least 5% of the predicted labels; class_histogram; class_kl:
  KL(sample histogram || the reference set's predicted histogram);
- precision, recall: k-nearest-neighbour manifolds (Kynkaanniemi et al. 2019, k = 3), on equally many
  samples and reference images;
- density, coverage: the same idea with the balls around real images only (Naeem et al. 2020, k = 5), so a few
  samples far off the data cannot inflate them: recall counts a real image covered when it lies inside some
  sample's ball, and a stray sample's ball is wide; coverage counts it covered when some sample lies inside the
  real image's own ball. Density is about 1 for real data, higher when samples crowd the densest real regions;
- memorization: median pixel distance from samples to their nearest training image, divided by the same for
  real held-out images; below 1 means samples sit closer to training images than fresh real digits do.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from mnist_gan.errors import MnistGanError

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
PR_NEIGHBOURS = 3
DC_NEIGHBOURS = 5  # Naeem et al.'s choice for density and coverage


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


def frechet_distance_by_eigenvalues(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """frechet_distance with Tr((sigma1 sigma2)^(1/2)) taken from symmetric eigenvalues: with R = sigma2^(1/2),
    sigma1 sigma2 is similar to R sigma1 R, whose eigenvalues' square roots sum to that trace. The same figure in
    a fraction of a second where scipy's sqrtm of a 384 x 384 product (Stacked MNIST's features) takes seconds."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    values, vectors = np.linalg.eigh(sigma2)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T  # sigma2^(1/2), symmetric
    product = root @ sigma1 @ root
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)  # >= 0 but for rounding
    tr_covmean = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


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


def _kth_neighbour_radii(features: torch.Tensor, ks: tuple[int, ...], chunk: int = 2048) -> torch.Tensor:
    """Distance (N, len(ks)) from each row of features (N, D) to its k-th nearest other row, for each k of ks."""
    index = torch.tensor(ks)  # a row's nearest is itself, at distance 0: its k-th other row is k places on
    radii = [torch.cdist(part, features).topk(max(ks) + 1, dim=1, largest=False).values[:, index]
             for part in features.split(chunk)]
    return torch.cat(radii)


def neighbourhood_figures(fake: np.ndarray, real: np.ndarray, pr_k: int = PR_NEIGHBOURS, dc_k: int = DC_NEIGHBOURS,
                          chunk: int = 2048) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019, k = pr_k), density and coverage (Naeem et al. 2020,
    k = dc_k) of fake (N, D) against real (M, D) features, from one pass over the real-to-fake distances.

    With a point's ball reaching its k-th nearest neighbour of its own side: precision is the fraction of fakes
    inside some real ball, recall the fraction of reals inside some fake ball; density is the mean number of real
    (dc_k) balls holding a fake, over dc_k; coverage the fraction of real (dc_k) balls holding some fake.
    """
    fake_t, real_t = torch.as_tensor(fake, dtype=torch.float64), torch.as_tensor(real, dtype=torch.float64)
    k = max(pr_k, dc_k)
    if min(len(fake_t), len(real_t)) <= k:
        raise MnistGanError(f"precision, recall, density and coverage need more than {k} images on each side")
    real_radii = _kth_neighbour_radii(real_t, (pr_k, dc_k), chunk)  # (M, 2)
    fake_radii = _kth_neighbour_radii(fake_t, (pr_k,), chunk)[:, 0]  # (N,)
    in_real_ball = torch.zeros(len(fake_t), dtype=torch.bool)  # (N,)
    balls_holding = torch.zeros(len(fake_t), dtype=torch.float64)  # (N,)
    in_fake_ball, covered = [], []
    for start in range(0, len(real_t), chunk):
        distances = torch.cdist(real_t[start:start + chunk], fake_t)  # (c, N)
        radii = real_radii[start:start + chunk]  # (c, 2)
        in_real_ball |= (distances <= radii[:, :1]).any(dim=0)
        in_fake_ball.append((distances <= fake_radii).any(dim=1))
        inside = distances < radii[:, 1:]  # strict, as generative-evaluation-prdc
        balls_holding += inside.sum(dim=0)
        covered.append(inside.any(dim=1))
    return {"precision": float(in_real_ball.double().mean()), "recall": float(torch.cat(in_fake_ball).double().mean()),
            "density": float(balls_holding.mean() / dc_k), "coverage": float(torch.cat(covered).double().mean())}


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



STACKED_MODES = 1000  # Stacked MNIST: three digits, one per channel


def stacked_mnist_modes(images: torch.Tensor, classifier) -> dict:
    """Mode coverage on Stacked MNIST, as PacGAN's Table 2: each channel of images (N, 3, 28, 28) (float in
    [-1, 1], or uint8 pixels) is read as a digit by `classifier` (mnist_gan.evaluation.classifier.Classifier, or anything
    with its features_and_probabilities), giving one of 1,000 modes per image.

    Returns {"modes": modes with at least one sample, "kl": KL(samples' mode histogram || uniform) in nats,
    "n": N, "histogram": counts (1000,)}.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise MnistGanError(f"stacked MNIST images are (N, 3, 28, 28); got {tuple(images.shape)}")
    if not images.is_floating_point():
        images = images.float().sub(127.5).div(127.5)
    channels = images.flatten(0, 1).unsqueeze(1)  # (3N, 1, 28, 28)
    digits = classifier.features_and_probabilities(channels)[1].argmax(1).view(-1, 3)  # (N, 3)
    modes = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]  # (N,)
    counts = torch.bincount(modes, minlength=STACKED_MODES)
    shares = counts[counts > 0].double() / len(modes)
    kl = float((shares * torch.log(shares * STACKED_MODES)).sum())
    return {"modes": int((counts > 0).sum()), "kl": kl, "n": len(modes), "histogram": counts.tolist()}
