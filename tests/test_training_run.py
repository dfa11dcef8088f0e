"""Real training runs through the CLI entry point: the run directory, the printed summary, seeded
reproducibility, and the error paths (exit 2, one line, existing files untouched)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tree_snapshot
from PIL import Image

from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.run.generator_file import load_exported_generator
from mnist_gan.settings.config import RunConfig

GRID_PIXELS = 8 * (28 + 2) + 2  # an 8x8 grid with 2-pixel padding
TINY = ["--preset", "seed", "--batch-size", 8, "--limit", 64, "--log-every", 1, "--sample-every", 0,
        "--checkpoint-every", 0, "--no-progress"]


# ----------------------------------------------------------------------------------------------- one real run

def test_run_directory_layout(trained_run):
    run = trained_run.dir
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    expected = {"config.json", "metrics.jsonl", "losses.png", "generator.safetensors", "last.ckpt",
                "checkpoints", "checkpoints/iter_00000010.ckpt", "checkpoints/iter_00000020.ckpt",
                "samples", "samples/progress.gif", *(f"samples/iter_{i:08d}.png" for i in (0, 5, 10, 15, 20))}
    assert names == expected, "no stray temporary files either"


def test_config_json_records_the_flags(trained_run, small_npz):
    config = RunConfig.from_dict(json.loads((trained_run.dir / "config.json").read_text()))
    assert config.preset == "seed"
    assert (config.train.batch_size, config.train.iterations, config.train.seed) == (16, 20, 7)
    assert (config.data.data, config.data.limit) == (str(small_npz), 160)
    assert (config.train.optimizer, config.train.lr, config.train.momentum, config.train.nesterov) == \
        ("sgd", 0.001, 0.9, True), "the tutorial's optimizer is the seed preset's"


def test_metrics_jsonl(trained_run):
    records = [json.loads(line) for line in (trained_run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    assert [r["epoch"] for r in records] == [1, 1, 2, 2]  # 160 images / batch 16 = 10 iterations per epoch
    for record in records:
        assert all(math.isfinite(record[key]) for key in ("d_loss", "g_loss", "d_x", "d_g_z"))
        assert 0 < record["d_x"] < 1 and 0 < record["d_g_z"] < 1
        assert record["d_loss"] > 0 and record["g_loss"] > 0 and record["images_per_s"] > 0
    assert len({r["d_loss"] for r in records}) == 4, "losses move as D and G train"


def test_sample_grids_and_gif(trained_run):
    samples = trained_run.dir / "samples"
    grids = []
    for path in sorted(samples.glob("iter_*.png")):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (GRID_PIXELS, GRID_PIXELS)
            grids.append(np.asarray(image))
    assert len(grids) == 5
    assert grids[0].std() > 0, "64 different samples, not one flat image"
    assert not np.array_equal(grids[0], grids[-1]), "G changed during training"
    with Image.open(samples / "progress.gif") as gif:
        assert gif.format == "GIF" and gif.is_animated and gif.n_frames == 5
        assert gif.size == (GRID_PIXELS, GRID_PIXELS)


def test_losses_plot(trained_run):
    with Image.open(trained_run.dir / "losses.png") as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200


def test_checkpoints_and_generator_export(trained_run):
    run = trained_run.dir
    assert (run / "last.ckpt").resolve() == (run / "checkpoints" / "iter_00000020.ckpt").resolve()
    state = load_checkpoint(run / "last.ckpt")
    assert state["iteration"] == 20 and state["epoch"] == 2
    assert RunConfig.from_dict(state["config"]).train.seed == 7
    assert {"noise", "torch"} <= set(state["rng"])
    assert state["optimizer_g"]["state"] and state["optimizer_d"]["state"], "momentum buffers are saved"
    middle = load_checkpoint(run / "checkpoints" / "iter_00000010.ckpt")
    assert middle["iteration"] == 10
    assert not torch.equal(middle["G"]["project.0.weight"], state["G"]["project.0.weight"])
    model_config, G = load_exported_generator(run / "generator.safetensors")
    assert model_config == RunConfig.from_dict(state["config"]).model
    for name, tensor in G.state_dict().items():
        assert torch.equal(tensor, state["G"][name]), name


def test_printed_summary(trained_run):
    run = trained_run.dir
    assert trained_run.stdout.splitlines() == [
        f"run directory: {run}",
        f"checkpoint: {run / 'checkpoints' / 'iter_00000020.ckpt'}",
        f"samples: {run / 'samples'}",
    ]
    err = trained_run.stderr
    assert "data: 160 images from" in err
    assert re.search(r"epoch 1: d_loss \d+\.\d+ +g_loss \d+\.\d+ +D\(x\) [\d.]+ +D\(G\(z\)\) [\d.]+", err)
    assert "epoch 2: d_loss" in err
    assert "20/20" in err and "D(G(z))" in err, "the progress bar ran to the end"
    assert "done: 20 iterations" in err
    assert "Traceback" not in err


# -------------------------------------------------------------------------------------------- reproducibility

def _tiny_run(cli, out, data, *flags):
    status, stdout, stderr = cli(["train", "--data", data, "--out", out, "--iterations", 3, *TINY, *flags])
    assert status == 0, stderr
    losses = [[r[k] for k in ("d_loss", "g_loss", "d_x", "d_g_z")]
              for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    state = load_checkpoint(out / "last.ckpt")
    return losses, state


def test_same_seed_same_numbers_other_seed_other_numbers(cli, tmp_path, small_npz):
    losses_a, state_a = _tiny_run(cli, tmp_path / "a", small_npz, "--seed", 3)
    losses_b, state_b = _tiny_run(cli, tmp_path / "b", small_npz, "--seed", 3)
    losses_c, state_c = _tiny_run(cli, tmp_path / "c", small_npz, "--seed", 4)
    assert len(losses_a) == 3
    assert losses_a == losses_b
    for net in ("G", "D"):
        for name in state_a[net]:
            assert torch.equal(state_a[net][name], state_b[net][name]), f"{net}.{name}"
    assert losses_c != losses_a
    assert not torch.equal(state_c["G"]["project.0.weight"], state_a["G"]["project.0.weight"])
    assert not torch.equal(state_c["D"]["classify.3.weight"], state_a["D"]["classify.3.weight"])


def test_default_run_directory_and_epochs(cli, tmp_path, small_npz, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, stdout, stderr = cli(["train", "--data", small_npz, "--batch-size", 8, "--limit", 16, "--epochs", 1,
                                  "--no-progress", "--sample-every", 0, "--checkpoint-every", 0,
                                  "--self-condition", 4])  # the default preset's 100 clusters need 100 images
    assert status == 0, stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"recommended-\d{8}-\d{6}", run.name), "the default preset names the run"
    assert stdout.splitlines()[0] == f"run directory: {Path('runs') / run.name}"
    assert load_checkpoint(run / "last.ckpt")["iteration"] == 2  # 16 images / batch 8 = one epoch
    assert "epoch 1: d_loss" in stderr


# ------------------------------------------------------------------------------------------------ error paths

@pytest.fixture
def existing_run(tmp_path):
    """A run directory someone cares about (only config.json marks it as a run)."""
    run = tmp_path / "precious"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"preset": "seed"}\n')
    (run / "metrics.jsonl").write_text('{"iteration": 10, "d_loss": 0.5}\n')
    (run / "checkpoints" / "iter_00000010.ckpt").write_bytes(b"weights")
    return run


def _assert_one_line_error(status, stdout, stderr, phrase):
    assert status == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "error" in lines[0] and phrase in lines[0]
    assert "Traceback" not in stderr


def test_refuses_an_existing_run_directory(cli, existing_run, small_npz):
    before = tree_snapshot(existing_run)
    result = cli(["train", "--data", small_npz, "--out", existing_run, *TINY, "--iterations", 1])
    _assert_one_line_error(*result, "run directory exists; use --resume")
    assert tree_snapshot(existing_run) == before


def test_overwrite_replaces_the_run(cli, existing_run, small_npz):
    status, _, stderr = cli(["train", "--data", small_npz, "--out", existing_run, "--overwrite", *TINY,
                             "--iterations", 1])
    assert status == 0, stderr
    assert "checkpoints/iter_00000010.ckpt" not in tree_snapshot(existing_run)
    assert RunConfig.from_dict(json.loads((existing_run / "config.json").read_text())).train.iterations == 1
    lines = (existing_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1]


def test_overwrite_refuses_a_directory_that_is_not_a_run(cli, tmp_path, small_npz):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    result = cli(["train", "--data", small_npz, "--out", folder, "--overwrite", *TINY, "--iterations", 1])
    _assert_one_line_error(*result, "--overwrite only replaces run directories")
    assert (folder / "chapter1.tex").read_text() == "precious"


@pytest.mark.parametrize("flags, phrase", [
    (["--batch-size", -4], "--batch-size must be positive"),
    (["--batch-size", "abc"], "invalid int value"),
    (["--preset", "nope"], "invalid choice: 'nope'"),
    (["--batch-size", 1000], "--batch-size 1000 is larger than the data set (512 images)"),
    (["--data", "/nonexistent/digits.npz"], "no such data set or path"),
    (["--lr", 0], "--lr must be positive"),
    (["--iterations", 0], "--iterations must be positive"),
    (["--loss", "wasserstein"], "unknown loss 'wasserstein'"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new-run", "overwrite"])
def test_bad_flags_exit_2_and_touch_nothing(cli, tmp_path, existing_run, small_npz, flags, phrase, overwrite):
    """A bad flag creates no run directory, and even with --overwrite leaves an existing run as it was."""
    out = existing_run if overwrite else tmp_path / "new-run"
    before = tree_snapshot(existing_run)
    argv = ["train", "--data", small_npz, "--out", out, "--iterations", 1, "--no-progress",
            *(["--overwrite"] if overwrite else []), *flags]
    _assert_one_line_error(*cli(argv), phrase)
    assert tree_snapshot(existing_run) == before
    assert overwrite or not out.exists()


def test_corrupt_data_file_exits_2_and_creates_nothing(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    out = tmp_path / "new-run"
    _assert_one_line_error(*cli(["train", "--data", bad, "--out", out, "--no-progress"]), str(bad))
    assert not out.exists()
