"""The feature classifier: cached and reused for the same data, recipe and code, never for other data, trained
deterministically without touching a GAN run's RNG, and `mnist-gan classifier` prints its held-out accuracy."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import forbid_classifier_training, quick_recipe, untrained_classifier

from mnist_gan.cli.parser import main
from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation import classifier as C

pytestmark = pytest.mark.usefixtures("quick_classifier_recipe")


def test_classifier_cache_is_reused_and_keyed_by_data(classifier_cache, mnist_5k, monkeypatch):
    cache, trained = classifier_cache
    forbid_classifier_training(monkeypatch)
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
    monkeypatch.setattr(C, "train_classifier",
                        lambda data, classes, device="cpu": calls.append(1) or untrained_classifier(data, classes))
    fresh = C.get_classifier(other, tmp_path)
    assert calls == [1] and fresh.fingerprint == other_key
    assert C.load_classifier(planted).fingerprint == other_key  # the planted file was replaced


def test_classifier_training_is_deterministic(small_npz, monkeypatch):
    from mnist_gan.data.arrays import load_npz

    monkeypatch.setattr(C, "RECIPE", dict(quick_recipe(), steps=5))
    data = C.split(load_npz(small_npz))
    state = torch.get_rng_state()
    first, second = C.train_classifier(data, 10), C.train_classifier(data, 10)
    assert torch.equal(torch.get_rng_state(), state)  # a GAN run's RNG is left alone
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_classifier_cli_prints_heldout_accuracy(classifier_cache, capsys):
    cache, classifier = classifier_cache
    assert main(["classifier", "--cache-dir", str(cache), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fingerprint"] == classifier.fingerprint and info["n_train"] == 4000 and info["n_heldout"] == 1000
    assert info["heldout_accuracy"] == pytest.approx(classifier.heldout_accuracy) and info["heldout_accuracy"] > 0.9
