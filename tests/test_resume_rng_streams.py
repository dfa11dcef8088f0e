"""Exact resume through the CLI for every random stream a step draws from: a run trained N iterations in one go and
one stopped at N/2, then `mnist-gan train --resume RUN --iterations N`, end with bit-identical checkpoints.

Shift augmentation's offsets and WGAN-GP's interpolation weights come from torch's global RNG, so these tests fail
if a resume does not restore it (the in-process tests of GanStep.load_state_dict cannot see a CLI run's state);
self-conditioning draws each fake's cluster from the noise and re-clusters on D's features.
Every run is tiny: width 8, batch 16, 12 iterations on 160 real digits, on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_DCGAN, differences

from mnist_gan.cli.parser import main
from mnist_gan.run.checkpoint import latest_checkpoint, load_checkpoint

TOTAL = 12

STREAMS = {
    "shift augmentation": ["--augment-shift", "2"],
    "wgan-gp interpolation": ["--loss", "wgan-gp", "--no-d-batchnorm"],
    "self-conditioning": ["--self-condition", "4", "--recluster-every", "4"],
}


@pytest.fixture(scope="module")
def digits160(tmp_path_factory, mnist_5k) -> Path:
    """160 real digits with labels, as mnist.npz: 10 batches of 16 an epoch."""
    path = tmp_path_factory.mktemp("digits") / "digits160.npz"
    np.savez(path, x_train=mnist_5k.images[:160].numpy(), y_train=mnist_5k.labels[:160].numpy())
    return path


def _train(data: Path, out: Path, iterations: int, extra: list[str]) -> None:
    assert main(["train", "--data", str(data), "--out", str(out), *TINY_DCGAN, "--limit", "160", "--shuffle",
                 "--iterations", str(iterations), "--checkpoint-every", "0", *extra]) == 0


@pytest.mark.parametrize("stream", list(STREAMS))
def test_split_run_ends_bitwise_equal_to_one_run(tmp_path, digits160, stream):
    extra = STREAMS[stream]
    whole, split = tmp_path / "whole", tmp_path / "split"
    _train(digits160, whole, TOTAL, extra)
    _train(digits160, split, TOTAL // 2, extra)
    assert main(["train", "--resume", str(split), "--no-progress", "--iterations", str(TOTAL)]) == 0
    resumed, reference = load_checkpoint(latest_checkpoint(split)), load_checkpoint(latest_checkpoint(whole))
    assert resumed["iteration"] == reference["iteration"] == TOTAL
    # G, D, EMA, both optimizers, both RNG streams, the clusters and the config: every bit the same.
    assert differences(resumed, reference) == []
