"""Watch a run and say, in plain words, when training has gone wrong, why, and which flags to try.

Every detector is a pure function over plain data: the metrics records a run logs (oldest first), the class
histograms of its samples, its sample images. Each reads only what is there: a record without a probe field is
simply not evidence for the detectors that need it (mnist_gan.diagnosis.report says which could not run). While a run trains,
its recorder calls `sample_problems` on each grid, `record_problems` at each log step (the probes' fields merged
into the newest record first) and `evaluation_problems` after each evaluation; `mnist-gan diagnose`
(mnist_gan.diagnosis.report) runs the same functions over a whole run afterwards.
Thresholds are set against real MNIST (docs/diagnose.md gives each measurement): a batch of real digits has a
per-pixel spread across images of ~0.5 and a spread within each image of ~0.8 on the [-1, 1] scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mnist_gan.gan.losses import LOSSES
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    GRAD_NORM_D,
    GRAD_NORM_G,
    newest,
    rolling_median,
    series,
)
from mnist_gan.settings.config import RunConfig

# ------------------------------------------------------------------------------------ thresholds
FLAT_IMAGE_STD = 0.05  # spread of pixel values within one image below which it is a flat, single-tone picture
SAME_IMAGE_STD = 0.05  # spread of each pixel across different z below which the samples are all the same image
D_WINS_FAKE_SCORE = 0.01  # D(G(z)) below this: D rejects every fake with certainty ...
D_WINS_REAL_SCORE = 0.5  # ... while D(x) is above this: it still accepts the reals (not a D that rejects all)
D_WINS_PATIENCE = 3  # consecutive logged windows before saying so (a single window can be noise)
USUAL_MAX_LR = 0.01  # published GAN learning rates are 1e-5..1e-2 (the tutorial 5e-4, Radford et al. 2e-4)
USUAL_MAX_PENALTY = 100.0  # published gradient-penalty weights and R1 gammas are 0.1-100 (WGAN-GP: 10)
PATIENCE = 3  # consecutive probes/log lines a condition must hold for the detectors below (one can be noise)
# The figures after "healthy" are the extremes of 9 healthy runs (recommended, dcgan, conditional x 3 seeds, ~2,000
# iterations each on 8,000 real digits; benchmarks/diagnose_broken_runs.py, docs/diagnose.md).
VANISH_RATIO = 0.01  # G's gradient norm below 1% of its earlier peak (healthy: never below 0.18 of its median)
VANISH_D_LOSS_FALL = 0.5  # ... while D's loss is below half what it was at that peak (D is winning)
OVERFIT_GAP = 0.15  # D scores its training reals this much above held-out reals (healthy: at most 0.062; the
#                     32-digit run: 0.7 by iteration 540)
EXPLODE_RATIO = 30.0  # a gradient norm 30x both its run median and its first logged value (healthy: < 6x median)
OSCILLATION_WINDOW = 10  # log lines over which D's loss is watched for swings
OSCILLATION_LOG_STD = 0.6  # spread of log10(d_loss) over that window: a factor of 4 each way (healthy: <= 0.42)
SMOOTH = 9  # class histograms are compared through the median distance of the last 9 probes (one probe of 500
#            samples varies by ~0.05 in total variation; a median of 9 by about a third of that)
DRIFT_RISE = 0.1  # the class mix moved this much further from the data's than its best (healthy: <= 0.06); it
#                   stays reported while still DRIFT_RISE / 2 further ...
DRIFT_TV = 0.25  # ... and at least this far (total variation; a long seed run drifts from 0.17 to 0.31)
UNBALANCED_TV = 0.5  # or, past DRIFT_GRACE, still this far: half the samples in the wrong classes (healthy: <= 0.31)
DRIFT_GRACE = 1000  # iterations before "never balanced" counts: early samples are blobs (healthy: 0.9 at first)
DOMINANT = 2.0  # a class holding twice its real share "dominates"
VANISHED = 0.25  # a class below a quarter of its real share has "vanished"
MEMORISATION_RATIO = 0.35  # nearest-training-image distance of samples over that of held-out digits: real digits
#                            read ~1.0, healthy runs 1.07-1.35, a collapse onto 1s 0.42, noisy copies of digits 0.2
STALL_EVALUATIONS = 4  # evaluations in a row without a new best FID before "no progress" is considered
FID_IMPROVEMENT = 0.05  # a new best must beat the old by 5% (long recommended runs still gain 5% per 10 epochs)
FID_RISE = 0.25  # FID this far above the run's best ...
STALLED_FID = 300.0  # ... or flat above this (dcgan reaches ~235 in 5 CPU minutes, recommended ~90 in 100 epochs)


@dataclass
class Problem:
    code: str
    message: str
    iteration: int | None = None  # the log step (or evaluation) at which the condition was seen
    evidence: dict = field(default_factory=dict)  # the figures the message names, for --json


# ------------------------------------------------------------------------------------ detectors on images
def sample_problems(images: torch.Tensor) -> list[Problem]:
    """Problems visible in a batch of samples (N, 1, 28, 28) in G's output range, drawn from different z."""
    images = images.detach().float().clamp(-1, 1)
    within = images.flatten(1).std(dim=1).mean().item()  # how much each image varies across its pixels
    across = images.std(dim=0).mean().item() if len(images) > 1 else float("nan")  # how much z matters
    gray = images.mean().item()
    if within < FLAT_IMAGE_STD:
        return [Problem("flat-samples",
                        f"samples are flat single-tone images (pixel spread {within:.3f}, mean level {gray:+.2f}): "
                        "G has collapsed to a constant picture and D's gradient no longer reaches it. A ReLU "
                        "output stuck at 0 gives exactly this mid-gray (the seed-relu preset shows it); try "
                        "--g-activation tanh or --preset recommended.",
                        evidence={"pixel_spread": within, "mean_level": gray})]
    if across < SAME_IMAGE_STD:
        return [Problem("mode-collapse",
                        f"samples barely change with z (spread across samples {across:.3f}): mode collapse, G "
                        "draws one image for every input. Try a lower G learning rate (--lr-g), --loss lsgan or "
                        "hinge, --spectral-norm, or --preset recommended.",
                        evidence={"spread_across_samples": across})]
    return []


# ------------------------------------------------------------------------------------ detectors on log records
def d_wins(records, absolute_score: bool = True) -> list[Problem]:
    """D(G(z)) near 0 while D(x) stays high, over the last D_WINS_PATIENCE records (oldest first).

    D(x) and D(G(z)) are the loss's own [0, 1] reading of D's output (see `mnist_gan.gan.losses`). Where they have no
    fixed scale (`absolute_score` False: a WGAN critic, which is meant to separate reals from fakes and still
    gives G a gradient), D winning cannot be read from them and is not checked.
    """
    s = series(records)
    d_x, d_g_z = s.get("d_x")[-D_WINS_PATIENCE:], s.get("d_g_z")[-D_WINS_PATIENCE:]
    if not absolute_score or len(d_x) < D_WINS_PATIENCE:
        return []
    if not np.all((d_g_z < D_WINS_FAKE_SCORE) & (d_x > D_WINS_REAL_SCORE)):
        return []
    last = {k: float(s.get(k)[-1]) for k in ("d_x", "d_g_z", "d_loss", "g_loss")}
    return [Problem("d-wins",
                    f"D rejects every fake with certainty (D(G(z)) {last['d_g_z']:.4f}, D(x) {last['d_x']:.3f}, "
                    f"d_loss {last['d_loss']:.4f}, g_loss {last['g_loss']:.2f}): G is losing, and with a "
                    "saturating loss its learning signal has vanished. Usual causes: G cannot produce digit-like "
                    "images (e.g. a ReLU output), or D learns much faster than G; try a smaller D learning rate "
                    "(--lr-d), --label-smoothing 0.1 or --spectral-norm.",
                    int(s.iteration[-1]), last)]


def vanishing_gradient(records) -> list[Problem]:
    """G's gradient norm collapsed to a hundredth of its earlier peak while D's loss fell (needs grad_norm_g)."""
    s = series(records)
    if not s.has(GRAD_NORM_G, "d_loss") or len(s) < 2 * PATIENCE:
        return []
    logged = np.isfinite(s.get(GRAD_NORM_G))  # the lines that carry a probe (a loop may probe less often)
    norms, d_loss, iterations = s.get(GRAD_NORM_G)[logged], s.get("d_loss")[logged], s.iteration[logged]
    if len(norms) < 2 * PATIENCE:
        return []
    smooth = rolling_median(norms, 3)[:-PATIENCE]  # the peak is taken before the newest PATIENCE probes
    if not np.isfinite(smooth).any() or np.nanmax(smooth) <= 0:
        return []
    peak = int(np.nanargmax(smooth))
    recent, recent_d = norms[-PATIENCE:], d_loss[-PATIENCE:]
    d_then = float(rolling_median(d_loss, 3)[peak])
    if not (np.all(recent < VANISH_RATIO * smooth[peak]) and d_then > 0
            and np.all(recent_d < VANISH_D_LOSS_FALL * d_then)):
        return []
    return [Problem("vanishing-gradient",
                    f"G's gradient has vanished: its norm fell from {smooth[peak]:.3g} (iteration "
                    f"{iterations[peak]}) to {recent[-1]:.3g} while D's loss fell from {d_then:.3f} to "
                    f"{recent_d[-1]:.4f}. D separates the fakes so well that nothing flows back to G (a saturating "
                    "loss such as minimax does this). Try --loss non-saturating or lsgan, a smaller --lr-d, "
                    "--spectral-norm or --r1-gamma 1.",
                    int(iterations[-1]), {"grad_norm_g_peak": float(smooth[peak]), "grad_norm_g": float(recent[-1]),
                                           "d_loss_then": d_then, "d_loss": float(recent_d[-1])})]


def d_overfits(records) -> list[Problem]:
    """D scoring its training reals well above held-out reals (needs d_train_real and d_heldout)."""
    s = series(records)
    if not s.has(D_TRAIN_REAL, D_HELDOUT):
        return []
    train, heldout = s.get(D_TRAIN_REAL), s.get(D_HELDOUT)
    seen = np.isfinite(train) & np.isfinite(heldout)
    gap = (train - heldout)[seen][-PATIENCE:]
    if len(gap) < PATIENCE or not np.all(gap > OVERFIT_GAP):
        return []
    t, h = float(train[seen][-1]), float(heldout[seen][-1])
    return [Problem("d-overfits",
                    f"D is memorising its training images: it scores them {t:.3f} but held-out real digits "
                    f"{h:.3f} (gap {t - h:.3f} over the last {PATIENCE} probes). Its verdicts stop generalising, "
                    "and G learns to please a memory. Try --augment-shift 2, --r1-gamma 1, a smaller --lr-d, "
                    "--spectral-norm, or more training images (drop --limit).",
                    int(s.iteration[seen][-1]), {D_TRAIN_REAL: t, D_HELDOUT: h, "gap": t - h})]


def divergence(records) -> list[Problem]:
    """Gradient norms exploding, or D's loss swinging by orders of magnitude, before the losses turn non-finite."""
    s = series(records)
    for name, net in ((GRAD_NORM_D, "D"), (GRAD_NORM_G, "G")):
        logged = np.isfinite(s.get(name))
        norms = s.get(name)[logged]
        if len(norms) >= 2 * PATIENCE:
            typical = max(float(np.median(norms)), float(norms[0]))  # a D that saturated has a tiny median
            recent = norms[-PATIENCE:]
            if typical > 0 and np.all(recent > EXPLODE_RATIO * typical):
                return [Problem("divergence",
                                f"{net}'s gradient norm is exploding: {recent[-1]:.3g} now against a typical "
                                f"{typical:.3g} ({recent[-1] / typical:.0f}x). Training is about to diverge. Try a "
                                "10x smaller --lr, --spectral-norm, --r1-gamma 1, or resume from a checkpoint "
                                "before this point with a lower --lr.",
                                int(s.iteration[logged][-1]), {name: float(recent[-1]), "typical": typical})]
    d_loss = s.get("d_loss")[-(OSCILLATION_WINDOW + PATIENCE - 1):]
    if len(d_loss) < OSCILLATION_WINDOW + PATIENCE - 1 or not np.all(d_loss > 0):  # a WGAN critic's is signed
        return []
    spread = np.lib.stride_tricks.sliding_window_view(np.log10(d_loss), OSCILLATION_WINDOW).std(axis=1)
    if np.all(spread > OSCILLATION_LOG_STD):
        low, high = float(d_loss[-OSCILLATION_WINDOW:].min()), float(d_loss[-OSCILLATION_WINDOW:].max())
        return [Problem("oscillation",
                        f"D and G are oscillating: over the last {OSCILLATION_WINDOW} log lines D's loss swung "
                        f"between {low:.4f} and {high:.3f} (log10 spread {spread[-1]:.2f}); each network keeps "
                        "overshooting the other. Try a smaller --lr (or --lr-d), Adam (--optimizer adam --beta1 "
                        "0.5), --spectral-norm, or --preset recommended.",
                        int(s.iteration[-1]), {"d_loss_min": low, "d_loss_max": high, "log10_spread": float(spread[-1])})]
    return []


def class_drift(iterations, histograms, reference: list[float] | None = None, kind: str = "classes") -> list[Problem]:
    """The class (or cluster) histogram of a fixed sample batch moving away from the data's own, at the newest
    point: `iterations` (T,) and `histograms` (T, C), lists or arrays. `reference` None: equal shares (MNIST's
    digits hold 9.0-11.4% each)."""
    if len(histograms) < PATIENCE:
        return []
    h = np.asarray(histograms, dtype=np.float64)  # (T, C)
    ref = np.full(h.shape[1], 1 / h.shape[1]) if reference is None else np.asarray(reference, dtype=np.float64)
    tv = rolling_median(0.5 * np.abs(h - ref).sum(1), SMOOTH)  # (T,) total-variation distance, smoothed
    best = np.minimum.accumulate(tv)
    rise = tv - np.concatenate([[np.inf], best[:-1]])
    drifted = _held(rise > DRIFT_RISE, (tv > DRIFT_TV) & (rise > DRIFT_RISE / 2))
    unbalanced = (tv > UNBALANCED_TV) & (np.asarray(iterations) >= DRIFT_GRACE)
    if not np.all((drifted | unbalanced)[-PATIENCE:]):
        return []
    now, word = h[-1], "digit" if kind == "classes" else "cluster"
    dominant = [f"{c} ({100 * now[c]:.0f}% vs {100 * ref[c]:.0f}%)" for c in np.argsort(-now)
                if now[c] >= DOMINANT * ref[c]]
    vanished = [str(c) for c in range(len(now)) if now[c] <= VANISHED * ref[c]]
    said = (f"dominating: {word} {', '.join(dominant)}" if dominant else "no single class dominates") + \
        (f"; vanished: {', '.join(vanished)}" if vanished else "")
    how = f"drifted away from the data's (best {best[-1]:.2f})" if drifted[-1] else "never reached the data's"
    return [Problem("class-drift",
                    f"partial mode collapse: the samples' {word} mix {how}; distance now {tv[-1]:.2f}, {said}. "
                    "G still draws varied images, but of fewer kinds. Try --ema-decay 0.999, --spectral-norm, a "
                    "smaller --lr-g, --conditional, or --eval-every to keep the checkpoint before the drift.",
                    int(iterations[-1]), {"distance": float(tv[-1]), "best_distance": float(best[-1]),
                                          "histogram": [round(float(v), 4) for v in now],
                                          "reference": [round(float(v), 4) for v in ref], "kind": kind})]


def _held(raised: np.ndarray, holding: np.ndarray) -> np.ndarray:
    """Hysteresis: True from where `raised & holding` until `holding` first fails (a drift half undone stays)."""
    index = np.arange(len(raised))
    last_raised = np.maximum.accumulate(np.where(raised & holding, index, -1))
    last_broken = np.maximum.accumulate(np.where(~holding, index, -1))
    return holding & (last_raised > last_broken)


def record_problems(records, absolute_score: bool = True, reference: list[float] | None = None,
                    kind: str | None = None) -> list[Problem]:
    """Every log-record detector at the newest record: what the training loop calls at each log step.

    `records` is a list of metrics records (or a Series of them). The class histograms are compared with
    `reference`, else with the newest class_reference a record carries, else with equal shares.
    """
    if isinstance(records, list):
        reference = reference or newest(records, CLASS_REFERENCE)
        kind = kind or newest(records, CLASS_PROBE)
    s = series(records)
    problems = d_wins(s, absolute_score) + vanishing_gradient(s) + d_overfits(s) + divergence(s)
    if CLASS_HISTOGRAM in s.values:
        seen = np.isfinite(s.values[CLASS_HISTOGRAM]).all(1)
        problems += class_drift(s.iteration[seen], s.values[CLASS_HISTOGRAM][seen], reference, kind or "classes")
    return problems


# ------------------------------------------------------------------------------------ detectors on evaluations
def memorisation(evaluations: list[dict]) -> list[Problem]:
    """Samples sitting closer to training images than held-out real digits do (the `memorization` ratio that
    `--eval-every` logs), at the last PATIENCE evaluations but one (two in a row)."""
    ratios = [e["memorization"] for e in evaluations if isinstance(e.get("memorization"), (int, float))]
    recent = ratios[-2:]
    if len(recent) < 2 or not all(r < MEMORISATION_RATIO for r in recent):
        return []
    last = evaluations[-1]
    return [Problem("memorisation",
                    f"samples sit closer to training images than real held-out digits do (nearest-neighbour "
                    f"distance ratio {recent[-1]:.2f}; real digits read ~1.0): G is copying its training set. "
                    "Try --augment-shift 2, more training images (drop --limit), fewer --iterations, or an earlier "
                    "checkpoint.",
                    last.get("iteration"), {"memorization": recent[-1], "class_kl": last.get("class_kl")})]


def no_progress(evaluations: list[dict]) -> list[Problem]:
    """FID (from --eval-every) flat for STALL_EVALUATIONS evaluations while rising or still poor."""
    points = [(e.get("iteration"), e["fid"]) for e in evaluations
              if isinstance(e.get("fid"), (int, float)) and math.isfinite(e["fid"])]
    if len(points) <= STALL_EVALUATIONS:
        return []
    fids = np.array([f for _, f in points])
    before = fids[:-STALL_EVALUATIONS].min()
    best_index = int(np.argmin(fids))
    improved = fids[-STALL_EVALUATIONS:].min() < (1 - FID_IMPROVEMENT) * before
    rising, stalled = fids[-1] > (1 + FID_RISE) * fids.min(), fids.min() > STALLED_FID
    if improved or not (rising or stalled):
        return []
    how = (f"has risen from its best, {fids.min():.1f} at iteration {points[best_index][0]}, to {fids[-1]:.1f}"
           if rising else f"has stayed near {fids[-1]:.1f} (best {fids.min():.1f}), far from real digits")
    return [Problem("no-progress",
                    f"no progress: FID {how} over the last {STALL_EVALUATIONS} evaluations. "
                    + ("Training is making samples worse; keep the checkpoint of the best FID (--checkpoint-every "
                       "equal to --eval-every) and stop there (--iterations), or lower --lr. " if rising else
                       "Training has stalled; try --preset recommended, another --loss, or a different --lr. "),
                    points[-1][0], {"fid": float(fids[-1]), "best_fid": float(fids.min()),
                                    "best_iteration": points[best_index][0]})]


def evaluation_problems(evaluations: list[dict], reference: list[float] | None = None) -> list[Problem]:
    """Every evaluation detector at the newest evaluation: what the loop calls after each one.

    The class histograms of evaluations are compared with `reference` when given; else with equal shares, but
    only where the logged class_kl agrees that the data's classes are balanced (within 0.05 nats).
    """
    problems = memorisation(evaluations) + no_progress(evaluations)
    points = [e for e in evaluations if isinstance(e.get(CLASS_HISTOGRAM), list)]
    if points and (reference is not None or balanced_reference(points)):
        problems += class_drift([e["iteration"] for e in points], [e[CLASS_HISTOGRAM] for e in points], reference)
    return problems


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
