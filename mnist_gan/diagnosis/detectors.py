"""The problems the diagnosis knows, and running their detectors: while a run trains, and over a whole run.

DETECTORS is the one table of them: each problem's code, the sign that finds it (a function of
mnist_gan.diagnosis.signs), what that sign needs a run to have logged, and the advice (a title, the likely causes
and the flags to try), written once for the training loop's warnings and the report alike. While a run trains,
its recorder calls `sample_problems` on each grid, `record_problems` at each log step (the probes' fields merged
into the newest record first) and `evaluation_problems` after each evaluation; `mnist-gan diagnose`
(mnist_gan.diagnosis.report) replays the same calls over a whole run afterwards. Given the run's config, the advice
leaves out every flag the run already uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mnist_gan.diagnosis.signs import (
    Problem,
    class_drift,
    d_overfits,
    d_wins,
    divergence,
    flat_samples,
    memorisation,
    mode_collapse,
    no_progress,
    vanishing_gradient,
)
from mnist_gan.gan.losses import LOSSES
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    GRAD_NORM_D,
    GRAD_NORM_G,
    is_histogram,
    newest,
    series,
)
from mnist_gan.settings.config import RunConfig

USUAL_MAX_LR = 0.01  # published GAN learning rates are 1e-5..1e-2 (the tutorial 5e-4, Radford et al. 2e-4)
USUAL_MAX_PENALTY = 100.0  # published gradient-penalty weights and R1 gammas are 0.1-100 (WGAN-GP: 10)


# ------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Detector:
    """A problem the diagnosis knows: the function that finds it, what that needs, and what to do about it."""

    code: str
    find: Callable[..., list[Problem]]  # its sign (`divergence` reports "divergence", else "oscillation")
    reads: str  # what `find` is given: "grids" (sample images), "records" (train lines) or "evaluations"
    needs: tuple[str, ...]  # fields some train line must carry ("eval:<field>": some evaluation) to run it ...
    how: str  # ... and how a run comes to log them
    title: str
    causes: tuple[str, ...]  # the likely causes
    flags: tuple[str, ...]  # what to try, most promising first: flags with their values, or a few words


DETECTORS = {detector.code: detector for detector in [
    Detector("flat-samples", flat_samples, "grids", (), "the sample grids", "G draws flat, single-tone images",
             ("G's output unit is stuck (a ReLU output never goes negative: the seed-relu preset)",
              "a learning rate so high that G saturated"),
             ("--g-activation tanh", "--preset recommended", "--lr 0.0002")),
    Detector("mode-collapse", mode_collapse, "grids", (), "the sample grids", "G draws the same image for every z",
             ("G found one image D cannot reject and D forgets it as fast as G returns to it",),
             ("--loss lsgan", "--loss hinge", "--spectral-norm", "--lr-g 0.0001", "--preset recommended")),
    Detector("d-wins", d_wins, "records", ("d_x", "d_g_z"), "every run logs them",
             "D rejects every fake with certainty",
             ("D learns much faster than G (learning rates, capacity)", "G cannot make digit-like images"),
             ("--lr-d 0.0001", "--label-smoothing 0.1", "--spectral-norm", "--augment-shift 2")),
    Detector("vanishing-gradient", vanishing_gradient, "records", (GRAD_NORM_G, GRAD_NORM_D),
             "logged at log steps by the training loop", "G's gradient has vanished",
             ("D saturates, so a saturating loss passes G no signal", "dead ReLU units in G (the seed-relu failure)"),
             ("--g-activation tanh", "--loss non-saturating", "--loss lsgan", "--lr-d 0.0001", "--spectral-norm",
              "--r1-gamma 1")),
    Detector("divergence", divergence, "records", ("d_loss",), "every run logs it; gradient norms sharpen it",
             "gradient norms are exploding",
             ("a learning rate too high for the loss and optimizer", "no normalisation in D"),
             ("--lr 0.00002 (10x smaller)", "--spectral-norm", "--r1-gamma 1",
              "--resume from a checkpoint before this point, with a lower --lr")),
    Detector("oscillation", divergence, "records", ("d_loss",), "every run logs it",
             "D and G keep overshooting each other",
             ("learning rates too high", "Adam's momentum (beta1) amplifying the swings"),
             ("--lr 0.0001", "--optimizer adam --beta1 0.5", "--spectral-norm", "--loss hinge",
              "--preset recommended")),
    Detector("d-overfits", d_overfits, "records", (D_TRAIN_REAL, D_HELDOUT),
             "logged when the data set has a test split (a held-out set)", "D memorises its training images",
             ("too few training images for D's capacity", "D trains much more than G"),
             ("--augment-shift 2", "--r1-gamma 1", "--lr-d 0.0001", "--spectral-norm", "drop --limit")),
    Detector("class-drift", class_drift, "records", (CLASS_HISTOGRAM,),
             "logged at log steps, or from evaluations (--eval-every)",
             "some digits dominate the samples, others vanish",
             ("partial mode collapse: G drifts towards the classes D rejects least", "a long run past its best point"),
             ("--ema-decay 0.999", "--spectral-norm", "--lr-g 0.0001", "--conditional",
              "--eval-every 500 --checkpoint-every 500 (keep the best checkpoint)")),
    Detector("memorisation", memorisation, "evaluations", ("eval:memorization",),
             "needs evaluations: train with --eval-every N", "G copies training images",
             ("a small training set trained for long", "D memorised the set (see d-overfits)"),
             ("--augment-shift 2", "drop --limit", "fewer --iterations", "an earlier checkpoint")),
    Detector("no-progress", no_progress, "evaluations", ("eval:fid",), "needs evaluations: train with --eval-every N",
             "FID is flat or rising",
             ("training has converged or stalled", "training is making samples worse (drift)"),
             ("--preset recommended", "--loss lsgan", "--lr 0.0002", "stop at the best FID (--iterations)",
              "--checkpoint-every equal to --eval-every, to keep the best checkpoint")),
]}


# ------------------------------------------------------------------------------------ running the detectors
def sample_problems(images: torch.Tensor, config: RunConfig | dict | None = None) -> list[Problem]:
    """Every image detector on a batch of samples (N, 1, 28, 28) in G's output range, drawn from different z:
    what the training loop calls on each grid. Given the run's `config`, the advice leaves out what it uses."""
    return advised(flat_samples(images) + mode_collapse(images), config)


def record_problems(records, absolute_score: bool = True, reference: list[float] | None = None,
                    kind: str | None = None, config: RunConfig | dict | None = None) -> list[Problem]:
    """Every log-record detector at the newest record: what the training loop calls at each log step.

    `records` is a list of metrics records (or a Series of them). The class histograms are compared with
    `reference`, else with the newest class_reference a record carries, else with equal shares. Given the run's
    `config`, the advice leaves out what it already uses.
    """
    if isinstance(records, list):
        reference = reference or newest(records, CLASS_REFERENCE)
        kind = kind or newest(records, CLASS_PROBE)
    s = series(records)
    problems = d_wins(s, absolute_score) + vanishing_gradient(s) + d_overfits(s) + divergence(s)
    if CLASS_HISTOGRAM in s.values:
        seen = np.isfinite(s.values[CLASS_HISTOGRAM]).all(1)
        problems += class_drift(s.iteration[seen], s.values[CLASS_HISTOGRAM][seen], reference, kind or "classes")
    return advised(problems, config)


def evaluation_problems(evaluations: list[dict], reference: list[float] | None = None,
                        config: RunConfig | dict | None = None) -> list[Problem]:
    """Every evaluation detector at the newest evaluation: what the loop calls after each one.

    The class histograms of evaluations are compared with `reference` when given; else with equal shares, but
    only where the logged class_kl agrees that the data's classes are balanced (within 0.05 nats). Given the
    run's `config`, the advice leaves out what it already uses.
    """
    problems = memorisation(evaluations) + no_progress(evaluations)
    points = histogram_points(evaluations)
    if points and (reference is not None or balanced_reference(points)):
        problems += class_drift([e["iteration"] for e in points], [e[CLASS_HISTOGRAM] for e in points], reference)
    return advised(problems, config)


def histogram_points(evaluations: list[dict]) -> list[dict]:
    """The evaluations that carry a class histogram as wide as the newest one's (a damaged or foreign line's
    histogram, text or of another width, is no point on the same curve)."""
    points = [e for e in evaluations if is_histogram(e.get(CLASS_HISTOGRAM))]
    return [e for e in points if len(e[CLASS_HISTOGRAM]) == len(points[-1][CLASS_HISTOGRAM])]


def balanced_reference(evaluations: list[dict]) -> bool:
    """Whether KL(histogram || equal shares) matches each evaluation's logged class_kl (its real reference)."""
    for e in evaluations:
        h = np.asarray(e[CLASS_HISTOGRAM], dtype=np.float64)
        if not isinstance(e.get("class_kl"), (int, float)):
            return False
        mask = h > 0
        uniform_kl = float(np.sum(h[mask] * np.log(h[mask] * len(h))))
        if abs(uniform_kl - e["class_kl"]) > 0.05:
            return False
    return True


# ------------------------------------------------------------------------------------ advice
SETTING = re.compile(r"--([a-z0-9-]+)(?: ([^-\s(]\S*))?")  # a flag in a piece of advice, and its value if any
ONLY_SETTINGS = re.compile(rf"{SETTING.pattern}(?: {SETTING.pattern})*(?: \(.*\))?")  # flags and a (note)
UNKNOWN = object()  # a setting a run's config does not record (a config.json of an older version)


def advised(problems: list[Problem], config: RunConfig | dict | None = None) -> list[Problem]:
    """`problems`, each given the flags to try of its entry in DETECTORS (see untried)."""
    for problem in problems:
        problem.flags = untried(problem.code, config)
    return problems


def untried(code: str, config: RunConfig | dict | None = None) -> tuple[str, ...]:
    """The flags DETECTORS advises for `code`, less those in use in the run of `config` (a RunConfig or
    config.json's dict; None: all of them)."""
    if code not in DETECTORS:
        return ()
    settings = config.to_dict() if isinstance(config, RunConfig) else config
    return tuple(flag for flag in DETECTORS[code].flags if settings is None or not in_use(flag, settings))


def in_use(advice: str, config: dict) -> bool:
    """Whether a piece of advice asks for nothing the run of `config` (config.json's dict) does not already do:
    "--loss lsgan" on an LSGAN run, "--spectral-norm" with spectral norm on, "--preset recommended" on a
    recommended run, "drop --limit" on a run without --limit. Advice in words, or about a setting the config does
    not record, is never in use."""
    if advice.startswith("drop --"):
        return _setting(config, advice.split()[1][2:]) in (None, False, 0)
    if not ONLY_SETTINGS.fullmatch(advice):
        return False
    return all(_equal(_setting(config, name), value) for name, value in SETTING.findall(advice))


def _setting(config: dict, flag: str):
    """The run's value of --flag (its preset for --preset), or UNKNOWN."""
    name = flag.replace("-", "_")
    if name == "preset":
        return config.get("preset", UNKNOWN)
    return next((section[name] for section in config.values() if isinstance(section, dict) and name in section),
                UNKNOWN)


def _equal(value, text: str) -> bool:
    """Whether a setting's value is what `--flag text` sets (`--flag` alone: True)."""
    if isinstance(value, bool):
        return value and not text
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return isinstance(value, str) and value == text


def divergence_hint(config: RunConfig) -> str:
    """What to change after training diverged: each setting far above its usual values, else the learning rate.

    E.g. "try a lower --gp-weight (now 1e+05; usually at most 100)"; "try a lower --lr (now 0.0005)" when
    nothing stands out.
    """
    train = config.train
    rates = [("--lr", train.lr), ("--lr-d", train.lr_d), ("--lr-g", train.lr_g)]
    suspects = [(flag, value, USUAL_MAX_LR) for flag, value in rates if value is not None and value > USUAL_MAX_LR]
    loss = LOSSES.get(train.loss)
    if loss is not None and loss.penalty is not None and train.gp_weight > USUAL_MAX_PENALTY:
        suspects.append(("--gp-weight", train.gp_weight, USUAL_MAX_PENALTY))
    if train.r1_gamma > USUAL_MAX_PENALTY:
        suspects.append(("--r1-gamma", train.r1_gamma, USUAL_MAX_PENALTY))
    if suspects:
        return "try a lower " + " and a lower ".join(f"{flag} (now {value:g}; usually at most {usual:g})"
                                                    for flag, value, usual in suspects)
    return "try a lower " + " or ".join(f"{flag} (now {value:g})" for flag, value in rates if value is not None)
