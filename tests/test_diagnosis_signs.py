"""The detectors on real measurements and real digits, the probes, and `mnist-gan diagnose` on real runs.

tests/data/diagnose/*.jsonl are the metrics logged by real runs of benchmarks/diagnose_broken_runs.py (an H200,
8,000 real MNIST digits, probes at every log step; every 5th line of the long run): healthy `recommended` and
`dcgan` runs, and runs broken on purpose. Their first line is the run's config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_gan.data.images import ImageDataset, to_float
from mnist_gan.diagnosis import detectors as dx
from mnist_gan.diagnosis import signs
from mnist_gan.diagnosis.probes import ClassProbe, HeldoutProbe, grad_norms
from mnist_gan.diagnosis.report import build_report, planned_iterations
from mnist_gan.evaluation.metrics import nearest_distances
from mnist_gan.io.files import exclusive_lock
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    FIELDS,
    GRAD_NORM_D,
    GRAD_NORM_G,
    Series,
    newest,
    read_run,
)
from mnist_gan.sampling.grids import read_grid

MEASURED = Path(__file__).parent / "data" / "diagnose"
HEALTHY = ["recommended-0", "dcgan-1"]


def measured(name: str) -> tuple[dict, list[dict], list[dict]]:
    """(config, training records, evaluation records) of one measured run."""
    lines = [json.loads(line) for line in (MEASURED / f"{name}.jsonl").read_text().splitlines()]
    records = lines[1:]
    return lines[0]["config"], [r for r in records if "fid" not in r], [r for r in records if "fid" in r]


def write_run(directory: Path, name: str) -> Path:
    """A run directory holding a measured run's config.json and metrics.jsonl."""
    config, records, evaluations = measured(name)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    lines = sorted(records + evaluations, key=lambda r: (r["iteration"], "fid" in r))
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return directory


def first_firing(detector, records: list[dict]) -> int | None:
    """The iteration at which `detector`, called at every log step, first reports a problem."""
    series = Series.from_records(records)
    for n in range(1, len(series) + 1):
        if detector(series.upto(n)):
            return int(series.iteration[n - 1])
    return None


# --------------------------------------------------------------------------------------------- log-record detectors

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


# --------------------------------------------------------------------------------------------- class drift

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


# --------------------------------------------------------------------------------------------- evaluations

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


# --------------------------------------------------------------------------------------------- probes

def test_probes_are_due_once_per_probe_interval_whatever_log_every():
    from mnist_gan.diagnosis.probes import PROBE_EVERY, probe_due

    assert not any(probe_due(i, 1) for i in range(1, PROBE_EVERY))  # a short run never pays for them

    for log_every in (1, 7, 10, 64, 200):
        due = [i for i in range(log_every, 20 * PROBE_EVERY, log_every) if probe_due(i, log_every)]
        assert due[0] == -(-PROBE_EVERY // log_every) * log_every  # the first log step at or after PROBE_EVERY
        gaps = np.diff(due)
        assert gaps.max() <= max(PROBE_EVERY + log_every, log_every) and gaps.min() >= min(PROBE_EVERY, log_every) - 1


def test_grad_norms_are_the_norm_of_every_gradient():
    G, D = torch.nn.Linear(3, 2), torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1))
    assert grad_norms(G, D) == {GRAD_NORM_G: 0.0, GRAD_NORM_D: 0.0}
    D(G(torch.ones(5, 3))).sum().backward()
    expected = {GRAD_NORM_G: torch.cat([p.grad.flatten() for p in G.parameters()]).norm().item(),
                GRAD_NORM_D: torch.cat([p.grad.flatten() for p in D.parameters()]).norm().item()}
    assert grad_norms(G, D) == pytest.approx(expected)


class _Replay(torch.nn.Module):
    """A stand-in G that draws given real images, whatever z."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, z, labels=None):
        return self.images[torch.arange(len(z)) % len(self.images)] * self.scale


def test_cluster_probe_reads_real_digits_as_balanced_and_one_digit_as_collapsed(mnist_5k):
    from mnist_gan.settings.config import ModelConfig

    dataset = ImageDataset(mnist_5k.images[:2000], None, "unlabelled", "test")  # no labels: k-means clusters
    probe = ClassProbe.for_dataset(dataset, ModelConfig(), samples=300)
    assert probe.kind == "clusters" and sum(probe.reference) == pytest.approx(1, abs=1e-4)
    real = probe(_Replay(to_float(mnist_5k.images[2000:2300])))
    assert set(real) == {CLASS_HISTOGRAM, CLASS_REFERENCE, CLASS_PROBE}
    ones = probe(_Replay(to_float(mnist_5k.images[:2000][mnist_5k.labels[:2000] == 1][:100])))
    assert set(ones) == {CLASS_HISTOGRAM}  # the reference is logged once

    def distance(record):
        return 0.5 * np.abs(np.array(record[CLASS_HISTOGRAM]) - np.array(probe.reference)).sum()
    assert distance(real) < 0.1 and distance(ones) > signs.UNBALANCED_TV


def test_heldout_probe_leaves_d_and_the_rng_as_they_were(mnist_5k):
    from mnist_gan.gan.losses import get_loss
    from mnist_gan.gan.models import build_discriminator
    from mnist_gan.settings.config import preset

    dataset = ImageDataset(mnist_5k.images[:1000], mnist_5k.labels[:1000], "x", "x", mnist_5k.images[1000:1300],
                           mnist_5k.labels[1000:1300])
    assert HeldoutProbe.for_dataset(ImageDataset(dataset.images, None, "x", "x"), get_loss(preset("dcgan")),
                                   preset("dcgan").model) is None
    for name in ("dcgan", "recommended"):  # BatchNorm in D; spectral normalisation in D
        config = preset(name)
        D = build_discriminator(config.model)
        before, rng = {k: v.clone() for k, v in D.state_dict().items()}, torch.get_rng_state()
        scores = HeldoutProbe.for_dataset(dataset, get_loss(config), config.model)(D)
        assert set(scores) == {D_TRAIN_REAL, D_HELDOUT} and all(0 <= v <= 1 for v in scores.values())
        assert abs(scores[D_TRAIN_REAL] - scores[D_HELDOUT]) < signs.OVERFIT_GAP / 3  # an untrained D: no gap
        assert all(torch.equal(before[k], v) for k, v in D.state_dict().items()) and D.training
        assert torch.equal(rng, torch.get_rng_state())


# --------------------------------------------------------------------------------------------- the report

def test_report_on_measured_runs_exit_status_json_and_plots(tmp_path, cli):
    healthy, broken = write_run(tmp_path / "healthy", "recommended-0"), write_run(tmp_path / "broken", "one-digit")
    status, out, _ = cli(["diagnose", healthy, "--json"])
    report = json.loads(out)
    assert status == 0 and report["healthy"] and report["findings"] == []
    assert {"run_dir", "status", "iteration", "findings", "skipped", "timeline", "plots"} <= set(report)
    assert {Path(p).name for p in report["plots"]} == {"losses.png", "scores.png", "grad_norms.png", "classes.png",
                                                       "fid.png"}
    assert all(Path(p).stat().st_size > 1000 and Path(p).parent == healthy / "diagnosis" for p in report["plots"])
    status, out, _ = cli(["diagnose", broken, "--no-plots"])
    assert status == 1 and "[d-overfits]" in out and "try: --augment-shift 2" in out
    assert "timeline:" in out and not (broken / "diagnosis").exists()


def test_a_run_without_probes_says_which_detectors_could_not_run(tmp_path, cli):
    run = write_run(tmp_path / "old", "recommended-0")
    old = [{k: v for k, v in json.loads(line).items() if k not in FIELDS}
           for line in (run / "metrics.jsonl").read_text().splitlines()]
    old = [r for r in old if "fid" not in r]  # written before the probes, without --eval-every
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old) + '{"iteration": 20')  # cut off
    status, out, _ = cli(["diagnose", run, "--json", "--out", tmp_path / "plots"])
    report = json.loads(out)
    assert status == 0 and set(report["skipped"]) == {"vanishing-gradient", "d-overfits", "class-drift",
                                                      "memorisation", "no-progress", "flat-samples",
                                                      "mode-collapse"}
    assert "--eval-every" in report["skipped"]["memorisation"]
    assert {Path(p).name for p in report["plots"]} == {"losses.png", "scores.png"}
    (run / "diagnosis").write_text("not a folder")  # where the plots would go cannot be written
    status, out, err = cli(["diagnose", run])
    assert status == 0 and "verdict: healthy" in out and "no plots:" in err and "--no-plots" in err


def test_status_of_a_running_run_and_user_errors(tmp_path, cli):
    run = write_run(tmp_path / "live", "recommended-0")
    with exclusive_lock(run):  # what a training process holds
        assert build_report(run).status == "running"
    assert build_report(run).status == "stopped"  # 2,006 of the 3,000 iterations it was asked for
    status, _, err = cli(["diagnose", tmp_path / "nothing"])
    assert status == 2 and "not a run directory" in err
    (tmp_path / "empty").mkdir()
    assert cli(["diagnose", tmp_path / "empty"])[0] == 2


def test_planned_iterations_from_epochs():
    records = [{"iteration": i, "epoch": (i - 1) // 7 + 1} for i in range(5, 60, 5)]
    assert planned_iterations({"train": {"epochs": 10, "iterations": None}}, records) == 70
    assert planned_iterations({"train": {"iterations": 123}}, []) == 123


def test_diagnose_a_real_tiny_run_written_by_todays_code(trained_run, cli, tmp_path):
    run = tmp_path / "run"  # a copy: the shared run must stay as training left it for the other tests
    shutil.copytree(trained_run.dir, run, symlinks=True)
    status, out, _ = cli(["diagnose", run, "--json"])
    report = json.loads(out)
    assert status == (0 if report["healthy"] else 1)
    assert report["status"] == "finished" and report["iteration"] == 20 and report["records"] == 4
    assert "vanishing-gradient" not in report["skipped"]  # gradient norms: logged at every log step
    assert "class-drift" in report["skipped"]  # 20 iterations: shorter than the class probe's interval
    grid = read_grid(run / "samples" / "iter_00000020.png")
    assert grid.shape == (64, 1, 28, 28) and -1 <= grid.min() and grid.max() <= 1
    assert (run / "diagnosis" / "losses.png").exists()


def test_a_real_broken_run_seed_relu(small_npz, tmp_path, cli):
    out = tmp_path / "relu"
    status, _, err = cli(["train", "--preset", "seed-relu", "--data", small_npz, "--iterations", 30, "--log-every",
                          4, "--sample-every", 10, "--checkpoint-every", 0, "--no-progress", "--out", out])
    assert status == 0, err
    status, text, _ = cli(["diagnose", out])
    assert status == 1 and "[flat-samples]" in text and "--g-activation tanh" in text
    report = build_report(out)
    flat = next(f for f in report.findings if f.code == "flat-samples")
    assert flat.source == "grids" and flat.first_iteration <= 30 and flat.active_at_end
    # What the replay finds, the training loop said as it happened: on stderr and in the lines' warnings.
    _, records, evaluations = read_run(out)
    live = [code for r in records + evaluations for code in r.get("warnings", [])]
    assert {f.code for f in report.findings} <= set(live)
    assert all(f"warning at iteration {f.first_iteration}" in err for f in report.findings if f.source == "grids")
    assert all(r["grad_norm_g"] >= 0 and r["grad_norm_d"] > 0 for r in records)
