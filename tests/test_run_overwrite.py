"""Nothing lost: `train --overwrite` removes only what a run wrote and swaps runs atomically; `generate` and
`interpolate` never replace an output by accident, never leave a partial one, and refuse absurd sizes up front."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_gan.data.images import to_uint8
from mnist_gan.errors import MnistGanError
from mnist_gan.io import dirswap
from mnist_gan.io.files import atomic_write_bytes
from mnist_gan.run import directory as rundir
from mnist_gan.run.directory import RunDir

TINY = ["--preset", "seed", "--batch-size", 16, "--iterations", 2, "--log-every", 1, "--sample-every", 0,
        "--checkpoint-every", 1, "--no-progress", "--device", "cpu"]


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under root: file bytes, link targets, folders."""
    tree = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        tree[key] = ("link", os.readlink(path)) if path.is_symlink() else \
            path.read_bytes() if path.is_file() else "folder"
    return tree


def one_line_error(result, *phrases) -> str:
    """Exit 2 with the error on one line, the last (notes such as the data set's may come before it)."""
    status, stdout, stderr = result
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert [line for line in lines if "error" in line] == lines[-1:] and "Traceback" not in stderr, stderr
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def template(tmp_path_factory, small_npz) -> Path:
    """One real tiny run (checkpoints 1 and 2, last.ckpt, export, grids, GIF, plot), copied by each test."""
    from conftest import invoke_cli

    run = tmp_path_factory.mktemp("template") / "run"
    status, _, stderr = invoke_cli(["train", "--data", small_npz, "--out", run, *TINY])
    assert status == 0, stderr
    return run


@pytest.fixture
def run(template, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(template, copy, symlinks=True)
    return copy


def train_over(cli, out, data, *extra):
    return cli(["train", "--data", data, "--out", out, "--overwrite", *TINY, *extra])


def hidden_siblings(run: Path) -> list[str]:
    return sorted(p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}."))


# --------------------------------------------------------------------------------------- train --overwrite

def test_the_template_holds_every_kind_of_run_file(template):
    names = set(snapshot(template))
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
    before = snapshot(run.parent)
    offending = planted.split("/")[0] if planted.split("/")[0] not in ("samples", "checkpoints") else \
        "/".join(planted.split("/")[:2])
    one_line_error(train_over(cli, run, small_npz), str(run / offending), "only replaces run directories")
    assert snapshot(run.parent) == before


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
    before = snapshot(elsewhere), sorted(p.name for p in run.rglob("*"))
    one_line_error(train_over(cli, run, small_npz), str(offending))
    assert (snapshot(elsewhere), sorted(p.name for p in run.rglob("*"))) == before


def test_the_issue_scenario_refuses_the_current_directory(cli, tmp_path, shared_mnist_dir, monkeypatch):
    """mkdir p; cd p; mkdir checkpoints notes; ... train --out . --overwrite --data ./mnist: once emptied p/."""
    p = tmp_path / "p"
    (p / "checkpoints").mkdir(parents=True)
    (p / "notes").mkdir()
    (p / "notes" / "thesis.txt").write_text("important\n")
    shutil.copytree(shared_mnist_dir, p / "mnist")
    before = snapshot(p)
    monkeypatch.chdir(p)
    one_line_error(cli(["train", "--out", ".", "--overwrite", "--data", "./mnist", "--iterations", 5,
                        "--batch-size", 16, "--no-progress"]), "is the current directory")
    assert snapshot(p) == before


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
    before = snapshot(run)
    one_line_error(train_over(cli, out, data, *extra), phrase)
    assert snapshot(run) == before


def test_overwrite_replaces_a_real_run_and_its_leftover_temporaries(cli, run, small_npz):
    (run / ".config.json.k2j4h6g8.tmp").write_text("{")  # as a writer killed mid-write leaves them
    (run / ".last.ckpt.tmp").symlink_to("checkpoints/iter_00000001.ckpt")
    (run / "checkpoints" / ".iter_00000003.ckpt.a1b2c3d4.tmp").write_bytes(b"half")
    (run / "checkpoints" / "iter_00000009.ckpt").write_bytes(b"old")
    old_inode = run.stat().st_ino
    status, _, stderr = train_over(cli, run, small_npz, "--iterations", 1)
    assert status == 0, stderr
    names = set(snapshot(run))
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
    before = snapshot(run)
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
        one_line_error(train_over(cli, run, small_npz), named)
    assert snapshot(run) == before
    assert hidden_siblings(run) == []


def test_overwrite_of_a_locked_run_is_refused(cli, run, small_npz):
    from mnist_gan.io.files import exclusive_lock

    before = snapshot(run)
    with exclusive_lock(run):
        one_line_error(train_over(cli, run, small_npz), "another mnist-gan process is using")
    assert snapshot(run) == before and hidden_siblings(run) == []


def test_resume_removes_only_the_runs_own_temporaries(run):
    ours = [run / ".metrics.jsonl.abcd1234.tmp", run / "samples" / ".iter_00000002.png.zz9_0x1y.tmp"]
    theirs = [run / ".notes.tmp", run / "samples" / ".holiday.png.tmp"]
    for path in ours + theirs:
        path.write_text("x")
    with RunDir(run).reopened() as reopened:
        assert reopened.path == run
    assert [p.exists() for p in ours + theirs] == [False, False, True, True]


# ------------------------------------------------------------------------------ generate and interpolate

@pytest.fixture(scope="module")
def source(template) -> Path:
    return template / "last.ckpt"


def _racing_chunks(monkeypatch, make_rival):
    """generate's chunks, with `make_rival()` run after the first: another process creating the output."""
    from mnist_gan.sampling import sample

    real = sample.generate_chunks

    def chunks(*args, **kwargs):  # chunks of 100: the same path as 1,000, a tenth of the drawing
        for index, chunk in enumerate(real(*args, **kwargs, batch_size=100)):
            yield chunk
            if index == 0:
                make_rival()

    monkeypatch.setattr(sample, "generate_chunks", chunks)


@pytest.mark.parametrize("fmt", ["png", "npz", "dir"])
def test_an_output_created_meanwhile_is_never_replaced(cli, source, tmp_path, monkeypatch, fmt):
    out = tmp_path / f"x.{fmt}"

    def rival():
        if fmt == "dir":
            out.mkdir()
            (out / "0000.png").write_bytes(b"rival")
        else:
            out.write_bytes(b"rival")

    _racing_chunks(monkeypatch, rival)
    one_line_error(cli(["generate", source, "-n", 150, "--format", fmt, "--out", out, "--nrow", 15]),
                   f"{out}: already exists")
    assert (out / "0000.png" if fmt == "dir" else out).read_bytes() == b"rival"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name], "no temporaries left"


def test_overwrite_replaces_an_output_created_meanwhile(cli, source, tmp_path, monkeypatch):
    out = tmp_path / "x.npz"
    _racing_chunks(monkeypatch, lambda: out.write_bytes(b"rival"))
    status, _, stderr = cli(["generate", source, "-n", 150, "--format", "npz", "--out", out, "--overwrite"])
    assert status == 0, stderr
    with np.load(out) as archive:
        assert archive["images"].shape == (150, 28, 28)


def test_racing_writers_one_wins_whole(tmp_path):
    out = tmp_path / "x.bin"
    results = {}

    def write(index):
        try:
            atomic_write_bytes(out, bytes([index]) * 100_000, replace=False)
            results[index] = "won"
        except MnistGanError as error:
            results[index] = str(error)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, result in results.items() if result == "won"]
    assert len(winners) == 1 and out.read_bytes() == bytes(winners) * 100_000
    assert all("already exists" in r for i, r in results.items() if i not in winners)
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("fmt", ["npz", "dir", "png"])
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, "error"])
def test_a_stop_part_way_leaves_no_output_and_no_temporaries(cli, source, tmp_path, monkeypatch, fmt, how):
    from mnist_gan.sampling import sample

    out = tmp_path / f"x.{fmt}"
    real = sample.generate_chunks

    def chunks(*args, **kwargs):  # chunks of 100 rather than 1,000: the same path, a tenth of the drawing
        for index, chunk in enumerate(real(*args, **kwargs, batch_size=100)):
            yield chunk
            if index == 1:
                if how == "error":
                    raise MnistGanError("G exploded")
                signal.raise_signal(how)  # the handler runs here, in the main thread, as for a real kill

    monkeypatch.setattr(sample, "generate_chunks", chunks)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    status, _, stderr = cli(["generate", source, "-n", 250, "--format", fmt, "--out", out, "--nrow", 25])
    if how == "error":
        one_line_error((status, "", stderr), "G exploded")
    else:
        assert status == 130 and stderr.strip() == \
            f"mnist-gan: interrupted by {how.name}; nothing written to {out}"
    assert list(tmp_path.iterdir()) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers, "handlers restored"


def test_sigterm_in_a_real_process_removes_its_temporary(source, tmp_path):
    import subprocess
    import time

    from reliability_helpers import spawn

    out = tmp_path / "x.npz"
    process = spawn(["generate", str(source), "-n", "100000", "--format", "npz", "--out", str(out)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".x.npz.*.tmp")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".x.npz.*.tmp")), "the writer started"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == f"mnist-gan: interrupted by SIGTERM; nothing written to {out}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, phrase", [
    (["generate", "RUN", "-n", 1_000_000_000, "--format", "npz"], "MAX_SAMPLES"),
    (["generate", "RUN", "-n", 2_000_000, "--format", "dir"], "MAX_DIR_IMAGES"),
    (["generate", "RUN", "-n", 1_000_000], "MAX_IMAGE_PIXELS"),
    (["generate", "RUN", "-n", 4, "--nrow", 1_000_000_000], "MAX_IMAGE_PIXELS"),
    (["generate", "RUN", "-n", 20_000, "--nice"], "MAX_NICE_SAMPLES"),
    (["interpolate", "RUN", "--steps", 1_000_000_000], "MAX_WALK_IMAGES"),
    (["interpolate", "RUN", "--rows", 1_000_000_000], "MAX_WALK_IMAGES"),
    (["interpolate", "RUN", "--scale", 1_000_000_000], "--scale must be in 1..64"),
    (["interpolate", "RUN", "--steps", 1000, "--rows", 10, "--scale", 4], "MAX_IMAGE_PIXELS"),
    (["interpolate", "RUN", "--steps", 100, "--rows", 10, "--scale", 20, "--out", "walk.gif"],
     "MAX_ANIMATION_PIXELS"),
])
def test_huge_sizes_are_refused_before_anything_loads(cli, tmp_path, monkeypatch, argv, phrase):
    import mnist_gan.run.checkpoint

    def no_load(path):
        raise AssertionError("the generator was loaded before the size check")

    monkeypatch.setattr(mnist_gan.run.checkpoint, "load_generator", no_load)
    monkeypatch.chdir(tmp_path)
    one_line_error(cli([str(tmp_path) if a == "RUN" else a for a in argv]), phrase)
    assert list(tmp_path.iterdir()) == []


def test_sizes_just_inside_the_bounds_are_accepted():
    from mnist_gan.sampling.sample import MAX_DIR_IMAGES, MAX_SAMPLES, check_output, check_walk

    check_output(MAX_SAMPLES, "npz")
    check_output(MAX_DIR_IMAGES, "dir")
    check_output(90_000, "png")  # a 300x300 grid: 81 M pixels
    check_walk(10, 1, scale=64)
    check_walk(100, 100, scale=1)


def test_npz_is_streamed_chunk_by_chunk(tmp_path):
    """Images written from a generator of chunks: np.load reads what np.savez_compressed would hold, and Python
    never holds more than a chunk or two (the whole array would be 39 MB)."""
    import tracemalloc

    from mnist_gan.sampling.sample import write_images

    digit = torch.linspace(-1, 1, 784).view(1, 1, 28, 28)
    n, chunk = 50_000, 1000

    def chunks():
        for start in range(0, n, chunk):
            yield digit.repeat(chunk, 1, 1, 1).roll(start // chunk, dims=-1)  # (chunk, 1, 28, 28)

    tracemalloc.start()
    write_images(chunks(), n, tmp_path / "x.npz", "npz", overwrite=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, f"peak {peak / 1e6:.1f} MB"
    with np.load(tmp_path / "x.npz") as archive:
        images = archive["images"]
    assert images.dtype == np.uint8 and images.shape == (n, 28, 28)
    expected = np.concatenate([to_uint8(c).numpy() for c in chunks()])
    assert np.array_equal(images, expected)


@pytest.mark.parametrize("conditional", [False, True])
def test_chunks_give_generates_images(conditional):
    from mnist_gan.gan.models import build_generator, sample_z
    from mnist_gan.sampling.sample import generate, generate_chunks
    from mnist_gan.settings.config import ModelConfig

    config = ModelConfig(architecture="dcgan", width=4, conditional=conditional)
    torch.manual_seed(0)
    G = build_generator(config).eval()
    n, batch = 23, 7
    rng = torch.Generator().manual_seed(3)
    labels = torch.arange(n) % config.num_classes if conditional else None  # every class in turn, as before
    with torch.no_grad():
        reference = torch.cat([G(sample_z(min(batch, n - s), config, rng), None if labels is None else
                                 labels[s:s + batch]) for s in range(0, n, batch)])
    chunks = list(generate_chunks(G, config, n, seed=3, batch_size=batch))
    assert [len(c) for c in chunks] == [7, 7, 7, 2]
    assert torch.equal(torch.cat(chunks), reference)
    assert torch.equal(generate(G, config, n, seed=3, batch_size=batch), reference)
