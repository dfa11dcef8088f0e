"""`generate` and `interpolate` never replace an output by accident and never leave a partial one (a rival
writer, a stop part way, a signal, an error); they refuse absurd sizes before anything loads, stream an npz chunk by
chunk, and draw in chunks the images one call draws."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import last_line_error, spawn

from mnist_gan.data.images import to_uint8
from mnist_gan.errors import MnistGanError


@pytest.fixture(scope="module")
def source(trained_run) -> Path:
    """A real checkpoint of the seed model (conftest's trained_run, which nothing here changes)."""
    return trained_run.dir / "last.ckpt"


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
    last_line_error(cli(["generate", source, "-n", 150, "--format", fmt, "--out", out, "--nrow", 15]),
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
        last_line_error((status, "", stderr), "G exploded")
    else:
        assert status == 130 and stderr.strip() == \
            f"mnist-gan: interrupted by {how.name}; nothing written to {out}"
    assert list(tmp_path.iterdir()) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers, "handlers restored"


def test_sigterm_in_a_real_process_removes_its_temporary(source, tmp_path):
    import subprocess
    import time

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
    last_line_error(cli([str(tmp_path) if a == "RUN" else a for a in argv]), phrase)
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
    from mnist_gan.settings.config import preset

    # DCGAN's G with the seed preset's features off (no clusters), conditional or not
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", width=4, conditional=conditional)
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
