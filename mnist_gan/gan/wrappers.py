"""How the training step calls G and D: through torch.compile'd wrappers (--compile) or, under torchrun, through
DistributedDataParallel, all sharing the networks' weights. The step itself names only the two networks:

    G, D = wrappers.updating("D")   # (1) Update D: G without gradients, D learning
    G, D = wrappers.updating("G")   # (2) Update G: G learning, D frozen

A network goes through DDP only in the update that trains it, so DDP never waits for gradients that do not come;
in the other update it runs compiled, or as it is.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from mnist_gan.gan import distributed
from mnist_gan.gan.device import maybe_compile
from mnist_gan.gan.distributed import Ranks

logger = logging.getLogger(__name__)


class Wrappers:
    """The modules one training iteration calls in place of G and D.

    Attributes a caller may read: `compiled` (torch.compile is in use: it was asked for and works here).
    """

    def __init__(self, G: nn.Module, D: nn.Module, compile: bool, ranks: Ranks, device: torch.device) -> None:
        """Compile G and D when `compile` (--compile) asks and there is one process; with several (`ranks`),
        first make their BatchNorm layers normalise over the global batch (in place: G and D keep their
        parameters, buffers and state_dict keys) and DDP-wrap them."""
        if compile and ranks.enabled:
            logger.warning("--compile is not combined with several processes yet; training eagerly")
        G_fixed, D_fixed = maybe_compile([G, D], compile and not ranks.enabled, device)
        self.compiled = G_fixed is not G
        self._cuda_graphs = self.compiled and device.type == "cuda"
        if ranks.enabled:
            G_learning = distributed.wrap(distributed.global_batchnorm(G, device), ranks, device)
            D_learning = distributed.wrap(distributed.global_batchnorm(D, device), ranks, device)
        else:
            G_learning, D_learning = G_fixed, D_fixed
        self._for = {"D": (G_fixed, D_learning), "G": (G_learning, D_fixed)}

    def updating(self, network: str) -> tuple[nn.Module, nn.Module]:
        """(G, D) as the update of `network` ('G' or 'D') calls them: that network through DDP (when there are
        several processes), the other as it is; both compiled under --compile."""
        return self._for[network]

    def begin_step(self) -> None:
        """Mark a new iteration: under CUDA graphs the previous iteration's outputs (all consumed by now) may be
        overwritten."""
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
