"""`mnist-gan tune SPACE.toml`: its parser and its command (a thin layer over mnist_gan.training.tune).

The study's trials are run directories under --out; the table of trials and the best trial go to stdout, the
plots (history.png, importance.png) into --out, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.tune import MAX_BATCH, MAX_TRIALS


def add_tune_parser(commands) -> None:
    from mnist_gan.cli.parser import integer

    tune = commands.add_parser(
        "tune", help="search hyper-parameters with Optuna (trials trained K at a time)",
        description="Search the settings SPACE.toml names with Optuna: trials asked for K at a time and trained "
                    "together, scored by an evaluation figure (classifier-FID by default) at a budget of "
                    "iterations, bad ones pruned at evaluations. The study lives in OUT/study.db (run again to "
                    "resume it) or in the --storage database, which several mnist-gan tune processes, on one "
                    "machine or several, may share. Needs the [tune] extra. See docs/sweep.md.")
    tune.add_argument("space", help="a .toml or .json search space file")
    tune.add_argument("--out", help="the study directory: trial run directories, study.db, plots "
                                    "(default: runs/tune-<study name>)")
    tune.add_argument("--storage", metavar="URL", help="an Optuna storage URL shared by several workers, e.g. "
                                                       "postgresql://user:password@host/db (default: "
                                                       "sqlite:///OUT/study.db)")
    tune.add_argument("--trials", type=integer(1, MAX_TRIALS), help="trials in the study, all workers together "
                                                                     "(default: the space file's)")
    tune.add_argument("--batch", type=integer(1, MAX_BATCH), help="K: trials trained together (default: the "
                                                                   "space file's)")
    tune.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def cmd_tune(args: argparse.Namespace) -> int:
    from mnist_gan.settings.tune import read_space
    from mnist_gan.training.tune import require_optuna, run_study
    from mnist_gan.training.tune_report import trials_table, write_plots

    space = read_space(args.space)
    require_optuna()
    out = Path(args.out) if args.out else Path("runs") / f"tune-{space.name}"
    if args.storage is not None and not args.storage.strip():
        raise MnistGanError("--storage: give a database URL, e.g. postgresql://user@host/db")
    result = run_study(space, out, args.storage, trials=args.trials, batch=args.batch)
    plots = write_plots(result.study, out, space.objective.figure)
    best = result.best
    if args.json:
        print(json.dumps({"study": result.name, "storage": result.storage, "plots": [str(p) for p in plots],
                          "best": None if best is None else {"number": best.number, "value": best.value,
                                                             "params": best.params,
                                                             "run_dir": best.user_attrs.get("run_dir")},
                          "trials": [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
                                      "params": t.params, "iterations": t.user_attrs.get("iterations")}
                                     for t in result.trials]}))
        return 0
    print(f"study {result.name} in {result.storage}: {len(result.trials)} trials")
    print(trials_table(result.trials, space, None if best is None else best.number))
    if best is None:
        print("best: none yet (no trial completed)")
    else:
        settings = " ".join(f"{name}={value}" for name, value in best.params.items())
        print(f"best: trial {best.number}, {space.objective.figure} {best.value:.4g}: {settings}")
        print(f"best run: {best.user_attrs.get('run_dir')}")
    for plot in plots:
        print(f"plot: {plot}")
    return 0
