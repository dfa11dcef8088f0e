"""Plain helpers the tests import (fixtures live in conftest.py), each written once: running the CLI in-process
or in a process of its own and reading its one error line; comparing checkpoint states and directory trees; tiny
configurations and data sets; IDX and PNG bytes, and fake download mirrors; stand-ins for the evaluator and the
feature classifier; and a time limit for the property-based tests."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
# Metrics logged by real runs of benchmarks/diagnose_broken_runs.py (see test_diagnosis_signs.py); the first
# line of each file is the run's config.
MEASURED = DATA / "diagnose"

# A tiny, fast run: dcgan's networks at width 8 (BatchNorm in G and D, Adam), 16 images a batch, everything logged,
# nothing drawn but the first and last grids. The seed preset's own resume: test_stop_and_resume's seed case.
TINY_DCGAN = ["--preset", "dcgan", "--width", "8", "--batch-size", "16", "--device", "cpu", "--no-progress",
              "--log-every", "1", "--sample-every", "0"]


# ------------------------------------------------------------------------------------------ the CLI

def invoke_cli(argv) -> tuple[int, str, str]:
    """Run `mnist-gan ARGV` in-process; return (exit status, stdout, stderr). argparse exits count as statuses."""
    from mnist_gan.cli.parser import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(arg) for arg in argv])
        except SystemExit as exit_:
            status = exit_.code
    return status, out.getvalue(), err.getvalue()


def cli_env() -> dict[str, str]:
    """The environment for `python -m mnist_gan` subprocesses: this checkout first on the path, offline."""
    # Same thread count as the test process (none forced): CPU kernels are bit-reproducible only at a fixed count.
    env = dict(os.environ, MNIST_GAN_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("PYTHONWARNINGS", None)
    return env


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Start `python -m mnist_gan ARGS` in its own process."""
    return subprocess.Popen([sys.executable, "-m", "mnist_gan", *args], env=cli_env(), cwd=REPO, **kwargs)


def one_error_line(err: str) -> str:
    """The one error line a failed command printed; fails on a traceback, several error lines or an unbounded one."""
    from mnist_gan.errors import MAX_MESSAGE_CHARS

    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err[:2000]
    assert len(errors[0]) <= MAX_MESSAGE_CHARS + 100, len(errors[0])
    return errors[0]


def last_line_error(result, *phrases) -> str:
    """Exit 2 with the error on one line, the last (notes such as the data set's may come before it), holding
    every phrase; `result` is what invoke_cli returns."""
    status, stdout, stderr = result
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert [line for line in lines if "error" in line] == lines[-1:] and "Traceback" not in stderr, stderr
    for phrase in phrases:
        assert phrase in lines[-1], lines[-1]
    return lines[-1]


# ------------------------------------------------------------------------------------------ states and trees

def state_digest(value) -> str:
    """A hash of everything in a checkpoint state (tensors bit for bit, in key order); equal states, equal hashes."""
    digest = hashlib.sha256()

    def walk(item) -> None:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(_bytes(tensor).numpy().tobytes())
        elif isinstance(item, dict):
            digest.update(b"{")
            for key in sorted(item, key=repr):
                digest.update(repr(key).encode())
                walk(item[key])
            digest.update(b"}")
        elif isinstance(item, (list, tuple)):
            digest.update(b"[")
            for element in item:
                walk(element)
            digest.update(b"]")
        else:
            digest.update(repr(item).encode())

    walk(value)
    return digest.hexdigest()


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bytes as a uint8 tensor, so NaNs and signed zeros compare bit for bit."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def differences(a, b, prefix: str = "") -> list[str]:
    """The keys where two checkpoint states differ (tensors compared bit for bit); [] when identical."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bytes(a), _bytes(b))
        return [] if same else [prefix or "."]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{prefix}: keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for key in a for d in differences(a[key], b[key], f"{prefix}.{key}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{prefix}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{prefix}[{i}]")]
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]


def copy_run(source: Path, into: Path) -> Path:
    """A private copy of the run directory `source` at `into` (its last.ckpt link kept a link), for a test that
    damages or replaces what a shared run holds."""
    import shutil

    shutil.copytree(source, into, symlinks=True)
    return into


def tree_snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash (or link target, or "dir") of every entry under root, to show that a
    failed command changed nothing."""
    snapshot = {}
    for path in sorted(Path(root).rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            snapshot[key] = "-> " + os.readlink(path)
        elif path.is_file():
            snapshot[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            snapshot[key] = "dir"
    return snapshot


# ------------------------------------------------------------------------------------------ configurations

def preset_values() -> dict:
    """Each preset's to_dict() (preset name aside) before the field defaults became recommended's (commit
    3a287a6): what every preset must still resolve to; recommended's batch and rates since the speed work of
    benchmarks/time_to_digits.py (128; G and D 1.6e-3)."""
    return json.loads((DATA / "preset_values.json").read_text())


def exact(values: dict) -> str:
    """A config's values as JSON text, so that 0 and 0.0, or 1 and True, differ."""
    return json.dumps(values)


def tiny_config(name: str = "recommended", model: dict | None = None, **train):
    """The preset NAME at width 8 and batch 8 on the CPU, logging every 2 (a step takes milliseconds);
    `model` and the keywords set fields of the model and train sections."""
    from mnist_gan.settings.config import preset

    config = preset(name)
    config.model.width = 8
    config.train.batch_size, config.train.device, config.train.log_every = 8, "cpu", 2
    for key, value in (model or {}).items():
        setattr(config.model, key, value)
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def tiny_run_config(name: str = "dcgan", model: dict | None = None, **train):
    """tiny_config for a whole run: 4 iterations of 32 images, a grid every 2."""
    return tiny_config(name, model, **{"batch_size": 32, "iterations": 4, "sample_every": 2, **train})


# ------------------------------------------------------------------------------------------ data

def small_dataset(mnist_5k, n: int = 256, labels: bool = True):
    """The first n real digits as an ImageDataset, with their labels or without."""
    from mnist_gan.data.images import ImageDataset

    return ImageDataset(mnist_5k.images[:n], mnist_5k.labels[:n] if labels else None, "mnist", "test digits")


def idx_bytes(array) -> bytes:
    """A uint8 array as an IDX file: images (N, H, W) get magic 2051, labels (N,) magic 2049."""
    from benchmarks.hostile_files import idx_bytes as encode

    array = np.asarray(array, dtype=np.uint8)
    return encode(array, 0x800 + array.ndim)  # 0x08: unsigned bytes, then the number of dimensions


def write_idx_dir(directory: Path, images, labels, prefix: str = "train", gz: bool = True) -> Path:
    """PREFIX-images-idx3-ubyte and PREFIX-labels-idx1-ubyte (gzipped: .gz) in directory, made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
        payload = idx_bytes(array)
        (directory / f"{prefix}-{kind}{suffix}").write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return directory


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    """A uint8 image array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def deep(depth: int, opener: str = "[") -> str:
    """JSON text nested `depth` levels deep: [[[...]]] or {"a": {"a": ... 0}}."""
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a": ' * depth + "0" + closer * depth
    return opener * depth + closer * depth


def measured(name: str) -> tuple[dict, list[dict], list[dict]]:
    """(config, training records, evaluation records) of one measured run in MEASURED."""
    lines = [json.loads(line) for line in (MEASURED / f"{name}.jsonl").read_text().splitlines()]
    records = lines[1:]
    return lines[0]["config"], [r for r in records if "fid" not in r], [r for r in records if "fid" in r]


# ------------------------------------------------------------------------------------- the network, faked

MIRRORS = ["https://mirror-a.invalid/mnist/", "https://mirror-b.invalid/mnist/"]


class FakeMirrors:
    """Stands in for urllib.request.urlopen: serves local bytes per URL (or raises the exception given for it,
    or a failed name lookup for a URL it does not know), and records every call as (url, timeout)."""

    def __init__(self, served: dict[str, object]):
        self.served = served  # url -> bytes, or an exception to raise
        self.calls: list[tuple[str, float | None]] = []

    def __call__(self, url, timeout=None):
        self.calls.append((url, timeout))
        payload = self.served.get(url, urllib.error.URLError("[Errno -2] Name or service not known"))
        if isinstance(payload, BaseException):
            raise payload
        return io.BytesIO(payload)

    @property
    def urls(self) -> list[str]:
        return [url for url, _ in self.calls]


def serve_mirrors(monkeypatch, served: dict[str, object]) -> FakeMirrors:
    """Replace the network by FakeMirrors(served) for the test's duration."""
    fake = FakeMirrors(served)
    monkeypatch.setattr("urllib.request.urlopen", fake)
    return fake


def fake_mnist_source(monkeypatch, images, labels, train: int) -> dict[str, bytes]:
    """Point the `mnist` source at the two fake MIRRORS, online, with the true checksums of four gzip IDX
    files: the first `train` images and labels as the training split, the rest as the test split. Returns
    file name -> bytes."""
    from mnist_gan.data import datasets

    payloads = {}
    for prefix, part in (("train", slice(0, train)), ("t10k", slice(train, None))):
        for kind, array in (("images-idx3-ubyte", images[part]), ("labels-idx1-ubyte", labels[part])):
            payloads[f"{prefix}-{kind}.gz"] = gzip.compress(idx_bytes(array), mtime=0)
    files = {name: hashlib.md5(payload).hexdigest() for name, payload in payloads.items()}
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"files": files, "mirrors": MIRRORS, "local": []})
    monkeypatch.delenv("MNIST_GAN_OFFLINE", raising=False)
    return payloads


# ----------------------------------------------------------------------------------- the evaluator, faked

class StubEvaluator:
    """Stands in for evaluation.evaluator.Evaluator (whose classifier takes minutes to train): fixed figures,
    the FID falling (100, 50, ...), which raise the diagnosis' memorisation warning at the second evaluation."""

    classifier = None  # the class probe then reads k-means clusters

    @classmethod
    def for_dataset(cls, *args, **kwargs) -> StubEvaluator:
        return cls()

    def evaluate_generator(self, G, model_config, n, seed=0, kid_subsets=0) -> dict:
        self.calls = getattr(self, "calls", 0) + 1
        return {"fid": 100.0 / self.calls, "kid": 0.5, "kid_std": 0.01, "classifier_score": 2.0, "confidence": 0.5,
                "classes_covered": 10, "class_kl": 0.0, "precision": 0.25, "recall": 0.75, "density": 0.9,
                "coverage": 0.8, "memorization": 0.1,
                "class_histogram": [0.1] * 10, "n": n, "seconds": 0.1}


def quick_recipe() -> dict:
    """The feature classifier's recipe made short: over 90% held-out accuracy in seconds, not a minute."""
    from mnist_gan.evaluation import classifier

    return dict(classifier.RECIPE, width=16, steps=80)


def untrained_classifier(data, classes: int, device="cpu"):
    """An untrained stand-in feature classifier for `data` (a classifier split): the pipeline runs in a
    second."""
    from mnist_gan.evaluation import classifier

    torch.manual_seed(0)
    return classifier.Classifier(classifier.FeatureClassifier(classes), "", 0.5, len(data.train_images),
                                 len(data.heldout_images))


def forbid_classifier_training(monkeypatch) -> None:
    """Make training a feature classifier fail the test: a cached one must serve, or none may be trained."""
    from mnist_gan.evaluation import classifier

    def forbidden(*args, **kwargs):
        raise AssertionError("a feature classifier was trained where none was to be")

    monkeypatch.setattr(classifier, "train_classifier", forbidden)


# ------------------------------------------------------------------------------------------ time limits

class Hung(BaseException):  # not an Exception, so no reader's `except Exception` can swallow it
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hung in the main thread if the block runs past `seconds`."""
    def expire(signum, frame):
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
