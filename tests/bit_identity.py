"""Digests of short fixed-seed training runs, for proving that a change of code layout changes no number.

Run as a script with the package under test first on PYTHONPATH:

    OMP_NUM_THREADS=1 MNIST_GAN_OFFLINE=1 python tests/bit_identity.py DATA.npz WORK_DIR > digests.json

It uses only what every version of the package has kept (the `mnist_gan.cli.main` entry point and the files
of a run directory), so the same script measures the code before and after a move on the same machine.
Times are left out of the digests; every tensor and setting of the last checkpoint, config.json, every
number of every metrics line, the last sample grid and the generator export are in them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

# One case per code path worth pinning: the tutorial's SGD/BCE model, the self-conditioned packed default
# (k-means, EMA, LSGAN, shift augmentation's RNG), the labelled model and WGAN-GP's interpolation RNG.
CASES = {
    "seed": ["--preset", "seed"],
    # the default's rates at the move (since doubled), so both sides train the same settings
    "recommended": ["--preset", "recommended", "--width", "8", "--self-condition", "4", "--augment-shift", "2",
                    "--lr", "4e-4", "--lr-d", "8e-4"],
    "conditional": ["--preset", "recommended", "--width", "8", "--conditional", "--lr", "4e-4", "--lr-d", "8e-4"],
    "wgan-gp": ["--preset", "dcgan", "--width", "8", "--loss", "wgan-gp", "--n-critic", "2", "--no-d-batchnorm", "--r1-gamma", "1"],
}
COMMON = ["--limit", "160", "--batch-size", "16", "--iterations", "12", "--log-every", "4", "--sample-every", "0",
          "--checkpoint-every", "12", "--seed", "5", "--no-progress", "--device", "cpu", "--precision", "fp32"]
TIMING_FIELDS = {"time", "seconds", "elapsed", "timestamp"}


def tensor_digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def flatten(prefix: str, value, out: dict) -> None:
    """Every tensor and number of a checkpoint, by its path in the nested dict."""
    import torch

    if isinstance(value, torch.Tensor):
        out[prefix] = tensor_digest(value)
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            flatten(f"{prefix}/{key}", value[key], out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            flatten(f"{prefix}/{index}", item, out)
    elif isinstance(value, int | float | bool | str) or value is None:
        out[prefix] = repr(value)


def run_digests(run_dir: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    checkpoint = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    config = json.loads((run_dir / "config.json").read_text())
    for settings in (checkpoint["config"], config):  # the data file's folder differs from machine to machine
        settings["data"]["data"] = Path(settings["data"]["data"]).name
    tensors: dict = {}
    flatten("ckpt", checkpoint, tensors)
    flatten("config.json", config, tensors)
    for name, value in sorted(load_file(run_dir / "generator.safetensors").items()):
        tensors[f"export/{name}"] = tensor_digest(value)
    for grid in sorted((run_dir / "samples").glob("*.png")):
        tensors[f"samples/{grid.name}"] = hashlib.sha256(grid.read_bytes()).hexdigest()[:16]
    metrics = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        metrics.append({key: value for key, value in sorted(record.items())
                        if key not in TIMING_FIELDS and not key.endswith(("_seconds", "_per_second", "_per_s"))})
    return {"tensors": tensors, "metrics": metrics}


def machine() -> dict:
    """What decides the last bits of a float result: torch's build, the CPU kernels it picked, the CPU."""
    import platform

    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": model}


def main(data: str, work: str) -> None:
    import contextlib
    import io

    from mnist_gan.cli import main as mnist_gan_main  # the entry point every version keeps

    result = {}
    for name, flags in CASES.items():
        out = Path(work) / name
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            status = mnist_gan_main(["train", *flags, *COMMON, "--data", data, "--out", str(out)])
        if status:
            raise SystemExit(f"{name}: exit {status}\n{err.getvalue()}")
        result[name] = run_digests(out)
    json.dump({"package": str(Path(sys.modules["mnist_gan"].__file__).parent), "machine": machine(), "runs": result}, sys.stdout, indent=1,
              sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
