import json

import pytest
import torch

import mnist_gan.training.recorder as recorder_module
from mnist_gan.cli.parser import main
from mnist_gan.data.images import to_float
from mnist_gan.diagnosis.detectors import record_problems, sample_problems
from mnist_gan.diagnosis.signs import d_wins
from mnist_gan.gan.losses import LOSSES
from mnist_gan.training.recorder import Monitor


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
    assert "samples are flat" in capsys.readouterr().err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("flat-samples" in r.get("warnings", []) for r in records)


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


def test_each_loss_scores_its_own_targets_as_real_and_fake():
    targets = {"non-saturating": (20.0, -20.0), "minimax": (20.0, -20.0), "lsgan": (1.0, 0.0), "hinge": (1.0, -1.0)}
    for name, (real, fake) in targets.items():
        score = LOSSES[name].score(torch.tensor([real, fake, real + 5, fake - 5]))
        assert score.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0], abs=1e-6), name
    assert not LOSSES["wgan-gp"].absolute_score


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
