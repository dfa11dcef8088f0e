"""The signs of a run gone wrong: one function per problem, each pure over plain data (a batch of sample
images, the train lines a run logs, oldest first, or its evaluations), with the thresholds it is set to.

Each reads only what is there: a record without a probe field is simply not evidence for the sign that needs it.
A sign says what it saw and what that means; what to try is the advice of its entry in
mnist_gan.diagnosis.detectors.DETECTORS, which also runs them (while a run trains, and over a whole run afterwards).
Thresholds are set against real MNIST (docs/diagnose.md gives each measurement): a batch of real digits has a
per-pixel spread across images of ~0.5 and a spread within each image of ~0.8 on the [-1, 1] scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from mnist_gan.run.history import D_HELDOUT, D_TRAIN_REAL, GRAD_NORM_D, GRAD_NORM_G, rolling_median, series

# ------------------------------------------------------------------------------------ thresholds
FLAT_IMAGE_STD = 0.05  # spread of pixel values within one image below which it is a flat, single-tone picture
SAME_IMAGE_STD = 0.05  # spread of each pixel across different z below which the samples are all the same image
D_WINS_FAKE_SCORE = 0.01  # D(G(z)) below this: D rejects every fake with certainty ...
D_WINS_REAL_SCORE = 0.5  # ... while D(x) is above this: it still accepts the reals (not a D that rejects all)
D_WINS_PATIENCE = 3  # consecutive logged windows before saying so (a single window can be noise)
PATIENCE = 3  # consecutive probes/log lines a condition must hold for the signs below (one can be noise)
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
    finding: str  # what was seen and what it means
    iteration: int | None = None  # the log step (or evaluation) at which the condition was seen
    evidence: dict = field(default_factory=dict)  # the figures the finding names, for --json
    flags: tuple[str, ...] = ()  # what to try (see mnist_gan.diagnosis.detectors.advised)

    @property
    def message(self) -> str:
        """The finding and the flags to try: what the training loop prints."""
        if not self.flags:
            return self.finding
        *others, last = self.flags
        return f"{self.finding} Try {', '.join(others)} or {last}." if others else f"{self.finding} Try {last}."


# ------------------------------------------------------------------------------------ signs in sample images
def _spreads(images: torch.Tensor) -> tuple[float, float, float]:
    """(spread within each image, spread across images, mean level) of images (N, 1, 28, 28)."""
    images = images.detach().float().clamp(-1, 1)
    within = images.flatten(1).std(dim=1).mean().item()  # how much each image varies across its pixels
    across = images.std(dim=0).mean().item() if len(images) > 1 else float("nan")  # how much z matters
    return within, across, images.mean().item()


def flat_samples(images: torch.Tensor) -> list[Problem]:
    """Samples (N, 1, 28, 28) in G's output range that are each a flat, single-tone picture."""
    within, _, gray = _spreads(images)
    if not within < FLAT_IMAGE_STD:
        return []
    return [Problem("flat-samples",
                    f"samples are flat single-tone images (pixel spread {within:.3f}, mean level {gray:+.2f}): "
                    "G has collapsed to a constant picture and D's gradient no longer reaches it. A ReLU output "
                    "stuck at 0 gives exactly this mid-gray (the seed-relu preset shows it).",
                    evidence={"pixel_spread": within, "mean_level": gray})]


def mode_collapse(images: torch.Tensor) -> list[Problem]:
    """Samples (N, 1, 28, 28) drawn from different z that are all one image; flat ones are flat-samples."""
    within, across, _ = _spreads(images)
    if within < FLAT_IMAGE_STD or not across < SAME_IMAGE_STD:
        return []
    return [Problem("mode-collapse",
                    f"samples barely change with z (spread across samples {across:.3f}): mode collapse, G "
                    "draws one image for every input.",
                    evidence={"spread_across_samples": across})]


# ------------------------------------------------------------------------------------ signs in the train lines
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
                    "images (e.g. a ReLU output), or D learns much faster than G.",
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
                    "loss such as minimax does this).",
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
                    "and G learns to please a memory.",
                    int(s.iteration[seen][-1]), {D_TRAIN_REAL: t, D_HELDOUT: h, "gap": t - h})]


def divergence(records) -> list[Problem]:
    """Gradient norms exploding ("divergence"), else D's loss swinging by orders of magnitude ("oscillation"):
    the two signs of a run about to diverge, before the losses turn non-finite."""
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
                                f"{typical:.3g} ({recent[-1] / typical:.0f}x). Training is about to diverge.",
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
                        "overshooting the other.",
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
                    "G still draws varied images, but of fewer kinds.",
                    int(iterations[-1]), {"distance": float(tv[-1]), "best_distance": float(best[-1]),
                                          "histogram": [round(float(v), 4) for v in now],
                                          "reference": [round(float(v), 4) for v in ref], "kind": kind})]


def _held(raised: np.ndarray, holding: np.ndarray) -> np.ndarray:
    """Hysteresis: True from where `raised & holding` until `holding` first fails (a drift half undone stays)."""
    index = np.arange(len(raised))
    last_raised = np.maximum.accumulate(np.where(raised & holding, index, -1))
    last_broken = np.maximum.accumulate(np.where(~holding, index, -1))
    return holding & (last_raised > last_broken)


# ------------------------------------------------------------------------------------ signs in the evaluations
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
                    f"distance ratio {recent[-1]:.2f}; real digits read ~1.0): G is copying its training set.",
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
                    f"no progress: FID {how} over the last {STALL_EVALUATIONS} evaluations: training "
                    + ("is making samples worse." if rising else "has stalled."),
                    points[-1][0], {"fid": float(fids[-1]), "best_fid": float(fids.min()),
                                    "best_iteration": points[best_index][0]})]
