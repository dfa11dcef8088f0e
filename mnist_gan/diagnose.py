"""Watch a run and say, in plain words, when training has gone wrong and why.

The checks read what the loop already has: the logged loss records and the fixed-noise sample batch drawn for
each grid. Each warning fires once when its condition appears and again only after it has cleared.
Thresholds are set against real MNIST: a batch of real digits has a per-pixel spread across images of ~0.5 and a
spread within each image of ~0.8 on the [-1, 1] scale; a collapsed generator drives both towards 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mnist_gan.config import RunConfig
from mnist_gan.losses import LOSSES

FLAT_IMAGE_STD = 0.05  # spread of pixel values within one image below which it is a flat, single-tone picture
SAME_IMAGE_STD = 0.05  # spread of each pixel across different z below which the samples are all the same image
D_WINS_FAKE_SCORE = 0.01  # D(G(z)) below this: D rejects every fake with certainty ...
D_WINS_REAL_SCORE = 0.5  # ... while D(x) is above this: it still accepts the reals (not a D that rejects all)
D_WINS_PATIENCE = 3  # consecutive logged windows before saying so (a single window can be noise)
USUAL_MAX_LR = 0.01  # published GAN learning rates are 1e-5..1e-2 (the tutorial 5e-4, Radford et al. 2e-4)
USUAL_MAX_PENALTY = 100.0  # published gradient-penalty weights and R1 gammas are 0.1-100 (WGAN-GP: 10)


@dataclass
class Problem:
    code: str
    message: str


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
                        "output stuck at 0 gives exactly this mid-gray (the seed-relu preset shows it).")]
    if across < SAME_IMAGE_STD:
        return [Problem("mode-collapse",
                        f"samples barely change with z (spread across samples {across:.3f}): mode collapse, G "
                        "draws one image for every input. Try a lower learning rate for G, a different loss, "
                        "or minibatch-aware tricks.")]
    return []


def loss_problems(records: list[dict], absolute_score: bool = True) -> list[Problem]:
    """Problems visible in the most recent logged loss records (oldest first).

    D(x) and D(G(z)) are the loss's own [0, 1] reading of D's output (see `mnist_gan.losses`). Where they have no
    fixed scale (`absolute_score` False: a WGAN critic, which is meant to separate reals from fakes and still
    gives G a gradient), D winning cannot be read from them and is not checked.
    """
    recent = records[-D_WINS_PATIENCE:]
    if not absolute_score or len(recent) < D_WINS_PATIENCE:
        return []
    if all(r["d_g_z"] < D_WINS_FAKE_SCORE and r["d_x"] > D_WINS_REAL_SCORE for r in recent):
        last = recent[-1]
        return [Problem("d-wins",
                        f"D rejects every fake with certainty (D(G(z)) {last['d_g_z']:.4f}, D(x) "
                        f"{last['d_x']:.3f}, d_loss {last['d_loss']:.4f}, g_loss {last['g_loss']:.2f}): G is "
                        "losing, and with a saturating loss its learning signal has vanished. Usual causes: G "
                        "cannot produce digit-like images (e.g. a ReLU output), or D learns much faster than G; "
                        "try a smaller D learning rate or label smoothing.")]
    return []


@dataclass
class Monitor:
    """Remembers which warnings are active so each is reported once per occurrence."""

    active: set[str] = field(default_factory=set)

    def update(self, source: str, warnings: list[Problem]) -> list[Problem]:
        """Record the current warnings from one source ('samples' or 'losses'); return the newly raised ones."""
        codes = {w.code for w in warnings}
        mine = {c for c in self.active if c.startswith(source + ":")}
        self.active -= {c for c in mine if c.split(":", 1)[1] not in codes}
        new = [w for w in warnings if f"{source}:{w.code}" not in self.active]
        self.active |= {f"{source}:{w.code}" for w in warnings}
        return new


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
