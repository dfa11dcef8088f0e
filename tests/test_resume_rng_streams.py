"""Exact resume through the CLI for every random stream a step draws from: a run trained N iterations in one go and
one stopped at N/2, then `mnist-gan train --resume RUN --iterations N`, end with bit-identical checkpoints.

Shift augmentation's offsets and WGAN-GP's interpolation weights come from torch's global RNG, so these tests fail
if a resume does not restore it (the in-process tests of GanStep.load_state_dict cannot see a CLI run's state);
self-conditioning draws each fake's cluster from the noise and re-clusters on D's features.
Every run is tiny: width 8, batch 16, 12 iterations on 160 real digits, on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY_DCGAN, differences

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


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch has no gloo back-end")
def test_split_torchrun_run_ends_bitwise_equal_to_one_torchrun_run(tmp_path, digits160):
    """The same under torchrun with 2 CPU processes (gloo): each rank draws the whole batch's shifts from torch's
    global RNG and keeps its shard, and every rank resumes from rank 0's checkpoint, so a run stopped at N/2 and
    resumed under torchrun ends with the uninterrupted torchrun run's weights, optimizers and RNG states."""
    args = [*TINY_DCGAN, "--limit", "160", "--shuffle", "--checkpoint-every", "0", "--augment-shift", "2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    _torchrun(tmp_path / "w", ["--data", str(digits160), "--out", str(whole), "--iterations", str(TOTAL), *args])
    _torchrun(tmp_path / "s", ["--data", str(digits160), "--out", str(split), "--iterations", str(TOTAL // 2), *args])
    ranks = _torchrun(tmp_path / "r", ["--resume", str(split), "--no-progress", "--iterations", str(TOTAL)])
    resumed, reference = load_checkpoint(latest_checkpoint(split)), load_checkpoint(latest_checkpoint(whole))
    assert resumed["iteration"] == reference["iteration"] == TOTAL == ranks[1]["iteration"]
    assert differences(resumed, reference) == []
    assert differences(ranks[1]["G"], reference["G"]) == []  # rank 1 resumed to the same weights as rank 0


def _torchrun(weights_dir: Path, args: list[str]) -> list[dict]:
    """`mnist-gan train ARGS` under torchrun with 2 CPU processes (tests/ddp_worker.py); each rank's final state."""
    weights_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               "2", str(REPO / "tests" / "ddp_worker.py"), str(weights_dir), *args], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    assert launched.returncode == 0, launched.stderr[-3000:]
    return [torch.load(weights_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
