"""What mnist-gan writes, under hostile conditions: `--overwrite` never replaces a device or FIFO, a full disk
while a checkpoint is written is one line and keeps the previous checkpoint, `--resume` records what it uses in
config.json (and refuses a hand edit it cannot apply), `train --overwrite` removes the plots `diagnose` wrote into
a run, and SIGTERM while a run draws its final plots is a stop like any other.

Every run here is a real `mnist-gan train` of dcgan at width 8 on 64 real digits (4 batches of 16 an epoch).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TINY_DCGAN, cli_env, copy_run, invoke_cli, one_error_line, time_limit

from mnist_gan.errors import MnistGanError
from mnist_gan.io.files import atomic_write_bytes
from mnist_gan.run import checkpoint as checkpoint_module
from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.run.directory import RunDir


def train_argv(data: Path, out: Path, *extra) -> list:
    return ["train", "--data", data, "--out", out, *TINY_DCGAN, "--iterations", 2, "--checkpoint-every", 2, *extra]


@pytest.fixture(scope="module")
def template(tmp_path_factory, digits64) -> Path:
    """A real run of 2 iterations with one checkpoint (iteration 2), copied by each test."""
    run = tmp_path_factory.mktemp("writers") / "run"
    status, _, err = invoke_cli(train_argv(digits64, run))
    assert status == 0, err
    return run


@pytest.fixture
def run(template, tmp_path) -> Path:
    return copy_run(template, tmp_path / "run")


def is_fifo(path: Path) -> bool:
    return stat.S_ISFIFO(os.lstat(path).st_mode)


# ------------------------------------------------------------------------ --overwrite: regular files only

def _commands(run: Path, out: Path) -> dict[str, list]:
    return {"generate png": ["generate", run, "-n", 4, "--out", out, "--overwrite"],
            "generate npz": ["generate", run, "-n", 4, "--format", "npz", "--out", out, "--overwrite"],
            "export": ["export", run, "--out", out, "--overwrite"],
            "interpolate": ["interpolate", run, "--out", out.with_suffix(".png"), "--overwrite"]}


@pytest.mark.parametrize("command", ["generate png", "generate npz", "export", "interpolate"])
def test_overwrite_never_replaces_a_fifo(run, tmp_path, command):
    out = tmp_path / "out.png"
    os.mkfifo(out)
    with time_limit(60):
        status, stdout, err = invoke_cli(_commands(run, out)[command])
    assert status == 2, err
    assert "out.png: a named pipe, not a regular file; --overwrite replaces regular files only" in one_error_line(err)
    assert is_fifo(out) and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png", "run"]  # no temporary left beside it


def test_overwrite_never_replaces_a_device_node(run, tmp_path):
    """As root, `--out /dev/null --overwrite` destroyed /dev/null; here a private copy of the node stands in."""
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    null = tmp_path / "null.png"  # interpolate wants .png
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except OSError as error:
        pytest.skip(f"cannot make a device node here ({error.strerror})")
    for argv in _commands(run, null).values():
        status, _, err = invoke_cli(argv)
        assert status == 2 and "character device, not a regular file" in one_error_line(err), err
        assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)


def test_the_writer_itself_refuses_special_files_and_still_replaces_files_and_links(tmp_path):
    """The check the early ones repeat is atomic_path's, at the moment it renames (a FIFO made meanwhile)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(MnistGanError, match="a named pipe, not a regular file"):
        atomic_write_bytes(fifo, b"data")
    with pytest.raises(MnistGanError, match="a directory, not a regular file"):
        atomic_write_bytes(tmp_path, b"data")
    assert is_fifo(fifo) and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
    (tmp_path / "file").write_bytes(b"old")
    atomic_write_bytes(tmp_path / "file", b"new")
    (tmp_path / "link").symlink_to("fifo")  # a link is replaced itself: its target is never opened or written
    atomic_write_bytes(tmp_path / "link", b"new")
    assert (tmp_path / "file").read_bytes() == (tmp_path / "link").read_bytes() == b"new" and is_fifo(fifo)


# ------------------------------------------------------------------------ a full disk during a checkpoint

class _FullDisk:
    """A file on a disk that fills up after `room` bytes: its writes then fail with ENOSPC, as the kernel's do."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if self.handle.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def _fill_disk_at(monkeypatch, name: str, room: int) -> None:
    """Make save_checkpoint's writes to the checkpoint called `name` hit a full disk after `room` bytes."""
    real_open = open

    def opener(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        return _FullDisk(handle, room) if Path(path).name.startswith(f".{name}.") else handle

    monkeypatch.setattr(checkpoint_module, "open", opener, raising=False)


def _torch_save_fails(monkeypatch, iteration: int) -> None:
    """torch.save itself raising the RuntimeError its C++ writer raises when the disk fills (the path case)."""
    real_save = checkpoint_module.torch.save

    def save(state, handle, *args, **kwargs):
        if state["iteration"] == iteration:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(state, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)


@pytest.mark.parametrize("failure", ["ENOSPC at once", "ENOSPC midway", "ENOSPC near the end", "torch's error"])
def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(
        tmp_path, digits64, monkeypatch, failure):
    out = tmp_path / "run"
    if failure == "torch's error":
        _torch_save_fails(monkeypatch, 4)
    else:
        _fill_disk_at(monkeypatch, "iter_00000004.ckpt", {"ENOSPC at once": 0, "ENOSPC midway": 4096,
                                                           "ENOSPC near the end": 150_000}[failure])
    status, _, err = invoke_cli(train_argv(digits64, out, "--iterations", 5))
    assert status == 2, err
    line = one_error_line(err)
    reason = "PytorchStreamWriter failed writing file data/0: file write failed" if failure == "torch's error" \
        else "No space left on device"
    assert f"iter_00000004.ckpt: cannot write ({reason})" in line and "untouched" in line, line
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_00000002.ckpt"]  # no temporary
    assert os.readlink(out / "last.ckpt") == os.path.join("checkpoints", "iter_00000002.ckpt")
    assert load_checkpoint(out / "last.ckpt")["iteration"] == 2
    monkeypatch.undo()  # the disk has room again: the run continues from its last good checkpoint
    status, _, err = invoke_cli(["train", "--resume", out, "--no-progress"])
    assert status == 0, err
    assert load_checkpoint(out / "last.ckpt")["iteration"] == 5


# ------------------------------------------------------------------------ --resume and config.json

def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_resume_records_the_length_it_trains_to(run):
    from mnist_gan.diagnosis.report import build_report

    status, _, err = invoke_cli(["train", "--resume", run, "--no-progress", "--iterations", 5])
    assert status == 0, err
    assert _config(run)["train"]["iterations"] == 5
    assert _config(run) == load_checkpoint(run / "last.ckpt")["config"]
    report = build_report(run)
    assert (report.status, report.iteration, report.planned_iterations) == ("finished", 5, 5)
    status, _, err = invoke_cli(["train", "--resume", run, "--no-progress", "--epochs", 2])  # 2 x 4 batches
    assert status == 0, err
    assert (_config(run)["train"]["iterations"], _config(run)["train"]["epochs"]) == (None, 2)
    assert load_checkpoint(run / "last.ckpt")["iteration"] == 8


@pytest.mark.parametrize("field, value", [("model.width", 16), ("train.lr", 0.5), ("data.limit", 32),
                                          ("preset", "seed")])
def test_resume_refuses_a_hand_edit_it_cannot_apply_and_names_the_field(run, field, value):
    config = _config(run)
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    edited = json.dumps(config)
    (run / "config.json").write_text(edited)
    checkpoint = (run / "checkpoints" / "iter_00000002.ckpt").read_bytes()
    status, _, err = invoke_cli(["train", "--resume", run, "--no-progress", "--iterations", 4])
    assert status == 2, err
    line = one_error_line(err)
    assert f"config.json: {field} is " in line and "cannot apply an edit" in line and "--config" in line, line
    assert (run / "config.json").read_text() == edited  # nothing changed: not the file, not the checkpoint
    assert (run / "checkpoints" / "iter_00000002.ckpt").read_bytes() == checkpoint
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_00000002.ckpt"]


def test_resume_says_an_edited_length_is_ignored_and_rewrites_it(run):
    config = _config(run)
    config["train"]["iterations"] = 3
    (run / "config.json").write_text(json.dumps(config))
    status, _, err = invoke_cli(["train", "--resume", run, "--no-progress"])
    assert status == 0, err
    assert "the edited train.iterations is ignored" in err and "--iterations" in err
    assert _config(run)["train"]["iterations"] == 2  # what the run used, as its checkpoint says
    assert load_checkpoint(run / "last.ckpt")["iteration"] == 2


@pytest.mark.parametrize("kind", ["damaged", "fifo"])
def test_resume_refuses_an_unreadable_config_without_hanging(run, kind):
    (run / "config.json").unlink()
    if kind == "fifo":
        os.mkfifo(run / "config.json")
    else:
        (run / "config.json").write_text('{"train": {"lr": ')
    with time_limit(60):
        status, _, err = invoke_cli(["train", "--resume", run, "--no-progress", "--iterations", 3])
    assert status == 2, err
    assert "config.json" in one_error_line(err) and "delete the file" in one_error_line(err)
    (run / "config.json").unlink()  # as the message says: the settings are written there again
    status, _, err = invoke_cli(["train", "--resume", run, "--no-progress", "--iterations", 3])
    assert status == 0, err
    assert _config(run) == load_checkpoint(run / "last.ckpt")["config"] and _config(run)["train"]["iterations"] == 3


# ------------------------------------------------------------------------ diagnose's plots are run files

def test_overwrite_removes_the_plots_diagnose_wrote_into_the_run(run, digits64):
    status, _, err = invoke_cli(["diagnose", run])
    assert status in (0, 1), err
    plots = sorted(p.name for p in RunDir(run).diagnosis.iterdir())
    assert RunDir(run).diagnosis == run / "diagnosis" and "losses.png" in plots, plots
    assert RunDir(run)._foreign_entry() is None
    status, _, err = invoke_cli(train_argv(digits64, run, "--overwrite"))
    assert status == 0, err
    assert not (run / "diagnosis").exists()


def test_overwrite_still_refuses_a_users_file_in_the_diagnosis_folder(run, digits64):
    invoke_cli(["diagnose", run])
    (run / "diagnosis" / "notes.txt").write_text("mine")
    status, _, err = invoke_cli(train_argv(digits64, run, "--overwrite"))
    assert status == 2 and "diagnosis/notes.txt: not a file a run writes" in one_error_line(err), err
    assert (run / "diagnosis" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------ SIGTERM while finishing

SIGTERM_IN_FINAL_PLOTS = """
import os, signal, sys
import mnist_gan.training.recorder as recorder
from mnist_gan.cli.parser import main

plot_losses = recorder.plot_losses

def plot_after_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, while the run draws losses.png
    return plot_losses(*args, **kwargs)

recorder.plot_losses = plot_after_sigterm
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_the_final_plots_is_a_stop(tmp_path, digits64):
    out = tmp_path / "run"
    argv = [str(arg) for arg in train_argv(digits64, out)]
    done = subprocess.run([sys.executable, "-c", SIGTERM_IN_FINAL_PLOTS, *argv], env=cli_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    stopped = [line for line in done.stderr.splitlines() if "stopped by SIGTERM" in line]
    assert len(stopped) == 1 and "at iteration 2" in stopped[0] and "--resume" in stopped[0], done.stderr
    assert (out / "losses.png").is_file() and load_checkpoint(out / "last.ckpt")["iteration"] == 2
