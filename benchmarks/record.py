"""Save what a benchmark prints under benchmarks/results/, behind a header saying when, where and how.

    with record.saved_output("seed_run", args.save):
        ...  # everything printed to stdout is also appended to benchmarks/results/seed_run_cpu_YYYY-MM-DD.txt

The header's first line names the date (UTC), the git commit, the CPU model (/proc/cpuinfo), the torch version,
its thread count and the command; `note` adds lines of its own (e.g. that the machine was shared).
"""

from __future__ import annotations

import contextlib
import datetime
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo and what tells its generations apart (family, model and the
    vector units that decide the speed of these steps: AVX-512, its bf16 instructions, AMX), e.g.
    "AMD EPYC (family 23 model 1; AVX2, no AVX-512)"; else what the platform module says. Shared machines
    report one model name for CPUs of several generations, so the name alone does not say which ran."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first processor's block is enough
            fields.setdefault(key.strip(), value.strip())
        return f"{fields['model name']} ({_generation(fields)})"
    except (OSError, KeyError):
        return platform.processor() or platform.machine()


def _generation(fields: dict[str, str]) -> str:
    flags = set(fields.get("flags", "").split())
    units = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in flags]
    vector = "AVX-512" if "avx512f" in flags else ("AVX2, no AVX-512" if "avx2" in flags else "no AVX2")
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; " + ", ".join([vector, *units])


def commit() -> str:
    """`git rev-parse --short HEAD` of the repository, or 'unknown' outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header(name: str) -> str:
    """One line: date, commit, CPU, torch and the command that printed the file."""
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = shlex.join(["python", "-m", f"benchmarks.{name}", *sys.argv[1:]])
    return (f"# {today} UTC, commit {commit()}, CPU {cpu_model()} ({torch.get_num_threads()} threads), "
            f"torch {torch.__version__}: {command}")


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


@contextlib.contextmanager
def saved_output(name: str, save: bool, note: str = ""):
    """Print the header; with save, also write it and everything printed to stdout inside the block to
    benchmarks/results/NAME_cpu_YYYY-MM-DD.txt: one file per benchmark and day, each run appended under its own
    header."""
    lines = header(name) + "".join(f"\n# {line}" for line in note.splitlines() if line)
    if not save:
        print(lines, flush=True)
        yield None
        return
    path = RESULTS / f"{name}_cpu_{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}.txt"
    with open(path, "a", encoding="utf-8") as file, contextlib.redirect_stdout(_Tee(sys.stdout, file)):
        print(lines, flush=True)
        yield path
    print(f"saved: {path}", file=sys.stderr)
