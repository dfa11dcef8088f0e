"""Started by torchrun from test_gan_distributed.py: `mnist-gan train ARGS...`, then save this rank's final G and D
to WEIGHTS_DIR/rank<R>.pt, so the test can compare the ranks (rank 0 alone writes the run directory)."""

from __future__ import annotations

import os
import sys

import torch

from mnist_gan.cli.parser import main
from mnist_gan.gan.step import GanStep

weights_dir, args = sys.argv[1], sys.argv[2:]
if os.environ.get("PROBE_EVERY"):  # a test's shorter probe interval (mnist_gan.diagnosis.probes.PROBE_EVERY)
    import mnist_gan.diagnosis.probes

    mnist_gan.diagnosis.probes.PROBE_EVERY = int(os.environ["PROBE_EVERY"])
steps = []  # the step each rank trains with
build = GanStep.__init__


def remember(self, *args, **kwargs):
    build(self, *args, **kwargs)
    steps.append(self)


GanStep.__init__ = remember
code = main(["train", *args])
(step,) = steps
final = {"G": step.G.state_dict(), "D": step.D.state_dict(), "iteration": step.iteration}
torch.save(final, os.path.join(weights_dir, f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
