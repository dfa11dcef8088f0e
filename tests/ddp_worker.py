"""Started by torchrun from test_distributed.py: `mnist-gan train ARGS...`, then save this rank's final G and D
to WEIGHTS_DIR/rank<R>.pt, so the test can compare the ranks (rank 0 alone writes the run directory)."""

from __future__ import annotations

import os
import sys

import torch

import mnist_gan.training
from mnist_gan.cli import main

weights_dir, args = sys.argv[1], sys.argv[2:]
final = {}
check_finite = mnist_gan.training._check_finite


def record(G, D, iteration):  # every rank runs this before each checkpoint, rank 0 then writes it
    final.update(G={k: v.clone() for k, v in G.state_dict().items()},
                 D={k: v.clone() for k, v in D.state_dict().items()}, iteration=iteration)
    check_finite(G, D, iteration)


mnist_gan.training._check_finite = record
code = main(["train", *args])
torch.save(final, os.path.join(weights_dir, f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
