"""The diagnosis while a run trains: warnings as they happen, once per problem and read on each loss's own scale;
the probes' fields in metrics.jsonl; and weights that the probes leave bit for bit as they were (resume included).

The probe runs, at width 8 and batch 16 on 512 real digits with a held-out split of 256 (so every probe runs), 60
iterations, a line every 10 and a probe every 20: `recommended` (G's average sampled, spectral norm in D) and
`dcgan` (G itself sampled, BatchNorm in G and D), each once with the probes forced off; and `recommended` again,
stopped at 30 and resumed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import state_digest

import mnist_gan.diagnosis.probes
import mnist_gan.training.recorder as recorder_module
from mnist_gan.cli.parser import main
from mnist_gan.diagnosis.detectors import record_problems
from mnist_gan.diagnosis.signs import d_wins
from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    FIELDS,
    GRAD_NORM_D,
    GRAD_NORM_G,
)
from mnist_gan.training.recorder import Monitor

# --------------------------------------------------------------------------------------------------- warnings

def test_d_wins_needs_several_windows_and_is_reported_once():
    winning = {"d_loss": 0.0005, "g_loss": 7.6, "d_x": 0.9995, "d_g_z": 0.0004}
    healthy = {"d_loss": 0.6, "g_loss": 0.9, "d_x": 0.6, "d_g_z": 0.4}
    assert d_wins([healthy, winning, winning]) == []
    assert [p.code for p in d_wins([winning] * 3)] == ["d-wins"]
    monitor = Monitor()
    assert len(monitor.update("losses", d_wins([winning] * 3))) == 1
    assert monitor.update("losses", d_wins([winning] * 4)) == []  # still active: not repeated
    assert monitor.update("losses", d_wins([winning] * 3 + [healthy])) == []  # cleared
    assert len(monitor.update("losses", d_wins([winning] * 3))) == 1  # raised again


def test_relu_generator_is_diagnosed_as_flat(small_npz, tmp_path, capsys):
    out = tmp_path / "relu"
    assert main(["train", "--preset", "seed-relu", "--data", str(small_npz), "--iterations", "10",
                 "--log-every", "5", "--sample-every", "5", "--checkpoint-every", "0", "--no-progress",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "samples are flat" in err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("flat-samples" in r.get("warnings", []) for r in records)
    # the first grid after iteration 0 (at 5) is already flat; the one of the untrained G at 0 is not
    assert re.search(r"warning at iteration 5: .*flat", err) and "warning at iteration 0" not in err, err


@pytest.mark.parametrize("loss, iterations", [("lsgan", 48), ("hinge", 40)])  # the win shows by ~36 and ~28
def test_d_wins_is_seen_through_each_loss_own_scale(small_npz, tmp_path, loss, iterations):
    # The ReLU generator goes flat and D separates it perfectly; LSGAN's and hinge's D(G(z)) settle at their fake
    # targets (0 and <= -1), which a sigmoid would read as 0.5 and 0.27 and never call a win.
    out = tmp_path / loss
    assert main(["train", "--preset", "seed-relu", "--loss", loss, "--data", str(small_npz), "--iterations",
                 str(iterations), "--batch-size", "8", "--log-every", "4", "--sample-every", "0", "--checkpoint-every", "0",
                 "--no-progress", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("d-wins" in r.get("warnings", []) for r in records)
    assert all(0 <= r["d_x"] <= 1 and 0 <= r["d_g_z"] <= 1 for r in records)


def test_a_critic_without_fixed_scale_is_not_called_a_winner(small_npz, tmp_path, monkeypatch):
    separated = {"d_loss": -40.0, "g_loss": 30.0, "d_x": 0.9999, "d_g_z": 0.0001}  # a WGAN critic: normal
    assert [p.code for p in d_wins([separated] * 3)] == ["d-wins"]
    assert d_wins([separated] * 3, absolute_score=False) == []

    seen = []  # what a wgan-gp run tells the check

    def spy(records, absolute_score=True, *args, **kwargs):
        seen.append(absolute_score)
        return record_problems(records, absolute_score, *args, **kwargs)

    monkeypatch.setattr(recorder_module, "record_problems", spy)
    assert main(["train", "--loss", "wgan-gp", "--data", str(small_npz), "--iterations", "2", "--log-every", "1",
                 "--sample-every", "0", "--checkpoint-every", "0", "--no-progress", "--out", str(tmp_path)]) == 0
    assert seen == [False, False]


# ----------------------------------------------------------------------------------------------------- probes

PROBE_EVERY = 20  # the tests' probe interval: 3 probes in 60 iterations
RUN = ["--width", "8", "--batch-size", "16", "--log-every", "10", "--sample-every", "0", "--seed", "1",
       "--checkpoint-every", "30", "--no-progress"]


@pytest.fixture(scope="module")
def heldout_npz(tmp_path_factory, mnist_5k) -> Path:
    """512 real training digits and 256 held-out ones (x_test), as mnist.npz."""
    path = tmp_path_factory.mktemp("data") / "heldout.npz"
    np.savez(path, x_train=mnist_5k.images[:512].numpy(), y_train=mnist_5k.labels[:512].numpy(),
             x_test=mnist_5k.images[4000:4256].numpy(), y_test=mnist_5k.labels[4000:4256].numpy())
    return path


def weights_digest(path: Path) -> str:
    from safetensors.torch import load_file

    return state_digest(load_file(path))  # the tensors: safetensors orders its metadata anew on each save


@pytest.fixture(scope="module")
def runs(tmp_path_factory, heldout_npz) -> dict[str, Path]:
    """Run directories: "<preset>-on" and "<preset>-off" (probes forced off), 60 iterations each;
    "recommended-resumed": 30 iterations, then resumed to 60."""
    root = tmp_path_factory.mktemp("live")
    dirs = {name: root / name for name in ("recommended-on", "recommended-resumed", "dcgan-on", "recommended-off",
                                           "dcgan-off")}

    def train(name: str, iterations: int) -> None:
        preset = name.split("-")[0]
        assert main(["train", "--preset", preset, *RUN, "--data", str(heldout_npz), "--iterations", str(iterations),
                     "--out", str(dirs[name])]) == 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist_gan.diagnosis.probes, "PROBE_EVERY", PROBE_EVERY)
        train("recommended-on", 60)
        train("dcgan-on", 60)
        train("recommended-resumed", 30)
        assert main(["train", "--resume", str(dirs["recommended-resumed"]), "--iterations", "60",
                     "--no-progress"]) == 0
        patch.setattr(recorder_module, "RunProbes", lambda *args, **kwargs: None)
        train("recommended-off", 60)
        train("dcgan-off", 60)
    return dirs


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "iter_00000060.ckpt")


@pytest.mark.parametrize("preset", ["recommended", "dcgan"])
def test_probes_change_no_weight_nor_rng(runs, preset):
    # G, D (BatchNorm statistics and spectral-norm vectors included), G_ema, both optimizers and both RNG streams,
    # every bit the same
    on, off = runs[f"{preset}-on"], runs[f"{preset}-off"]
    assert state_digest(final_state(on)) == state_digest(final_state(off))
    assert weights_digest(on / "generator.safetensors") == weights_digest(off / "generator.safetensors")
    assert lines(on)[-1]["d_loss"] == lines(off)[-1]["d_loss"]


def test_exact_resume_holds_with_probes(runs):
    assert state_digest(final_state(runs["recommended-resumed"])) == state_digest(final_state(runs["recommended-on"]))
    resumed = {r["iteration"]: r for r in lines(runs["recommended-resumed"])}
    for record in lines(runs["recommended-on"]):  # the same figures, the probes' included, whether resumed or not
        assert resumed[record["iteration"]][GRAD_NORM_G] == record[GRAD_NORM_G]
        assert resumed[record["iteration"]].get(CLASS_HISTOGRAM) == record.get(CLASS_HISTOGRAM)


def test_a_run_logs_the_probe_fields(runs):
    records = lines(runs["recommended-on"])
    assert [r["iteration"] for r in records] == [10, 20, 30, 40, 50, 60]
    for r in records:  # gradient norms at every log step, of real gradients
        assert 0 < r[GRAD_NORM_G] < math.inf and 0 < r[GRAD_NORM_D] < math.inf
    probed = [r for r in records if CLASS_HISTOGRAM in r]
    assert [r["iteration"] for r in probed] == [20, 40, 60]
    for r in probed:
        assert len(r[CLASS_HISTOGRAM]) == 10 and sum(r[CLASS_HISTOGRAM]) == pytest.approx(1, abs=1e-4)
        assert 0 <= r[D_TRAIN_REAL] <= 1 and 0 <= r[D_HELDOUT] <= 1
    assert [CLASS_REFERENCE in r for r in probed] == [True, False, False]  # logged once
    assert records[0][GRAD_NORM_G] != records[1][GRAD_NORM_G]  # measured anew each time
    assert not any(name in r for r in lines(runs["recommended-off"]) for name in FIELDS)  # forced off: no probe
