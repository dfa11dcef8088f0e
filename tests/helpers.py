"""Helpers shared by the reliability tests and the kill-and-resume benchmark: run the CLI, compare states."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# A tiny, fast run: dcgan's networks at width 8 (BatchNorm in G and D, Adam), 16 images a batch, everything logged,
# nothing drawn but the first and last grids. The seed preset's own resume: test_stop_and_resume's seed case.
TINY = ["--preset", "dcgan", "--width", "8", "--batch-size", "16", "--device", "cpu", "--no-progress",
        "--log-every", "1", "--sample-every", "0"]


def cli_env() -> dict[str, str]:
    """The environment for `python -m mnist_gan` subprocesses: this checkout first on the path, offline."""
    # Same thread count as the test process (none forced): CPU kernels are bit-reproducible only at a fixed count.
    env = dict(os.environ, MNIST_GAN_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("PYTHONWARNINGS", None)
    return env


def spawn(args: list[str], **kwargs) -> subprocess.Popen:
    """Start `python -m mnist_gan ARGS` in its own process."""
    return subprocess.Popen([sys.executable, "-m", "mnist_gan", *args], env=cli_env(), cwd=REPO, **kwargs)


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


def tree_snapshot(root: Path) -> dict[str, str]:
    """Path -> content hash (or link target) of every file under root, to show a failed command changed nothing."""
    snapshot = {}
    for path in sorted(Path(root).rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            snapshot[key] = "-> " + os.readlink(path)
        elif path.is_file():
            snapshot[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            snapshot[key] = "dir"
    return snapshot
