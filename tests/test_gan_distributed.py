"""torchrun with 2 CPU processes (gloo): identical ranks, the one-process maths, rank-0-only files, resume in 1."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO

from mnist_gan.cli.parser import main
from mnist_gan.gan.models import build_discriminator, build_generator
from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.settings.config import ModelConfig, preset

# lr 0.0005 (keras-dcgan's, the seed preset's until it took the tutorial's 0.001): the comparison below is of
# rounding, which a larger step amplifies in these first, steepest iterations.
ARGS = ["--preset", "seed", "--batch-size", "16", "--iterations", "2", "--log-every", "1", "--sample-every", "0",
        "--precision", "fp32", "--lr", "0.0005", "--no-progress"]


def _relative_gaps(a: dict, b: dict, start: dict) -> dict[str, float]:
    """Per tensor, |a - b| relative to how far training moved b from `start` (tensors that moved)."""
    gaps = {}
    for key, value in b.items():
        moved = float((value.float() - start[key].float()).norm())
        if value.is_floating_point() and moved > 1e-6:  # not e.g. a bias before BatchNorm (zero gradient)
            gaps[key] = float((a[key].float() - value.float()).norm()) / moved
    return gaps


needs_gloo = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo back-end")


def _train_in_two_processes(tmp_path: Path, args: list[str],
                            env: dict | None = None) -> tuple[list[dict], subprocess.CompletedProcess]:
    """`mnist-gan train ARGS` under torchrun with 2 CPU processes; each rank's final G and D state dicts."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "tests" / "ddp_worker.py"), str(tmp_path), *args], env=env, capture_output=True, text=True,
        timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)], launched


def _assert_ranks_equal_and_match(ranks: list[dict], single: dict, what: str,
                                  model: ModelConfig | None = None) -> None:
    """Both ranks hold identical weights, within 1e-3 (relative to how far they moved from their initial values
    under seed 0, built from `model`, default the seed preset's) of one process's."""
    for net in ("G", "D"):  # DDP averages the gradients, so both ranks take identical steps
        for key, value in ranks[0][net].items():
            assert torch.equal(value, ranks[1][net][key]), f"{what}: {net}.{key} differs between ranks"
    torch.manual_seed(0)
    model = model or preset("seed").model
    start = {"G": build_generator(model).state_dict(), "D": build_discriminator(model).state_dict()}
    for net in ("G", "D"):
        gaps = _relative_gaps(ranks[0][net], single[net], start[net])
        assert "project.3.weight" in gaps or net == "D" or model.architecture != "seed"  # G's BatchNorm trained
        assert max(gaps.values()) < 1e-3, (what, {k: v for k, v in gaps.items() if v >= 1e-3})


@needs_gloo
def test_two_cpu_processes_match_one_process_and_resume_in_one(tmp_path, small_npz):
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    ranks, launched = _train_in_two_processes(tmp_path, ["--data", str(small_npz), "--out", str(ddp_out), *ARGS])
    assert launched.stdout.count("run directory:") == 1  # rank 0 speaks for both

    # Only rank 0 wrote: one metrics line per log step, one checkpoint per save.
    lines = [json.loads(line) for line in (ddp_out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2]
    assert sorted(p.name for p in (ddp_out / "checkpoints").iterdir()) == ["iter_00000002.ckpt"]

    # The same global batch of 16 in one process: 2 x 8 images with DDP-averaged gradients and BatchNorm over
    # all 16 is the same maths; fp32 rounding differs, so after 2 iterations each tensor agrees to 1e-3 of how far
    # it moved (about 5e-5 is typical). Not more iterations: this early, the G step amplifies rounding, and even
    # a rounding-only change in one process (--no-joint-d-batch) moves G by 2e-3 of its movement in 4 iterations.
    assert main(["train", "--data", str(small_npz), "--out", str(single_out), *ARGS]) == 0
    single = load_checkpoint(single_out / "checkpoints" / "iter_00000002.ckpt")
    _assert_ranks_equal_and_match(ranks, single, "plain")
    single_lines = [json.loads(line) for line in (single_out / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(lines, single_lines, strict=True):
        assert abs(a["d_loss"] - b["d_loss"]) < 1e-5 and abs(a["g_loss"] - b["g_loss"]) < 1e-5

    # A checkpoint written by 2 processes resumes in 1.
    assert main(["train", "--resume", str(ddp_out), "--iterations", "4", "--no-progress"]) == 0
    assert load_checkpoint(ddp_out / "checkpoints" / "iter_00000004.ckpt")["iteration"] == 4


@needs_gloo
def test_penalties_and_shifts_in_two_processes_match_one_process(tmp_path, small_npz):
    # WGAN-GP's mixing weights and the shifts are random per image: drawn per rank, both ranks would repeat one
    # half-batch's draws (D moved 0.12 of its movement away from one process's before they were drawn globally).
    # R1 and the gradient penalty run through the unwrapped D, yet their gradients are averaged like the rest.
    args = [*ARGS, "--loss", "wgan-gp", "--r1-gamma", "1", "--augment-shift", "2"]
    ranks, _ = _train_in_two_processes(tmp_path, ["--data", str(small_npz), "--out", str(tmp_path / "ddp"), *args])
    assert main(["train", "--data", str(small_npz), "--out", str(tmp_path / "single"), *args]) == 0
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "iter_00000002.ckpt")
    _assert_ranks_equal_and_match(ranks, single, "wgan-gp, r1, shift")


@needs_gloo
def test_the_default_self_conditioned_preset_in_two_processes_matches_one_process(tmp_path, small_npz):
    # Every rank clusters the whole data set under the run's seed, so the cluster ids agree without a collective.
    args = [*ARGS, "--preset", "recommended", "--width", "8", "--self-condition", "4"]  # after ARGS' seed: it wins
    ranks, _ = _train_in_two_processes(tmp_path, ["--data", str(small_npz), "--out", str(tmp_path / "ddp"), *args])
    assert main(["train", "--data", str(small_npz), "--out", str(tmp_path / "single"), *args]) == 0
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "iter_00000002.ckpt")
    assert torch.equal(ranks[0]["G"]["cluster_weights"], single["G"]["cluster_weights"]), "the same clusters"
    model = dataclasses.replace(preset("recommended").model, width=8, self_condition=4)
    _assert_ranks_equal_and_match(ranks, single, "self-conditioned", model)


@needs_gloo
def test_rank_0_alone_probes_and_waits_for_no_other_rank(tmp_path, mnist_5k):
    # D has BatchNorm, global under torchrun (a collective in training mode): the held-out probe, which rank 0
    # alone runs, must not call it, or rank 0 would wait forever for rank 1.
    data = tmp_path / "heldout.npz"
    np.savez(data, x_train=mnist_5k.images[:256].numpy(), y_train=mnist_5k.labels[:256].numpy(),
             x_test=mnist_5k.images[4000:4128].numpy(), y_test=mnist_5k.labels[4000:4128].numpy())
    out = tmp_path / "ddp"
    args = ["--preset", "dcgan", "--width", "8", "--data", str(data), "--out", str(out), "--batch-size", "16",
            "--iterations", "4", "--log-every", "2", "--sample-every", "0", "--precision", "fp32", "--no-progress"]
    ranks, _ = _train_in_two_processes(tmp_path, args, {"PROBE_EVERY": "2"})
    for key, value in ranks[0]["D"].items():  # the probes left the ranks in step
        assert torch.equal(value, ranks[1]["D"][key]), key
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [2, 4]
    assert all(r["grad_norm_d"] > 0 and 0 <= r["d_heldout"] <= 1 and len(r["class_histogram"]) == 10 for r in lines)


def test_global_batch_must_divide_among_the_processes(monkeypatch):
    from mnist_gan.errors import MnistGanError
    from mnist_gan.gan import distributed

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(MnistGanError, match="global batch"):
        distributed.setup("cpu", 16)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(MnistGanError, match="leaves 6 images each, not a multiple of --pack 4"):
        distributed.setup("cpu", 24, pack=4)  # 24 divides among 4 processes, and by 4, but 6 is not whole packs
    with pytest.raises(MnistGanError, match="--diversity is not combined with several processes"):
        distributed.setup("cpu", 32, pack=2, paired=True)


def test_one_process_needs_no_process_group(monkeypatch):
    from mnist_gan.gan import distributed

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks, device = distributed.setup("cpu", 16)
    assert not ranks.enabled and ranks.is_main and device.type == "cpu"
    batch = torch.arange(8)
    assert torch.equal(ranks.shard(batch), batch)
    assert not torch.distributed.is_initialized()


def test_shards_are_disjoint_and_cover_the_global_batch():
    from mnist_gan.gan.distributed import Ranks

    batch = torch.arange(12)
    parts = [Ranks(rank, 3).shard(batch) for rank in range(3)]
    assert torch.equal(torch.cat(parts), batch)
