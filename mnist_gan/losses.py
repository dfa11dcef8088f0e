"""GAN objectives, each a pair of plain functions of D's logits, chosen by name from LOSSES.

`loss_d(real_logits, fake_logits)` is what D minimises and `loss_g(fake_logits)` what G minimises. D's loss is
the mean of its real and fake halves, which is what Keras reports (and descends) for a concatenated batch; with
SGD this scale matters, so the `seed` preset keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossD = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossG = Callable[[torch.Tensor], torch.Tensor]


def bce_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with labels real=1, fake=0: -[log D(x) + log(1 - D(G(z)))] / 2."""
    return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def non_saturating_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G maximises log D(G(z)): BCE of fakes against label 1, as the tutorial trains G."""
    return F.softplus(-fake_logits).mean()


def minimax_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G minimises log(1 - D(G(z))), the original saturating objective (weak gradients early on)."""
    return -F.softplus(fake_logits).mean()


LOSSES: dict[str, tuple[LossD, LossG]] = {
    "non-saturating": (bce_d, non_saturating_g),
    "minimax": (bce_d, minimax_g),
}
