"""Images/s of data-parallel training with 1 and 2 CPU processes (torchrun, gloo) at the same global batch.

    flock /tmp/cpu.lock python -m benchmarks.distributed_speed

Each row runs the real command (`python -m mnist_gan train ...`, under `torchrun --nproc_per_node N` for N > 1)
and reads images/s from the run's metrics.jsonl, past the first logging window (start-up). On a 2-core machine
expect little gain: one process already uses both cores through its intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mnist_gan.training.recorder import TRAIN, record_kind

ROOT = Path(__file__).resolve().parents[1]

SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def run(processes: int, args: argparse.Namespace, data: str, out: Path) -> dict:
    train = ["-m", "mnist_gan", "train", "--preset", args.preset, "--data", data, "--out", str(out),
             "--batch-size", str(args.batch_size), "--iterations", str(args.warmup + args.iterations),
             "--log-every", str(args.warmup), "--sample-every", "0", "--checkpoint-every", "0",
             "--precision", args.precision, "--no-progress", "--overwrite"]
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if processes > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    finished = subprocess.run(launcher + train, env=env, capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit(f"{processes} process(es) failed:\n{finished.stderr[-2000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    history = [record for record in lines if record_kind(record) == TRAIN]
    images = seconds = 0.0
    for previous, record in zip(history, history[1:], strict=False):
        window = args.batch_size * (record["iteration"] - previous["iteration"])
        images, seconds = images + window, seconds + window / record["images_per_s"]
    return {"processes": processes, "threads": env.get("OMP_NUM_THREADS", str(torch.get_num_threads())),
            "images_per_s": images / seconds, "s_per_iter": args.batch_size * seconds / images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch, split among processes")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    data = str(SHARED_MNIST) if SHARED_MNIST.exists() else "mnist"
    print(f"preset {args.preset}, global batch {args.batch_size}, precision {args.precision}, "
          f"{os.cpu_count()} CPUs, gloo, data {data}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (int(p) for p in args.processes.split(",")):
            rows.append(run(processes, args, data, Path(tmp) / f"n{processes}"))
    print(f"{'processes':>9} {'threads each':>12} {'s/iter':>8} {'images/s':>9} {'vs 1':>6}")
    for row in rows:
        print(f"{row['processes']:>9} {row['threads']:>12} {row['s_per_iter']:>8.4f} {row['images_per_s']:>9.1f} "
              f"{row['images_per_s'] / rows[0]['images_per_s']:>5.2f}x")


if __name__ == "__main__":
    main()
