"""--tensorboard: the run's figures, warnings, grids and config as TensorBoard events, read back with
TensorBoard's own reader; a resumed run continues the same curves without duplicates."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import StubEvaluator, invoke_cli

from mnist_gan.evaluation import evaluator as evaluation
from mnist_gan.run.directory import RunDir

pytest.importorskip("tensorboard")

TINY = ["--preset", "dcgan", "--width", "8", "--limit", "160", "--batch-size", "16", "--log-every", "2",
        "--sample-every", "5", "--checkpoint-every", "10", "--no-progress", "--device", "cpu"]
TRAIN_TAGS = {"train/d_loss", "train/g_loss", "train/d_x", "train/d_g_z", "train/images_per_s",
              "train/grad_norm_g", "train/grad_norm_d"}
SPOILT = 999.0  # the value the simulated killed run wrote past its checkpoint


def events(run_dir: Path):
    """TensorBoard's own reader over RUN_DIR/tensorboard, keeping every event (size guidance 0)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    reader = ea.EventAccumulator(str(run_dir / "tensorboard"), size_guidance=dict.fromkeys(ea.DEFAULT_SIZE_GUIDANCE, 0))
    return reader.Reload()


def train_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if line["kind"] == "train"]


def grid_at(reader, step: int):
    from PIL import Image

    image = next(i for i in reader.Images("samples") if i.step == step)
    return Image.open(io.BytesIO(image.encoded_image_string)).convert("L")


@pytest.fixture(scope="module")
def board_run(tmp_path_factory, small_npz) -> Path:
    """20 iterations with --tensorboard and --eval-every 10 (stub evaluator): lines every 2, grids every 5; its
    stderr in RUN/../stderr.txt."""
    run = tmp_path_factory.mktemp("board") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "Evaluator", StubEvaluator)
        status, _, err = invoke_cli(["train", "--data", small_npz, "--out", run, *TINY, "--iterations", 20,
                                     "--eval-every", 10, "--tensorboard"])
    assert status == 0, err
    (run.parent / "stderr.txt").write_text(err)
    return run


def test_every_logged_figure_is_a_scalar_at_its_iteration(board_run):
    reader, lines = events(board_run), train_lines(board_run)
    tags = set(reader.Tags()["scalars"])
    assert TRAIN_TAGS <= tags and {"eval/fid", "eval/kid", "eval/precision", "eval/coverage", "eval/memorization"} <= tags
    assert not {"train/iteration", "train/epoch", "train/time", "eval/class_histogram"} & tags
    for name in ("d_loss", "g_loss", "d_x", "d_g_z", "grad_norm_g"):
        scalars = reader.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == list(range(2, 21, 2)) == [line["iteration"] for line in lines]
        assert [s.value for s in scalars] == pytest.approx([line[name] for line in lines], rel=1e-6)
    assert [(s.step, s.value) for s in reader.Scalars("eval/fid")] == [(10, 100.0), (20, 50.0)]


def test_each_sample_grid_is_an_image_and_warnings_are_text(board_run):
    from PIL import Image

    reader = events(board_run)
    images = reader.Images("samples")
    assert [image.step for image in images] == [0, 5, 10, 15, 20]
    for image in images:  # the very grid samples/ holds
        shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("L"))
        assert np.array_equal(shown, np.asarray(Image.open(board_run / "samples" / f"iter_{image.step:08d}.png")))
    printed = re.findall(r"warning at iteration (\d+): (.*)", (board_run.parent / "stderr.txt").read_text())
    texts = {w.step: w.tensor_proto.string_val[0].decode() for w in reader.Tensors("warnings/text_summary")}
    assert sorted(texts) == sorted({int(step) for step, _ in printed})  # one text event where warnings were raised
    assert all(message in texts[int(step)] for step, message in printed)
    assert "`memorisation`" in texts[20]  # two evaluations in a row below the ratio


def test_the_config_is_written_as_hparams(board_run):
    from tensorboard.plugins.hparams import metadata

    content = events(board_run).PluginTagToContent(metadata.PLUGIN_NAME)
    hparams = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG]).hparams
    config = json.loads((board_run / "config.json").read_text())
    assert hparams["preset"].string_value == "dcgan"
    assert hparams["train.batch_size"].number_value == 16 == config["train"]["batch_size"]
    assert hparams["model.width"].number_value == 8 and hparams["train.lr"].number_value == config["train"]["lr"]
    assert hparams["train.tensorboard"].bool_value is True and hparams["data.shuffle"].bool_value is True
    assert "train.lr_d" not in hparams  # unset (None): left out


def test_a_resumed_run_continues_the_curves_without_duplicates(small_npz, tmp_path, cli):
    from torch.utils.tensorboard import SummaryWriter

    from mnist_gan.training.tensorboard import _wait_to_sort_last

    run = tmp_path / "run"
    status, _, err = cli(["train", "--data", small_npz, "--out", run, *TINY, "--iterations", 10, "--tensorboard"])
    assert status == 0, err
    # A kill after the checkpoint at 10: the dead run had logged iterations 12 and 14 and drawn the grid at 15.
    _wait_to_sort_last(run / "tensorboard")  # its events come after those it wrote before, as in one file
    with SummaryWriter(str(run / "tensorboard")) as killed:
        for step in (12, 14):
            for tag in TRAIN_TAGS:
                killed.add_scalar(tag, SPOILT, step)
        killed.add_image("samples", np.zeros((28, 28), dtype=np.uint8), 15, dataformats="HW")
    status, _, err = cli(["train", "--resume", run, "--iterations", 20, "--no-progress"])  # no --tensorboard
    assert status == 0, err
    reader, lines = events(run), train_lines(run)
    for tag in TRAIN_TAGS:
        scalars = reader.Scalars(tag)
        assert [s.step for s in scalars] == list(range(2, 21, 2)), tag  # each step once, in order
        assert SPOILT not in [s.value for s in scalars], tag
    assert [s.value for s in reader.Scalars("train/d_loss")] == pytest.approx([r["d_loss"] for r in lines], rel=1e-6)
    assert [image.step for image in reader.Images("samples")] == [0, 5, 10, 15, 20]
    assert np.asarray(grid_at(reader, 15)).max() > 0  # the resumed run's grid, not the dead run's black one
    assert len(list((run / "tensorboard").iterdir())) == 3  # the run's file, the dead run's, the resume's
    assert RunDir(run)._foreign_entry() is None  # --overwrite may replace it


def test_overwrite_replaces_a_run_with_events(board_run, small_npz, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(board_run, run, symlinks=True)
    status, _, err = cli(["train", "--data", small_npz, "--out", run, "--overwrite", *TINY, "--iterations", 2])
    assert status == 0, err
    assert not (run / "tensorboard").exists() and (run / "samples").is_dir()  # only made with --tensorboard


def test_overwrite_refuses_a_file_of_someone_else_among_the_events(board_run, small_npz, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(board_run, run, symlinks=True)
    (run / "tensorboard" / "notes.txt").write_text("mine")
    status, _, err = cli(["train", "--data", small_npz, "--out", run, "--overwrite", *TINY, "--iterations", 2])
    assert status == 2 and "notes.txt: not a file a run writes" in err.strip().splitlines()[-1]
    assert (run / "tensorboard" / "notes.txt").read_text() == "mine" and (run / "metrics.jsonl").is_file()


MISSING = 'mnist-gan: error: --tensorboard needs the tensorboard package: pip install "mnist-gan[tensorboard]"'


def test_without_the_package_train_and_resume_stop_before_training(board_run, small_npz, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` now raises ImportError
    out = tmp_path / "new"
    status, _, err = cli(["train", "--data", small_npz, "--out", out, *TINY, "--iterations", 2, "--tensorboard"])
    assert status == 2 and err.strip().splitlines()[-1] == MISSING and "Traceback" not in err
    assert not out.exists()
    run = tmp_path / "run"  # the run's own config asks for TensorBoard: so does its resume
    shutil.copytree(board_run, run, symlinks=True)
    before = (run / "metrics.jsonl").read_bytes()
    status, _, err = cli(["train", "--resume", run, "--iterations", 30, "--no-progress"])
    assert status == 2 and err.strip().splitlines()[-1] == MISSING
    assert (run / "metrics.jsonl").read_bytes() == before and len(list((run / "tensorboard").iterdir())) == 1
