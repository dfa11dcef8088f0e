"""Nothing lost: `train --overwrite` removes only what a run wrote and swaps runs atomically; it refuses dangerous
places and anything a run does not write, a failure at any step leaves the old run whole, and a resume removes only
the run's own temporaries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import copy_run, invoke_cli, last_line_error, tree_snapshot

from mnist_gan.errors import MnistGanError
from mnist_gan.io import dirswap
from mnist_gan.run import directory as rundir
from mnist_gan.run.directory import RunDir

TINY = ["--preset", "seed", "--batch-size", 16, "--iterations", 2, "--log-every", 1, "--sample-every", 0,
        "--checkpoint-every", 1, "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def template(tmp_path_factory, small_npz) -> Path:
    """One real tiny run (checkpoints 1 and 2, last.ckpt, export, grids, GIF, plot), copied by each test."""
    run = tmp_path_factory.mktemp("template") / "run"
    status, _, stderr = invoke_cli(["train", "--data", small_npz, "--out", run, *TINY])
    assert status == 0, stderr
    return run


@pytest.fixture
def run(template, tmp_path) -> Path:
    return copy_run(template, tmp_path / "run")


def train_over(cli, out, data, *extra):
    return cli(["train", "--data", data, "--out", out, "--overwrite", *TINY, *extra])


def hidden_siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}."))


def test_the_template_holds_every_kind_of_run_file(template):
    names = set(tree_snapshot(template))
    assert {"config.json", "metrics.jsonl", "losses.png", "generator.safetensors", "last.ckpt",
            "checkpoints/iter_00000001.ckpt", "checkpoints/iter_00000002.ckpt", "samples/progress.gif",
            "samples/iter_00000000.png", "samples/iter_00000002.png"} <= names
    assert RunDir(template)._foreign_entry() is None


@pytest.mark.parametrize("planted", [
    "notes.txt", "thesis/chapter1.tex", ".git/HEAD", "samples/my_digit.png", "checkpoints/best.pt",
    "checkpoints/iter_5.ckpt", "checkpoints/.iter_00000001.ckpt.tmp", "samples/progress.gif/inside.txt",
    "config.json.bak", ".notes.tmp",
])
def test_overwrite_refuses_a_run_holding_anything_else_and_deletes_nothing(cli, run, small_npz, planted):
    target = run / planted
    if target.parent.is_file():  # a run's own name used by something else: a folder called progress.gif
        target.parent.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("precious")
    before = tree_snapshot(run.parent)
    offending = planted.split("/")[0] if planted.split("/")[0] not in ("samples", "checkpoints") else \
        "/".join(planted.split("/")[:2])
    last_line_error(train_over(cli, run, small_npz), str(run / offending), "only replaces run directories")
    assert tree_snapshot(run.parent) == before


@pytest.mark.parametrize("what", ["symlinked folder", "folder named like a file", "fifo"])
def test_overwrite_refuses_odd_entries_with_run_names(cli, run, small_npz, tmp_path, what):
    elsewhere = tmp_path / "pictures"
    elsewhere.mkdir()
    (elsewhere / "holiday.png").write_text("precious")
    if what == "symlinked folder":
        shutil.rmtree(run / "samples")
        (run / "samples").symlink_to(elsewhere)
        offending = run / "samples"
    elif what == "folder named like a file":
        (run / "losses.png").unlink()
        (run / "losses.png").mkdir()
        offending = run / "losses.png"
    else:
        (run / "metrics.jsonl").unlink()
        os.mkfifo(run / "metrics.jsonl")
        offending = run / "metrics.jsonl"
    before = tree_snapshot(elsewhere), sorted(p.name for p in run.rglob("*"))
    last_line_error(train_over(cli, run, small_npz), str(offending))
    assert (tree_snapshot(elsewhere), sorted(p.name for p in run.rglob("*"))) == before


def test_the_issue_scenario_refuses_the_current_directory(cli, tmp_path, shared_mnist_dir, monkeypatch):
    """mkdir p; cd p; mkdir checkpoints notes; ... train --out . --overwrite --data ./mnist: once emptied p/."""
    p = tmp_path / "p"
    (p / "checkpoints").mkdir(parents=True)
    (p / "notes").mkdir()
    (p / "notes" / "thesis.txt").write_text("important\n")
    shutil.copytree(shared_mnist_dir, p / "mnist")
    before = tree_snapshot(p)
    monkeypatch.chdir(p)
    last_line_error(cli(["train", "--out", ".", "--overwrite", "--data", "./mnist", "--iterations", 5,
                        "--batch-size", 16, "--no-progress"]), "is the current directory")
    assert tree_snapshot(p) == before


@pytest.mark.parametrize("where", ["cwd", "parent of cwd", "holds the data", "holds the cache", "home",
                                   "parent of home", "symlink", "root"])
def test_overwrite_refuses_dangerous_locations(cli, run, small_npz, monkeypatch, tmp_path, where):
    """Each place is refused for what it is, before the check of its contents (which would refuse most too)."""
    out, data, extra, phrase = run, small_npz, [], None
    if where == "cwd":
        monkeypatch.chdir(run)
        out, phrase = Path("."), "is the current directory"
    elif where == "parent of cwd":
        monkeypatch.chdir(run / "samples")
        out, phrase = Path(".."), "contains the current directory"
    elif where == "holds the data":
        data = run / "checkpoints" / "digits.npz"  # where a run's own name cannot hide it
        shutil.copy(small_npz, data)
        phrase = "contains the data set --data"
    elif where == "holds the cache":
        extra, phrase = ["--cache-dir", run / "samples"], "contains the data cache"
    elif where == "home":
        monkeypatch.setenv("HOME", str(run))
        phrase = "is your home directory"
    elif where == "parent of home":
        monkeypatch.setenv("HOME", str(run / "checkpoints"))
        phrase = "contains your home directory"
    elif where == "symlink":
        out = tmp_path / "link"
        out.symlink_to(run)
        phrase = "is a symbolic link"
    else:
        out, phrase = Path("/"), "is the root directory"
    before = tree_snapshot(run)
    last_line_error(train_over(cli, out, data, *extra), phrase)
    assert tree_snapshot(run) == before


def test_overwrite_replaces_a_real_run_and_its_leftover_temporaries(cli, run, small_npz):
    (run / ".config.json.k2j4h6g8.tmp").write_text("{")  # as a writer killed mid-write leaves them
    (run / ".last.ckpt.tmp").symlink_to("checkpoints/iter_00000001.ckpt")
    (run / "checkpoints" / ".iter_00000003.ckpt.a1b2c3d4.tmp").write_bytes(b"half")
    (run / "checkpoints" / "iter_00000009.ckpt").write_bytes(b"old")
    old_inode = run.stat().st_ino
    status, _, stderr = train_over(cli, run, small_npz, "--iterations", 1)
    assert status == 0, stderr
    names = set(tree_snapshot(run))
    assert "checkpoints/iter_00000001.ckpt" in names and "checkpoints/iter_00000002.ckpt" not in names
    assert not {n for n in names if n.endswith(".tmp") or "iter_00000009" in n}
    assert os.readlink(run / "last.ckpt") == "checkpoints/iter_00000001.ckpt"
    assert '"iterations": 1' in (run / "config.json").read_text()
    assert run.stat().st_ino != old_inode, "a new directory took the name"
    assert hidden_siblings(run) == [], "nothing left beside it"


def _failing_rename(monkeypatch, fails):
    real = os.rename

    def rename(source, target, *args, **kwargs):
        if fails(Path(source), Path(target)):
            raise PermissionError(13, "Permission denied", str(source))
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(dirswap.os, "rename", rename)


@pytest.mark.parametrize("step", ["move aside", "stage a checkpoint", "stage the export", "swap in the new run",
                                  "write the new config.json", "interrupt while staging"])
def test_a_failure_part_way_leaves_the_old_run_whole(cli, run, small_npz, monkeypatch, step):
    before = tree_snapshot(run)
    named = str(run)
    if step == "move aside":
        _failing_rename(monkeypatch, lambda source, target: target.name.endswith(".replaced"))
    elif step == "stage a checkpoint":
        _failing_rename(monkeypatch, lambda source, target: source.name == "iter_00000002.ckpt")
        named = str(run / "checkpoints" / "iter_00000002.ckpt")
    elif step == "stage the export":
        _failing_rename(monkeypatch, lambda source, target: source.name == "generator.safetensors")
        named = str(run / "generator.safetensors")
    elif step == "swap in the new run":
        _failing_rename(monkeypatch, lambda source, target: source.name.endswith(".new"))
    elif step == "write the new config.json":
        def full_disk(path, text):
            raise MnistGanError(f"{path}: cannot write (No space left on device)")
        monkeypatch.setattr(rundir, "atomic_write_text", full_disk)
        named = "No space left on device"
    else:
        def interrupt(source, target):
            if Path(source).name == "metrics.jsonl":
                raise KeyboardInterrupt
            return real_rename(source, target)
        real_rename = os.rename
        monkeypatch.setattr(dirswap.os, "rename", interrupt)
    if step == "interrupt while staging":
        assert train_over(cli, run, small_npz)[0] == 130
    else:
        last_line_error(train_over(cli, run, small_npz), named)
    assert tree_snapshot(run) == before
    assert hidden_siblings(run) == []


def test_overwrite_of_a_locked_run_is_refused(cli, run, small_npz):
    from mnist_gan.io.files import exclusive_lock

    before = tree_snapshot(run)
    with exclusive_lock(run):
        last_line_error(train_over(cli, run, small_npz), "another mnist-gan process is using")
    assert tree_snapshot(run) == before and hidden_siblings(run) == []


def test_resume_removes_only_the_runs_own_temporaries(run):
    ours = [run / ".metrics.jsonl.abcd1234.tmp", run / "samples" / ".iter_00000002.png.zz9_0x1y.tmp"]
    theirs = [run / ".notes.tmp", run / "samples" / ".holiday.png.tmp"]
    for path in ours + theirs:
        path.write_text("x")
    with RunDir(run).reopened() as reopened:
        assert reopened.path == run
    assert [p.exists() for p in ours + theirs] == [False, False, True, True]
