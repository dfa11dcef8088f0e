"""Request latency of `mnist-gan serve` for the page's four kinds of request: grid, slider, interpolation, nice.

    taskset -c 0,1 python -m benchmarks.serve_latency runs/rec --requests 100 --save

Starts the real server (`python -m mnist_gan serve SOURCE --port 0`) in a subprocess and times HTTP requests over
loopback from this process, as the page sends them: a reroll (a new seed), a slider drag (one direction moving
through its range in steps of 0.1), a walk between two picked samples (9 frames, following the slider) and the
nice view (the best 16 of 320 by D). It prints the median and 95th percentile of the whole request time and the
server's own rendering time. Without a source it first trains a `recommended` generator for a few iterations:
latency depends on the networks' sizes, not on how well they are trained. Target: a slider move within 100 ms
on 2 CPU cores (run it under `taskset -c 0,1`, or on a 2-core machine), on an otherwise idle machine. --save
appends the printed output to benchmarks/results/serve_latency_cpu_YYYY-MM-DD.txt under benchmarks/record.py's
header.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import record

SLIDER_TARGET_MS = 100.0  # the budget for one slider move on 2 CPU cores
WARMUP = 5  # requests of each kind before timing: the first ones pay for one-time allocations


def train_tiny(out: Path, data: str) -> Path:
    """A `recommended` generator after 50 iterations (its networks at full size)."""
    command = [sys.executable, "-m", "mnist_gan", "train", "--preset", "recommended", "--iterations", "50",
               "--data", data, "--limit", "2000", "--log-every", "10", "--sample-every", "50", "--out", str(out),
               "--no-progress"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def start_server(source: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "mnist_gan", "serve", str(source), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    if not url.startswith("http://"):
        server.kill()
        raise SystemExit(f"the server did not start (it printed {url!r})")
    return server, url


def kinds(n: int) -> dict[str, callable]:
    """Each kind of request: i -> the query of the i-th request."""
    def slider(i: int) -> float:
        return round(-4 + (i % 81) * 0.1, 1)  # -4.0 .. 4.0 and round again, as a drag sends them

    return {
        f"grid (reroll, n={n})": lambda i: f"/api/samples?seed={i}&n={n}",
        "grid (reroll, n=64)": lambda i: f"/api/samples?seed={i}&n=64",
        f"slider (n={n})": lambda i: f"/api/samples?seed=0&n={n}&d={slider(i)}",
        "slider (n=64)": lambda i: f"/api/samples?seed=0&n=64&d={slider(i)}",
        "interpolation (9 frames)": lambda i: f"/api/walk?seed=0&n={n}&a=0&b=5&steps=9&d={slider(i)}",
        f"nice (best {n} of {20 * n})": lambda i: f"/api/samples?seed={i}&n={n}&nice=1",
    }


def measure(client: httpx.Client, url: str, query, requests: int) -> tuple[list[float], list[float]]:
    """(request times, server rendering times) in milliseconds."""
    for i in range(WARMUP):
        client.get(url + query(i)).raise_for_status()
    total, render = [], []
    for i in range(requests):
        start = time.perf_counter()
        reply = client.get(url + query(WARMUP + i))
        total.append(1000 * (time.perf_counter() - start))
        reply.raise_for_status()
        render.append(reply.json()["ms"])
    return total, render


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", help="a run directory or checkpoint of a recommended-preset generator "
                                                   "(default: train one briefly)")
    parser.add_argument("--requests", type=int, default=100, help="timed requests of each kind (default: 100)")
    parser.add_argument("-n", type=int, default=16, help="samples on the page (default: 16, as the page opens)")
    parser.add_argument("--data", default="mnist", help="data for the brief training run (default: mnist)")
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. that the machine was idle)")
    args = parser.parse_args()
    with record.saved_output("serve_latency", args.save, args.note), tempfile.TemporaryDirectory() as scratch:
        source = Path(args.source) if args.source else train_tiny(Path(scratch) / "run", args.data)
        server, url = start_server(source)
        try:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            print(f"mnist-gan serve {source} on {cores} CPU cores; {args.requests} requests of each kind after "
                  f"{WARMUP} warm-up ones")
            print(f"{'request':<26} {'median ms':>10} {'p95 ms':>8} {'server ms':>10}")
            with httpx.Client(timeout=60) as client:
                for name, query in kinds(args.n).items():
                    total, render = measure(client, url.rstrip("/"), query, args.requests)
                    print(f"{name:<26} {statistics.median(total):>10.1f} {p95(total):>8.1f} "
                          f"{statistics.median(render):>10.1f}", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
