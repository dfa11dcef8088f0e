"""Mutation testing of the modules whose mistakes cost the most: the losses, the metrics' maths, the training step
and its state (resume), checkpoints, the run directory's overwrite/rotate/truncate rules and the web API's path
checks. Each mutant (one small change to one function: an operator, a constant, a condition, a returned value) is
run against the fast tests that call that function; a mutant no test notices is a "survivor".

    pip install -e '.[mutation]'                          # mutmut, pinned
    nice -n 10 python -m benchmarks.mutation              # mutmut over the sample's unchecked mutants, one worker
    nice -n 10 python -m benchmarks.mutation --confirm    # the survivors against tests/test_mutation_survivors.py
    python -m benchmarks.mutation --report-only --save    # the table -> benchmarks/results/mutation_cpu_DATE.txt

What is mutated and which tests run are in pyproject.toml's [tool.mutmut]; mutmut copies the package into
mutants/ (git-ignored), puts it first on sys.path and forks one test process per mutant, running only the tests
that called the mutated function (recorded in a first, clean pass). Of the web API only the functions that check
paths are mutated (WEBAPI_FUNCTIONS): its other handlers encode images and JSON. mutmut runs with one OpenMP
thread (see run_mutmut). STRIDE picks every Nth mutant of each module; a run stopped early keeps its results, and
the next run takes up the unchecked ones.

The table (mutants, checked, killed, survived, timeouts, unchecked, kill rate per module) and every survivor
(file:line and the change) are printed and saved. Killed counts include the survivors that the new tests kill
(--confirm: each survivor run against tests/test_mutation_survivors.py in mutmut's copy, with the mutant switched
on through MUTANT_UNDER_TEST as mutmut's workers do, after a control run with none). The rest are explained in
docs/reliability.md ("Mutation testing").
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MUTANTS = REPO / "mutants"
ORIGINALS = MUTANTS / "originals"  # each module as it was when mutmut mutated it: the survivors' line numbers

MODULES = {  # module -> mutant-name patterns (mutmut's fnmatch names: package.module.x_function / xǁClassǁmethod)
    "mnist_gan/gan/losses.py": ["mnist_gan.gan.losses.*"],
    "mnist_gan/evaluation/metrics.py": ["mnist_gan.evaluation.metrics.*"],
    "mnist_gan/gan/step.py": ["mnist_gan.gan.step.*"],
    "mnist_gan/run/checkpoint.py": ["mnist_gan.run.checkpoint.*"],
    "mnist_gan/run/directory.py": ["mnist_gan.run.directory.*"],
    "mnist_gan/serve/webapi.py": None,  # filled below: the path checks only
}
WEBAPI_FUNCTIONS = ("x__loss_name", "x_load_explorer", "x_load_newest", "xǁApiǁ__init__", "xǁApiǁ_need_run",
                    "xǁApiǁrun_grid", "xǁApiǁreload")
MODULES["mnist_gan/serve/webapi.py"] = [f"mnist_gan.serve.webapi.{name}__mutmut_*" for name in WEBAPI_FUNCTIONS]

# Every STRIDE-th mutant of a module (by name, so the same ones each time): on 2 shared cores a mutant whose tests
# train tiny runs costs 5-60 s, and all ~2,100 would take hours. The kill rate of a sample of n estimates the
# module's within about 1.96 * sqrt(r (1 - r) / n); --stride 1 runs them all.
STRIDE = {"mnist_gan/gan/losses.py": 2, "mnist_gan/evaluation/metrics.py": 4, "mnist_gan/gan/step.py": 10,
          "mnist_gan/run/checkpoint.py": 8, "mnist_gan/run/directory.py": 6, "mnist_gan/serve/webapi.py": 1}

KILLED, TIMEOUT, SURVIVED = {1, 3}, {36, -24, 24, 152, 255}, {0}
NO_TESTS = {5, 33}


def header(argv: list[str]) -> str:
    """One line: date, commit, CPU model, torch version and the command."""
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    command = shlex.join(["python", "-m", "benchmarks.mutation", *argv])
    return f"# {today} UTC, commit {commit}, CPU {cpu}, torch {torch.__version__}, mutmut 3.8.1: {command}"


def snapshot(modules: list[str]) -> None:
    """Keep a copy of each module that mutmut will (re)mutate: it does so when the source is newer than its copy."""
    import shutil

    for module in modules:
        source, mutated, kept = REPO / module, MUTANTS / module, ORIGINALS / module
        if not mutated.exists() or not kept.exists() or source.stat().st_mtime > mutated.stat().st_mtime:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, kept)


def run_mutmut(patterns: list[str], max_children: int) -> int:
    """`mutmut run` over the mutants matching `patterns` (every one re-run), from the repository root."""
    command = ["mutmut", "run", "--max-children", str(max_children), *patterns]
    print("$", shlex.join(command), file=sys.stderr)
    # One thread: mutmut forks each test process from one that already ran torch, and a forked child of a
    # process whose OpenMP pool has started hangs in its first parallel op (every such mutant a false timeout).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env).returncode


def _meta(module: str) -> dict[str, int | None]:
    path = MUTANTS / (module + ".meta")
    return json.loads(path.read_text())["exit_code_by_key"] if path.is_file() else {}


def _first_line(source: str, name: str) -> int:
    """The first line (decorator or def) of function or method `name` (mutmut's x_f or xǁClassǁf) in `source`."""
    import ast

    tree = ast.parse(source)
    scope, func = tree.body, name[2:]
    if name.startswith("xǁ"):
        cls, func = name[2:].split("ǁ")
        scope = next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == cls)
    node = next(node for node in scope if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.name == func)
    return min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])


def describe(module: str, mutant: str) -> str:
    """`file:line  - old / + new` for one mutant, from mutmut's copy of the module (its diff against the original)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    os.chdir(REPO)
    diff = get_diff_for_mutant(mutant, path=Path(module)).splitlines()
    function = mutant.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    original = ORIGINALS / module if (ORIGINALS / module).is_file() else REPO / module
    line = _first_line(original.read_text(), function)
    body = diff[2:]
    if body and body[0].startswith("@@"):  # the hunk counts from the function's first line as 1
        context = next((i for i, text in enumerate(body[1:]) if text.startswith(("-", "+"))), 0)
        line += int(body[0].split()[1].split(",")[0].lstrip("-")) - 1 + context
    old = [text for text in body[1:] if text.startswith("-")]
    new = [text for text in body[1:] if text.startswith("+")]
    change = " / ".join(part[0] + " " + part[1:].strip() for part in old + new)
    return f"{module}:{line}  {mutant.rsplit('.', 1)[1]}  {change}"


def _number(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def _codes(module: str) -> dict[str, int | None]:
    """mutmut's exit code of each mutant of `module` that MODULES selects (None: not run yet)."""
    import fnmatch

    return {name: code for name, code in sorted(_meta(module).items(), key=lambda item: _number(item[0]))
            if any(fnmatch.fnmatch(name, pattern) for pattern in MODULES[module])}


def _sample(module: str, stride: int) -> list[str]:
    """Every `stride`-th mutant of `module`, in the order of function and number."""
    return list(_codes(module))[::stride]


def _confirmed() -> dict[str, bool]:
    """{mutant: killed?} of the survivors re-run against tests/test_mutation_survivors.py (--confirm)."""
    path = MUTANTS / "confirmed.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def survivors(modules: list[str], confirmed: bool = False) -> list[tuple[str, str]]:
    """(module, mutant) of each mutant that no test noticed (less those the new tests kill, if `confirmed`)."""
    killed = _confirmed() if confirmed else {}
    return [(module, name) for module in modules for name, code in _codes(module).items()
            if code in SURVIVED | NO_TESTS and not killed.get(name)]


def confirm(modules: list[str]) -> None:
    """Run each survivor against tests/test_mutation_survivors.py alone, in mutmut's copy with the mutant switched
    on (MUTANT_UNDER_TEST, as mutmut's own workers do); record which of them those tests kill."""
    import shutil

    shutil.copy2(REPO / "tests" / "test_mutation_survivors.py", MUTANTS / "tests" / "test_mutation_survivors.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "no:randomly",
               "tests/test_mutation_survivors.py"]

    def status(mutant: str) -> int:
        try:
            return subprocess.run(command, cwd=MUTANTS, env={**env, "MUTANT_UNDER_TEST": mutant},
                                  capture_output=True, timeout=300).returncode
        except subprocess.TimeoutExpired:
            return -1

    if status("") != 0:  # the control: with no mutant switched on, every test must pass
        raise SystemExit("tests/test_mutation_survivors.py fails on the unmutated copy under mutants/")
    results = _confirmed()
    for _module, name in survivors(modules, confirmed=True):  # the ones no earlier --confirm killed
        results[name] = status(name) != 0
        print(f"{'killed  ' if results[name] else 'survived'} {name}", file=sys.stderr)
        (MUTANTS / "confirmed.json").write_text(json.dumps(results, indent=1))


def report(argv: list[str]) -> str:
    """The table and the survivors, as printed and saved."""
    rows, killed_new = [], _confirmed()
    keys = ("mutants", "checked", "killed", "new_tests", "survived", "timeout", "no_tests", "unchecked")
    totals = dict.fromkeys(keys, 0)
    for module in MODULES:
        codes = _codes(module)
        new = sum(code in SURVIVED | NO_TESTS and bool(killed_new.get(name)) for name, code in codes.items())
        count = dict(mutants=len(codes), checked=sum(c is not None for c in codes.values()),
                     killed=sum(c in KILLED for c in codes.values()) + new, new_tests=new,
                     survived=sum(c in SURVIVED for c in codes.values()) - sum(
                         c in SURVIVED and bool(killed_new.get(n)) for n, c in codes.items()),
                     timeout=sum(c in TIMEOUT for c in codes.values()),
                     no_tests=sum(c in NO_TESTS for c in codes.values()) - sum(
                         c in NO_TESTS and bool(killed_new.get(n)) for n, c in codes.items()),
                     unchecked=sum(c is None for c in codes.values()))
        for key in totals:
            totals[key] += count[key]
        rows.append((module, count))
    rows.append(("all", totals))

    def rate(count: dict) -> str:
        return f"{100 * (count['killed'] + count['timeout']) / count['checked']:.1f}%" if count["checked"] else "-"

    out = [header(argv), "# nice -n 10, one worker, OMP_NUM_THREADS=1; CPU machine with 2 cores shared with other jobs",
           f"{'module':32} {'mutants':>7} {'checked':>7} {'killed':>6} {'(new tests)':>11} {'survived':>8} "
           f"{'timeouts':>8} {'no tests':>8} {'unchecked':>9} {'kill rate':>9}"]
    for module, c in rows:
        out.append(f"{module:32} {c['mutants']:7d} {c['checked']:7d} {c['killed']:6d} {c['new_tests']:11d} "
                   f"{c['survived']:8d} {c['timeout']:8d} {c['no_tests']:8d} {c['unchecked']:9d} {rate(c):>9}")
    if totals["unchecked"]:
        out.insert(2, f"# PARTIAL: {totals['checked']} of {totals['mutants']} mutants checked (mutmut's fastest-first "
                      "order, then every STRIDE-th mutant); the rates are those of the checked mutants")
    out += ["", "kill rate = (killed + timeouts) / checked; killed includes '(new tests)': survivors of mutmut's run that "
            "tests/test_mutation_survivors.py kills (--confirm); a survivor is a mutant no test noticed (including "
            "'no tests': no selected test calls the function); unchecked: not run (see the strides)"]
    left = survivors(list(MODULES), confirmed=True)
    out.append(f"survivors ({len(left)}):")
    out += ["  " + describe(module, name) for module, name in left]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-only", action="store_true", help="tabulate the results under mutants/ only")
    parser.add_argument("--max-children", type=int, default=1, help="test processes at once (default 1)")
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only this module (repeatable)")
    parser.add_argument("--stride", type=int, help="every Nth mutant of each module (default: STRIDE's)")
    parser.add_argument("--confirm", action="store_true",
                        help="run the survivors against tests/test_mutation_survivors.py and record which it kills")
    parser.add_argument("--save", action="store_true", help="save to benchmarks/results/mutation_cpu_DATE.txt")
    args = parser.parse_args(argv)
    modules = args.module or list(MODULES)
    if args.confirm:
        confirm(modules)
    elif not args.report_only:
        # the sample's mutants not run yet (mutmut re-runs every mutant it is given by name)
        codes = {module: _codes(module) for module in modules}
        names = [name for module in modules for name in _sample(module, args.stride or STRIDE[module])
                 if codes[module][name] is None]
        snapshot(modules)
        if names:
            status = run_mutmut(names, args.max_children)
            if status != 0:
                print(f"mutmut run exited with status {status}", file=sys.stderr)
    text = report(argv)
    print(text)
    if args.save:
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"mutation_cpu_{today}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
