"""GAN objectives, each a pair of plain functions of D's logits, chosen by name from LOSSES.

`loss.d(real_logits, fake_logits, real_target)` is what D minimises and `loss.g(fake_logits)` what G minimises.
`real_target` is 1 unless one-sided label smoothing lowers it; only losses with a target (`smoothable`) take it.
A loss may declare a `penalty(D, real, fake, labels)`, a term added to D's loss that needs D itself (WGAN-GP's
gradient penalty); the training loop adds whatever the loss declares and knows no loss by name.
Each loss also says how to read D's output as a score in [0, 1] (1: where it pushes reals, 0: where it pushes
fakes), which the logs report as D(x) and D(G(z)) and the d-wins check reads.

The BCE losses report D's loss as the mean of its real and fake halves, which is what Keras reports (and descends)
for a concatenated batch; with SGD this scale matters, so the `seed` preset keeps it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import RunConfig, TrainConfig

LossD = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
LossG = Callable[[torch.Tensor], torch.Tensor]
# (D, real, fake, labels=None, alpha=None) -> penalty; alpha (B, 1, 1, 1): WGAN-GP's mixing weights, else drawn
Penalty = Callable[..., torch.Tensor]


def bce_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy with labels real=real_target (1), fake=0: -[log D(x) + log(1 - D(G(z)))] / 2."""
    real_term = real_target * F.softplus(-real_logits) + (1 - real_target) * F.softplus(real_logits)
    return 0.5 * (real_term.mean() + F.softplus(fake_logits).mean())


def non_saturating_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G maximises log D(G(z)): BCE of fakes against label 1, as the tutorial trains G."""
    return F.softplus(-fake_logits).mean()


def minimax_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G minimises log(1 - D(G(z))), the original saturating objective (weak gradients early on)."""
    return -F.softplus(fake_logits).mean()


def lsgan_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """Least squares (Mao et al. 2017): D regresses real to real_target (1) and fake to 0."""
    return 0.5 * ((real_logits - real_target).pow(2).mean() + fake_logits.pow(2).mean())


def lsgan_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G pulls D's output on fakes towards 1."""
    return 0.5 * (fake_logits - 1).pow(2).mean()


def hinge_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """Hinge (Lim & Ye 2017; Miyato et al. 2018): D wants real logits >= 1 and fake logits <= -1."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def wasserstein_d(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0) -> torch.Tensor:
    """The critic maximises E[D(x)] - E[D(G(z))] (Arjovsky et al. 2017)."""
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G (for hinge too) raises the critic's score of its fakes."""
    return -fake_logits.mean()


def gradient_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     labels: torch.Tensor | None = None, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(|grad D(x_hat)| - 1)^2] at random points between real and fake.

    The points are alpha * real + (1 - alpha) * fake, alpha (B, 1, 1, 1) in [0, 1]: given, or drawn from torch's
    global RNG.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1)
    alpha = alpha.to(real.device, real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)  # (B, 1, 28, 28)
    (grad,) = torch.autograd.grad(D(mixed, labels).sum(), mixed, create_graph=True)
    return gradient_penalty_terms(grad).mean()


def gradient_penalty_terms(grad: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's term of each point (N,) from D's gradient there (N, ...): (|grad| - 1)^2."""
    return (grad.flatten(1).norm(dim=1) - 1).pow(2)


def lsgan_score(outputs: torch.Tensor) -> torch.Tensor:
    """LSGAN's D regresses reals to 1 and fakes to 0, so its output, clipped to [0, 1], is the score."""
    return outputs.clamp(0, 1)


def hinge_score(outputs: torch.Tensor) -> torch.Tensor:
    """Hinge D pushes reals to >= 1 and fakes to <= -1 (where it stops learning from them): 0 at -1, 1 at +1."""
    return ((outputs + 1) / 2).clamp(0, 1)


def r1_penalty(D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E[|grad D(x)|^2] on real images only; multiply by gamma / 2."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(real, labels).sum(), real, create_graph=True)
    return r1_terms(grad).mean()


def r1_terms(grad: torch.Tensor) -> torch.Tensor:
    """R1's term of each image (N,) from D's gradient with respect to the images (N, ...): |grad|^2."""
    return grad.flatten(1).pow(2).sum(dim=1)


class GanLoss(NamedTuple):
    """One objective: D's and G's losses, and what else it declares to the training loop."""

    d: LossD
    g: LossG
    penalty: Penalty | None = None  # added to D's loss, times --gp-weight
    smoothable: bool = True  # D has a target for real images that one-sided label smoothing can lower
    batchnorm_in_d: bool = True  # False: the penalty needs per-sample gradients, which BatchNorm in D mixes
    score: Callable[[torch.Tensor], torch.Tensor] = torch.sigmoid  # D's output -> [0, 1] for D(x) and D(G(z))
    absolute_score: bool = True  # False: D's outputs only compare with each other (a WGAN critic has no targets)


LOSSES: dict[str, GanLoss] = {
    "non-saturating": GanLoss(bce_d, non_saturating_g),
    "minimax": GanLoss(bce_d, minimax_g),
    "lsgan": GanLoss(lsgan_d, lsgan_g, score=lsgan_score),
    "hinge": GanLoss(hinge_d, wasserstein_g, smoothable=False, score=hinge_score),
    "wgan-gp": GanLoss(wasserstein_d, wasserstein_g, gradient_penalty, smoothable=False, batchnorm_in_d=False,
                       absolute_score=False),
}


def get_loss(config: RunConfig) -> GanLoss:
    """The configured loss, after refusing combinations that cannot work."""
    name = config.train.loss
    if name not in LOSSES:
        raise MnistGanError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    loss = LOSSES[name]
    if config.train.label_smoothing and not loss.smoothable:
        raise MnistGanError(f"--label-smoothing needs a loss with a target for real images; --loss {name} has none "
                            "(use non-saturating, minimax or lsgan)")
    uses_batchnorm_in_d = config.model.architecture == "dcgan" and config.model.d_batchnorm
    if uses_batchnorm_in_d and not loss.batchnorm_in_d:
        raise MnistGanError(f"--loss {name}'s gradient penalty is per image, which BatchNorm in D breaks: "
                            "pass --no-d-batchnorm (and perhaps --spectral-norm)")
    return loss


def make_d_penalty(loss: GanLoss, config: TrainConfig) -> Penalty:
    """The terms D's loss adds to its objective: the loss's own penalty (times gp_weight) and R1 (gamma / 2)."""

    def d_penalty(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None = None,
                  alpha: torch.Tensor | None = None) -> torch.Tensor | float:
        total = 0.0
        if loss.penalty is not None and config.gp_weight:
            total = total + config.gp_weight * loss.penalty(D, real, fake, labels, alpha)
        if config.r1_gamma:
            total = total + config.r1_gamma / 2 * r1_penalty(D, real, labels)
        return total

    return d_penalty
