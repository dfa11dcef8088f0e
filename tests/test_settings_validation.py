"""Settings that cannot work, alone or together, are refused before anything is built, in one line naming the
flags: impossible combinations of loss, model and labels, packs, the mode-seeking term, self-conditioning and
--eval-every. (The bounds of sizes and numbers: test_user_errors.py.)"""

from __future__ import annotations

import pytest
from helpers import tiny_config

from mnist_gan.cli.parser import main
from mnist_gan.errors import MnistGanError
from mnist_gan.settings.validation import validate


@pytest.mark.parametrize("flags, message", [
    (["--loss", "wgan-gp"], "BatchNorm"),
    (["--loss", "hinge", "--label-smoothing", "0.1"], "label-smoothing"),
    (["--preset", "seed", "--conditional"], "conditional"),
    (["--loss", "nonsense"], "unknown loss"),
    (["--ema-decay", "1.5"], "ema-decay"),
])
def test_impossible_combinations_fail_with_one_clear_line(tmp_path, capsys, small_npz, flags, message):
    args = ["train", "--preset", "dcgan", "--data", str(small_npz), "--out", str(tmp_path / "run"),
            "--iterations", "1", "--no-progress"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("pack, batch, message", [
    (0, 8, "--pack must be in 1..8"), (9, 9, "--pack must be in 1..8"),
    (3, 8, "--batch-size 8 must be a multiple of --pack 3"),
])
def test_an_impossible_pack_is_one_line(pack, batch, message):
    config = tiny_config(model={"pack": pack, "self_condition": 0})  # the packs alone, on the unconditioned networks
    config.train.batch_size = batch
    with pytest.raises(MnistGanError, match=message):
        validate(config, training=True)


def test_pack_flag_reaches_the_config(tmp_path, small_npz, cli):
    status, _, err = cli(["train", "--preset", "recommended", "--pack", "9", "--data", small_npz, "--out",
                          tmp_path / "run", "--no-progress"])
    assert status == 2 and err.count("\n") == 1 and "--pack must be in 1..8" in err


@pytest.mark.parametrize("diversity, pack, batch, message", [
    (-1.0, 1, 8, "--diversity must be zero or positive"),
    (1.0, 4, 12, "--batch-size 12 must be a multiple of twice --pack 4"),
])
def test_an_impossible_diversity_is_one_line(diversity, pack, batch, message):
    config = tiny_config(model={"pack": pack, "self_condition": 0}, diversity=diversity)
    config.train.batch_size = batch
    with pytest.raises(MnistGanError, match=message):
        validate(config, training=True)


@pytest.mark.parametrize("change, message", [
    ({"self_condition": 1}, "--self-condition must be 0 .off. or 2..1,000"),
    ({"self_condition": 3, "conditional": True}, "exclude each other"),
    ({"self_condition": 3, "architecture": "seed"}, "needs --architecture dcgan"),
    ({"self_condition": 0}, "--recluster-every needs --self-condition"),
])
def test_impossible_self_conditioning_is_one_line(change, message):
    config = tiny_config(model={"self_condition": 3}, iterations=1, recluster_every=3, sample_every=0, log_every=1)
    for key, value in change.items():
        setattr(config.model, key, value)
    with pytest.raises(MnistGanError, match=message):
        validate(config)


def test_eval_every_must_not_be_negative(small_npz, tmp_path, capsys):
    assert main(["train", "--data", str(small_npz), "--eval-every", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--eval-every" in capsys.readouterr().err
