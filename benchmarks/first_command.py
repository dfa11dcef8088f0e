"""README's first command, timed: how long it takes, how fast it trains and what its samples score.

    python -m benchmarks.first_command            # run it once; --repeat 3 keeps the fastest of three
    python -m benchmarks.first_command --threads 1   # in one thread: its CPU seconds are one idle core's time

Runs the `mnist-gan train ...` command of README.md's set-up line exactly as written (it writes runs/first, which
git ignores), timing it from the shell's side: wall-clock seconds, the CPU seconds it used and the load average
before and after (the machine may be shared). On a busy machine the wall time says little; in one thread
(`--threads 1`, OMP_NUM_THREADS=1 for the command) the CPU seconds it used are the time it takes one idle core,
start-up included. Iterations per second are the training loop's own (metrics.jsonl's
images_per_s over the batch size, the first logging window aside, as it holds the start-up). Then `mnist-gan
evaluate runs/first --json` scores 10,000 samples (the classifier-FID, the classes covered and the class shares),
outside the timing. Appends what it prints to benchmarks/results/first_command_cpu_YYYY-MM-DD.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

from benchmarks.record import cpu_model
from mnist_gan.settings.config import DEFAULT_PRESET, preset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def readme_first_command() -> list[str]:
    """argv (after `mnist-gan`) of the `mnist-gan train` command that README.md's set-up line ends with."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"```bash\n[^\n]*?&& (mnist-gan train [^\n]*)\n", text)
    if match is None:
        raise SystemExit("README.md: no set-up line ending in `&& mnist-gan train ...`")
    return shlex.split(match.group(1))[1:]


def timed_run(argv: list[str], threads: int | None) -> dict:
    """Run `mnist-gan ARGV` in the repository root; its wall and CPU seconds and the load around it."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    before_load, before = os.getloadavg()[0], resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mnist_gan", *argv], cwd=REPO, capture_output=True, text=True,
                          check=False, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"mnist-gan {shlex.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    data = next((line.removeprefix("mnist-gan: ") for line in done.stderr.splitlines() if " data: " in f" {line}"),
                "data: ?")
    return {"wall": wall, "cpu": cpu, "load_before": before_load, "load_after": os.getloadavg()[0], "data": data}


def training_speed(run_dir: Path, batch_size: int) -> tuple[int, float]:
    """(iterations trained, iterations per second of the loop after its first logging window)."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line.get("kind") == "train"]
    steady = train[1:] or train
    images_per_s = sum(line["images_per_s"] for line in steady) / len(steady)
    return train[-1]["iteration"], images_per_s / batch_size


def what_it_writes(run_dir: Path) -> str:
    """The run's files, the folders' grids and checkpoints counted."""
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file() or p.is_symlink())
    grids = [name for name in files if re.fullmatch(r"samples/iter_\d+\.png", name)]
    checkpoints = [name for name in files if name.startswith("checkpoints/")]
    rest = [name for name in files if name not in grids and name not in checkpoints]
    return ", ".join([*rest, f"samples/iter_*.png ({len(grids)} grids)", f"checkpoints/ ({len(checkpoints)})"])


def scores(run_dir: Path, threads: int | None) -> dict:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    done = subprocess.run([sys.executable, "-m", "mnist_gan", "evaluate", str(run_dir), "--json"], cwd=REPO,
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"mnist-gan evaluate {run_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of the command; the fastest is reported")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the command (default: "
                        "unset, as a user runs it: one thread per core)")
    args = parser.parse_args()
    argv = readme_first_command()
    run_dir = REPO / argv[argv.index("--out") + 1]
    batch_size = int(argv[argv.index("--batch-size") + 1]) if "--batch-size" in argv \
        else preset(DEFAULT_PRESET).train.batch_size
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip() or "unknown"
    lines = [f"# {date.today():%Y-%m-%d}, commit {commit}, {cpu_model()} ({os.cpu_count()} cores), torch "
             f"{torch.__version__}; python -m benchmarks.first_command --repeat {args.repeat}"
             f"{f' --threads {args.threads}' if args.threads else ''}; load average "
             f"(1 min) at start {os.getloadavg()[0]:.2f}",
             f"command: mnist-gan {shlex.join(argv)}"]
    print("\n".join(lines), flush=True)
    runs = []
    for number in range(1, args.repeat + 1):
        timing = timed_run(argv, args.threads)
        iterations, speed = training_speed(run_dir, batch_size)
        runs.append(timing | {"iterations": iterations, "speed": speed})
        line = (f"run {number}: {round(timing['wall'])} seconds wall, {round(timing['cpu'])} CPU seconds, "
                f"{iterations} iterations, {speed:.1f} iterations/s of wall time in the loop, "
                f"{iterations / timing['cpu']:.1f} iterations per CPU second in all; load average "
                f"{timing['load_before']:.2f} before and {timing['load_after']:.2f} after")
        print(line, flush=True)
        lines.append(line)
    best = min(runs, key=lambda r: r["wall"])
    written = what_it_writes(run_dir)
    figures = scores(run_dir, args.threads)
    shares = " ".join(f"{share:.3f}" for share in figures["class_histogram"])
    fastest = min(runs, key=lambda r: r["cpu"])
    one_core = f"; in one thread: about {round(fastest['cpu'])} seconds of one CPU core" if args.threads == 1 else ""
    summary = [f"first command: {round(best['wall'])} seconds wall (the fastest of {len(runs)}), "
               f"{best['speed']:.1f} iterations/s{one_core}",
               f"samples (mnist-gan evaluate, {figures['n']:,} of them, the last run's): classifier-FID "
               f"{figures['fid']:.1f}, classes covered {figures['classes_covered']} of {figures['num_classes']}, "
               f"classifier confidence {figures['confidence']:.3f}, recall {figures['recall']:.3f}",
               f"class shares 0-9: {shares}", f"writes: {written}", best["data"]]
    print("\n".join(summary))
    lines += summary
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"first_command_cpu_{date.today():%Y-%m-%d}.txt"
    with path.open("a", encoding="utf-8") as log:  # appended: a day's earlier runs are records too
        log.write("\n".join(lines) + "\n")
    print(f"saved {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
