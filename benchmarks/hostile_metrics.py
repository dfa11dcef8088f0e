"""Peak memory of the readers of a run's metrics.jsonl on 2 MB hostile files (issue 27: "a 2 MB hostile file costs
at most a few hundred MB"): `mnist-gan diagnose` and serve's live reader (RunWatcher, as the page polls it), each in
a fresh interpreter, on each kind of file below and on a run with no metrics (the cost of the imports alone).

    python -m benchmarks.hostile_metrics                # all kinds, 2 MB each
    python -m benchmarks.hostile_metrics --mb 8

The peak is the child's ru_maxrss (os.wait4); importing torch (which diagnose does) accounts for most of it. A cap
on the child's address space (--memory-limit-mb) keeps a regression from taking the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"kind": "train", "epoch": 1, "d_loss": 0.7, "g_loss": 0.8, "d_x": 0.5, "d_g_z": 0.4, "images_per_s": 100.0}


def _fill(head: list[str], line, size: int) -> str:
    """`head`, then line(i) for i = 1, 2, ... until the text holds `size` bytes."""
    lines, total, i = list(head), sum(len(h) + 1 for h in head), 1
    while total < size:
        lines.append(line(i))
        total += len(lines[-1]) + 1
        i += 1
    return "\n".join(lines) + "\n"


def _wide(i: int, items: int = 30_000) -> str:
    return json.dumps({**TRAIN, "iteration": i, "class_histogram": [0] * items}, separators=(",", ":"))


def _raw(i: int, rest: str) -> str:
    """A train line written by hand: `rest` is the text after its iteration (JSON could not write most of these)."""
    return '{"kind":"train","iteration":' + str(i) + rest + "}"


KINDS = {  # name -> the file's text, given its size
    "real lines (a healthy run's)": lambda size: _fill([], lambda i: json.dumps({**TRAIN, "iteration": i,
                                                                                 "time": float(i)}), size),
    "tiny train lines": lambda size: _fill([], lambda i: _raw(i, ',"d_loss":0'), size),
    "one wide histogram, then tiny lines": lambda size: _fill([_wide(1)], lambda i: _raw(i + 1, ',"d_loss":0'), size),
    "wide histograms (1,000 classes)": lambda size: _fill([], lambda i: _wide(i, 1000), size),
    "lines of empty containers": lambda size: _fill([], lambda i: _raw(i, ',"d_loss":1,"x":[' + ",".join(["{}"] * 20_000)
                                                    + "]"), size),
    "numbers of 5,000 digits": lambda size: _fill([], lambda i: _raw(i, ',"d_loss":1' + "0" * 5000), size),
    "integers beyond 64 bits, floats beyond range": lambda size: _fill(
        [], lambda i: _raw(i, ',"d_loss":1e400,"g_loss":' + "9" * 39 + ',"d_x":-1e999'), size),
    "arrays nested 900 deep": lambda size: _fill([], lambda i: _raw(i, ',"d_loss":1,"x":' + "[" * 900 + "]" * 900),
                                                 size),
}

WATCH = """
import sys, time
from mnist_gan.run.watch import RunWatcher
watcher = RunWatcher(sys.argv[1])
reply, start = {"next": 0, "generation": None, "total": 1}, time.perf_counter()
while reply["next"] < reply["total"] or reply["generation"] is None:
    reply = watcher.metrics.since(reply["next"], reply["generation"])
    watcher.status()
print(reply["total"], len(watcher.metrics.train))
"""


def run(argv: list[str], memory_limit_mb: int) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak resident MB, last line of output) of `python ARGV` in a fresh process."""
    def limit() -> None:
        cap = memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, MNIST_GAN_OFFLINE="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                             preexec_fn=limit if memory_limit_mb else None)
    output = child.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    child.stdout.close()
    seconds = time.perf_counter() - start
    lines = [line for line in output.splitlines() if line.strip()]
    return os.waitstatus_to_exitcode(status), seconds, usage.ru_maxrss / 1024, lines[-1][:60] if lines else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=2.0, help="size of each hostile metrics.jsonl, in MB")
    parser.add_argument("--memory-limit-mb", type=int, default=4096, help="address-space cap of each child")
    args = parser.parse_args(argv)
    size = int(args.mb * 2**20)
    print(f"{'metrics.jsonl':<46} {'reader':<9} {'status':>6} {'seconds':>8} {'peak MB':>8}  last line")
    with tempfile.TemporaryDirectory() as scratch:
        for name, text in [("(none: the imports alone)", lambda size: ""), *KINDS.items()]:
            run_dir = Path(scratch) / "run"
            (run_dir / "samples").mkdir(parents=True, exist_ok=True)
            (run_dir / "config.json").write_text(json.dumps({"preset": "x", "train": {"iterations": 10**6}}))
            (run_dir / "metrics.jsonl").write_text(text(size))
            for reader, command in (("diagnose", ["-m", "mnist_gan", "diagnose", str(run_dir), "--no-plots"]),
                                    ("serve", ["-c", WATCH, str(run_dir)])):
                status, seconds, peak, last = run(command, args.memory_limit_mb)
                print(f"{name:<46} {reader:<9} {status:>6} {seconds:>8.1f} {peak:>8.0f}  {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
