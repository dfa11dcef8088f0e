"""Thread settings for the CPU step: which of OpenMP's and PyTorch's knobs make the real training loop faster.

    python -m benchmarks.threads --save
    python -m benchmarks.threads --cases recommended:128 seed:32 --rounds 3

Each setting runs the real loop (`mnist_gan.training.loop.train`, the preset's own precision, eager) in a fresh
process, because OpenMP reads its environment once, when the process starts: the default (one thread per physical
core), one thread, threads bound to cores (OMP_PROC_BIND=close, OMP_PLACES=cores), OpenMP's waiting threads spinning
or sleeping (OMP_WAIT_POLICY=ACTIVE or PASSIVE), one inter-op thread (torch.set_num_interop_threads(1)), and two
runs at once with one thread each (their images/s summed: what a second run on the same machine adds). A row's
images/s is the median of the loop's logged one-iteration windows past the warm-up; the settings run one after
another, `--rounds` times in turn, so a drift of the machine's speed reaches every setting alike; the table gives
each round and the mean, and each setting's ratio to the default. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks import record
from benchmarks.speed import SHARED_MNIST

ROOT = Path(__file__).resolve().parents[1]

# name -> (environment added to the worker's, inter-op threads or None, processes at once)
SETTINGS: dict[str, tuple[dict[str, str], int | None, int]] = {
    "default": ({}, None, 1),
    "1 thread": ({"OMP_NUM_THREADS": "1"}, None, 1),
    "bound to cores": ({"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, None, 1),
    "spin-wait": ({"OMP_WAIT_POLICY": "ACTIVE"}, None, 1),
    "sleep-wait": ({"OMP_WAIT_POLICY": "PASSIVE"}, None, 1),
    "1 inter-op thread": ({}, 1, 1),
    "2 runs x 1 thread": ({"OMP_NUM_THREADS": "1"}, None, 2),
}


def worker(preset_name: str, batch_size: int, warmup: int, iterations: int, interop: int | None, data: str) -> dict:
    """Images/s of the real loop in this process, as benchmarks.speed.loop_rate measures it."""
    import torch

    if interop:
        torch.set_num_interop_threads(interop)  # only possible before any inter-op work starts
    from benchmarks.speed import loop_rate
    from mnist_gan import preset
    from mnist_gan.data.datasets import load_dataset
    from mnist_gan.gan.device import configure_threads

    case = preset(preset_name)
    case.data.data, case.train.batch_size = data, batch_size
    dataset = load_dataset(case.data)
    with tempfile.TemporaryDirectory() as tmp:
        rate = loop_rate(case, "auto", False, dataset, warmup, iterations, Path(tmp) / "run")
    return {"images_per_s": rate, "threads": configure_threads(), "interop": torch.get_num_interop_threads()}


def run_setting(name: str, preset_name: str, batch_size: int, args: argparse.Namespace) -> dict:
    """Start the setting's worker process(es) at once and wait for them; images/s summed over processes."""
    environment, interop, processes = SETTINGS[name]
    command = [sys.executable, "-m", "benchmarks.threads", "--worker", preset_name, str(batch_size),
               "--warmup", str(args.warmup), "--iterations", str(args.iterations), "--data", args.data]
    if interop:
        command += ["--interop", str(interop)]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "KMP_", "GOMP_"))}, **environment}
    workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(processes)]
    results = []
    for process in workers:
        stdout, stderr = process.communicate()
        if process.returncode:
            raise SystemExit(f"{name}: the worker failed:\n{stderr[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return {"images_per_s": sum(r["images_per_s"] for r in results), "threads": results[0]["threads"],
            "interop": results[0]["interop"], "processes": processes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["recommended:128", "recommended:32"],
                        metavar="PRESET:BATCH", help="presets and batch sizes to time (default: %(default)s)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--rounds", type=int, default=2, help="times each setting runs, in turn with the others")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40, help="timed iterations per run (median taken)")
    parser.add_argument("--data", default=str(SHARED_MNIST) if SHARED_MNIST.exists() else "mnist")
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="")
    parser.add_argument("--worker", nargs=2, metavar=("PRESET", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--interop", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.warmup, args.iterations, args.interop,
                                args.data)))
        return
    with record.saved_output("threads", args.save, args.note):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    print(f"{os.cpu_count()} logical CPUs; data: {args.data}; {args.rounds} rounds of {args.warmup} warm-up and "
          f"{args.iterations} timed iterations per setting")
    for case in args.cases:
        preset_name, _, batch = case.partition(":")
        batch_size = int(batch)
        rounds: dict[str, list[float]] = {name: [] for name in args.settings}
        described: dict[str, dict] = {}
        for _ in range(args.rounds):
            for name in args.settings:
                result = run_setting(name, preset_name, batch_size, args)
                rounds[name].append(result["images_per_s"])
                described[name] = result
                print(f"  {case} {name}: {result['images_per_s']:.1f} images/s", file=sys.stderr)
        baseline = statistics.mean(rounds["default"]) if "default" in rounds else None
        print(f"\n{preset_name} at batch {batch_size} (images/s; per process: threads, inter-op threads)")
        print(f"{'setting':<20} {'threads':>7} {'interop':>7} " + " ".join(f"{'round ' + str(i + 1):>9}"
              for i in range(args.rounds)) + f" {'mean':>9} {'vs default':>10}")
        for name, values in rounds.items():
            mean = statistics.mean(values)
            ratio = f"{mean / baseline:>9.2f}x" if baseline else f"{'-':>10}"
            info = described[name]
            threads = f"{info['processes']}x{info['threads']}" if info["processes"] > 1 else str(info["threads"])
            print(f"{name:<20} {threads:>7} {info['interop']:>7} " + " ".join(f"{v:>9.1f}" for v in values)
                  + f" {mean:>9.1f} {ratio}")


if __name__ == "__main__":
    main()
