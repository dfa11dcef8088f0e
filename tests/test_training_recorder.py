"""The run's record used directly around a real GanStep: the Recorder writes a kind on every line, the grids,
the GIF and the loss plot; the NullRecorder writes nothing and still checks the losses."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import StubEvaluator, tiny_config

from mnist_gan.data.images import ImageDataset
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.step import GanStep
from mnist_gan.training.recorder import EVAL, TRAIN, NullRecorder, Recorder


def _record_four_iterations(recorder_class, run_dir, mnist_5k, real, monkeypatch):
    """Steps 1-4 of a tiny run through `recorder_class`: logs at 2 and 4, evaluations at 3 and at the end."""
    from mnist_gan.evaluation.evaluator import Evaluator

    monkeypatch.setattr(Evaluator, "for_dataset", classmethod(lambda cls, *args, **kwargs: StubEvaluator()))
    step = GanStep(tiny_config(sample_every=2, eval_every=3))
    dataset = ImageDataset(mnist_5k.images[:64], None, "mnist", "test digits")
    with recorder_class(step, run_dir, dataset, start=0, total=4, progress=False) as recorder:
        for iteration in range(1, 5):
            recorder.after_step(iteration, step(real))
        recorder.end(4, interrupted=False)
        recorder.finish(4)
    return recorder


def test_recorder_writes_a_kind_on_every_line(tmp_path, mnist_5k, real, monkeypatch):
    (tmp_path / "samples").mkdir()
    recorder = _record_four_iterations(Recorder, tmp_path, mnist_5k, real, monkeypatch)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["iteration"]) for r in lines] == [(TRAIN, 2), (EVAL, 3), (TRAIN, 4), (EVAL, 4)]
    assert all(math.isfinite(r["d_loss"]) for r in lines if r["kind"] == TRAIN)
    assert [r["iteration"] for r in recorder.history] == [2, 4] and len(recorder.evaluations) == 2
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == \
        ["iter_00000000.png", "iter_00000002.png", "iter_00000004.png", "progress.gif"]
    assert (tmp_path / "losses.png").stat().st_size > 0


def test_null_recorder_writes_nothing_but_still_checks_the_losses(tmp_path, mnist_5k, real, monkeypatch):
    recorder = _record_four_iterations(NullRecorder, tmp_path, mnist_5k, real, monkeypatch)
    assert list(tmp_path.iterdir()) == [] and recorder.history == [] and recorder.evaluations == []
    recorder.after_step(5, torch.tensor([float("nan"), 1.0, 0.5, 0.5]))
    with pytest.raises(MnistGanError, match="non-finite loss at iteration 5"):
        recorder.check_losses(5)
