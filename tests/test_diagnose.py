import json

import torch

from mnist_gan.cli import main
from mnist_gan.data import to_float
from mnist_gan.diagnose import Monitor, loss_problems, sample_problems


def test_real_digits_raise_no_problem(mnist_5k):
    assert sample_problems(to_float(mnist_5k.images[:64])) == []


def test_flat_gray_and_repeated_digit_are_told_apart(mnist_5k):
    gray = torch.zeros(64, 1, 28, 28)
    assert [p.code for p in sample_problems(gray)] == ["flat-samples"]
    one_digit = to_float(mnist_5k.images[:1]).repeat(64, 1, 1, 1) + 0.01 * torch.randn(64, 1, 28, 28)
    assert [p.code for p in sample_problems(one_digit)] == ["mode-collapse"]


def test_d_wins_needs_several_windows_and_is_reported_once():
    winning = {"d_loss": 0.0005, "g_loss": 7.6, "d_x": 0.9995, "d_g_z": 0.0004}
    healthy = {"d_loss": 0.6, "g_loss": 0.9, "d_x": 0.6, "d_g_z": 0.4}
    assert loss_problems([healthy, winning, winning]) == []
    assert [p.code for p in loss_problems([winning] * 3)] == ["d-wins"]
    monitor = Monitor()
    assert len(monitor.update("losses", loss_problems([winning] * 3))) == 1
    assert monitor.update("losses", loss_problems([winning] * 4)) == []  # still active: not repeated
    assert monitor.update("losses", loss_problems([winning] * 3 + [healthy])) == []  # cleared
    assert len(monitor.update("losses", loss_problems([winning] * 3))) == 1  # raised again


def test_relu_generator_is_diagnosed_as_flat(small_npz, tmp_path, capsys):
    out = tmp_path / "relu"
    assert main(["train", "--preset", "seed-relu", "--data", str(small_npz), "--iterations", "10",
                 "--log-every", "5", "--sample-every", "5", "--checkpoint-every", "0", "--no-progress",
                 "--out", str(out)]) == 0
    assert "samples are flat" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("flat-samples" in r.get("warnings", []) for r in records)
