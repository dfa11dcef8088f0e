"""The signs of trouble, on real measurements and real digits.

tests/data/diagnose/*.jsonl are the metrics logged by real runs of benchmarks/diagnose_broken_runs.py (an H200,
8,000 real MNIST digits, probes at every log step; every 5th line of the long run): healthy `recommended` and
`dcgan` runs, and runs broken on purpose. Their first line is the run's config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import measured

from mnist_gan.data.images import to_float
from mnist_gan.diagnosis import detectors as dx
from mnist_gan.diagnosis import signs
from mnist_gan.diagnosis.detectors import sample_problems
from mnist_gan.evaluation.metrics import nearest_distances
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    FIELDS,
    Series,
    newest,
)

# ---------------------------------------------------------------------------------------------------- samples

def test_real_digits_raise_no_problem(mnist_5k):
    assert sample_problems(to_float(mnist_5k.images[:64])) == []


def test_flat_gray_and_repeated_digit_are_told_apart(mnist_5k):
    gray = torch.zeros(64, 1, 28, 28)
    assert [p.code for p in sample_problems(gray)] == ["flat-samples"]
    one_digit = to_float(mnist_5k.images[:1]).repeat(64, 1, 1, 1) + 0.01 * torch.randn(64, 1, 28, 28)
    assert [p.code for p in sample_problems(one_digit)] == ["mode-collapse"]


# ------------------------------------------------------------------------------------------------ log records

HEALTHY = ["recommended-0", "dcgan-1"]


def first_firing(detector, records: list[dict]) -> int | None:
    """The iteration at which `detector`, called at every log step, first reports a problem."""
    series = Series.from_records(records)
    for n in range(1, len(series) + 1):
        if detector(series.upto(n)):
            return int(series.iteration[n - 1])
    return None


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_measured_runs_raise_nothing_at_any_log_step(name):
    _, records, evaluations = measured(name)
    series = Series.from_records(records)
    reference = newest(records, CLASS_REFERENCE)
    for n in range(1, len(series) + 1):
        assert dx.record_problems(series.upto(n), True, reference) == [], (name, series.iteration[n - 1])
    for n in range(1, len(evaluations) + 1):
        assert dx.evaluation_problems(evaluations[:n]) == []


def test_vanishing_gradient_with_a_saturating_loss_and_not_with_the_non_saturating_one():
    _, minimax, _ = measured("lr-d-10x-minimax")  # G's gradient norm 0.15 -> 0.0003 as D wins
    fired = first_firing(signs.vanishing_gradient, minimax)
    assert fired is not None and 200 <= fired <= 600
    problem = dx.advised(signs.vanishing_gradient(minimax[:fired // 10]))[0]  # with its entry's advice
    assert problem.evidence["grad_norm_g"] < signs.VANISH_RATIO * problem.evidence["grad_norm_g_peak"]
    assert "--loss" in problem.message
    sparse = [r if i % 3 == 0 else {k: v for k, v in r.items() if k not in FIELDS} for i, r in enumerate(minimax)]
    assert first_firing(signs.vanishing_gradient, sparse) is not None  # probed every 3rd log line only
    _, relu, _ = measured("seed-relu")  # D wins here too, but the non-saturating loss keeps G's gradient alive
    assert first_firing(signs.vanishing_gradient, relu) is None
    assert first_firing(signs.d_wins, relu) == 320


def test_d_overfitting_on_a_32_digit_training_set():
    _, records, _ = measured("one-digit")
    fired = first_firing(signs.d_overfits, records)
    assert fired is not None and fired <= 500
    problem = dx.advised(signs.d_overfits(records))[0]
    assert problem.evidence["gap"] > 0.8  # training sevens ~0.99, held-out sevens ~0.02 by the end
    assert "--augment-shift" in problem.message
    assert signs.d_overfits([{**r, D_HELDOUT: r[D_TRAIN_REAL]} for r in records]) == []


def test_oscillation_of_sgd_at_100x_its_learning_rate():
    _, records, _ = measured("lr-100x")  # d_loss swings between ~0.003 and ~7 from one log line to the next
    fired = first_firing(signs.divergence, records)
    assert fired is not None and fired <= 300
    assert [p.code for p in signs.divergence(records[: fired // 10])] == ["oscillation"]


def test_exploding_gradient_norm_is_divergence_and_a_saturated_d_recovering_is_not():
    steady = [{"iteration": 10 * i, "d_loss": 0.5, "grad_norm_d": 2.0 + 0.1 * (i % 3), "grad_norm_g": 1.0}
              for i in range(1, 20)]
    exploding = steady + [{"iteration": 200 + 10 * i, "d_loss": 0.5, "grad_norm_d": 2.0 * 40 ** i,
                           "grad_norm_g": 1.0} for i in range(1, 4)]
    assert [p.code for p in signs.divergence(exploding)] == ["divergence"]
    assert signs.divergence(exploding[:-1]) == []  # two lines are not yet PATIENCE
    # D saturated for a long stretch (tiny norms), then back to its first scale: not an explosion
    saturated = [{"iteration": 10, "d_loss": 0.3, "grad_norm_d": 6.7}] + \
        [{"iteration": 10 * i, "d_loss": 0.001, "grad_norm_d": 0.03} for i in range(2, 40)] + \
        [{"iteration": 400 + 10 * i, "d_loss": 0.01, "grad_norm_d": 3.0} for i in range(1, 4)]
    assert signs.divergence(saturated) == []


# ------------------------------------------------------------------------------------------------ class drift

def test_the_long_seed_run_drifts_towards_ones_and_zeros():
    _, records, _ = measured("long-drift")
    problems = [p for p in dx.record_problems(records) if p.code == "class-drift"]
    assert len(problems) == 1
    problem = problems[0]
    assert "digit 1 (" in problem.message and "drifted away" in problem.message
    assert problem.evidence["histogram"][1] > 0.25  # ones: ~30% of the samples against 12% of the digits
    assert problem.evidence["distance"] > signs.DRIFT_TV
    iterations = [r["iteration"] for r in records if CLASS_HISTOGRAM in r]
    histograms = [r[CLASS_HISTOGRAM] for r in records if CLASS_HISTOGRAM in r]
    cut = next(i for i, it in enumerate(iterations) if it >= 1500)
    assert signs.class_drift(iterations[:cut], histograms[:cut], problem.evidence["reference"]) == []


def test_class_drift_on_real_digit_labels(mnist_5k):
    """Histograms of real digits (batches of 500) never drift; batches resampled to the tutorial's complaint
    (~38% ones, ~17% zeros) do, and the message names the digit holding at least DOMINANT times its share."""
    labels = mnist_5k.labels
    reference = np.bincount(labels.numpy(), minlength=10) / len(labels)
    rng = np.random.default_rng(0)
    real = [np.bincount(rng.choice(labels.numpy(), 500), minlength=10) / 500 for _ in range(12)]
    iterations = [500 * (i + 1) for i in range(12)]
    assert signs.class_drift(iterations, real, reference.tolist()) == []
    distances = [0.5 * np.abs(h - reference).sum() for h in real]
    assert max(distances) < signs.DRIFT_TV / 2  # what DRIFT_TV is set against
    skewed = np.full(10, 0.45 / 8)
    skewed[1], skewed[0] = 0.38, 0.17
    drifted = [np.bincount(rng.choice(10, 500, p=skewed), minlength=10) / 500 for _ in range(12)]
    problem = signs.class_drift(iterations + [6500 + 500 * i for i in range(12)], real + drifted, reference.tolist())
    assert problem and "dominating: digit 1 (3" in problem[0].message  # 1s at ~38%; 0s at 1.7x stay unnamed
    assert problem[0].evidence["histogram"][0] > 0.12


# ------------------------------------------------------------------------------------------------ evaluations

def test_memorisation_ratio_of_copies_and_of_real_digits(mnist_5k):
    """The ratio --eval-every logs, computed as metrics.Evaluator does, on real digits."""
    training = to_float(mnist_5k.images[:2000]).flatten(1)
    heldout = to_float(mnist_5k.images[4000:4300]).flatten(1)
    real_nearest = float(nearest_distances(heldout, training).median())
    generator = torch.Generator().manual_seed(0)
    copies = (training[:300] + 0.1 * torch.randn(300, 784, generator=generator)).clamp(-1, 1)
    fresh = to_float(mnist_5k.images[4500:4800]).flatten(1)
    ratio = {name: float(nearest_distances(x, training).median()) / real_nearest
             for name, x in (("copies", copies), ("fresh", fresh))}
    assert ratio["copies"] < signs.MEMORISATION_RATIO < 0.8 < ratio["fresh"]
    evaluations = [{"iteration": 1000 * i, "memorization": ratio["copies"], "fid": 50.0} for i in (1, 2)]
    assert [p.code for p in signs.memorisation(evaluations)] == ["memorisation"]
    assert signs.memorisation([{**e, "memorization": ratio["fresh"]} for e in evaluations]) == []


def test_no_progress_tells_rising_and_stalled_from_a_slow_healthy_run():
    improving = [220.71, 150.45, 123.59, 116.20, 105.82, 100.70, 98.24, 95.80, 90.13, 91.69]  # docs/benchmarks.md
    as_evals = lambda fids: [{"iteration": 3120 * (i + 1), "fid": f} for i, f in enumerate(fids)]  # noqa: E731
    assert signs.no_progress(as_evals(improving)) == []
    rising = [400.0, 200.0, 150.0, 160.0, 175.0, 190.0, 210.0]
    assert [p.evidence["best_iteration"] for p in signs.no_progress(as_evals(rising))] == [9360]
    stalled = [900.0, 700.0, 690.0, 685.0, 688.0, 690.0]
    assert "stayed near" in signs.no_progress(as_evals(stalled))[0].message
    assert signs.no_progress(as_evals([90.0, 80.0, 79.0, 79.5, 80.0, 79.2])) == []  # converged at a good FID
