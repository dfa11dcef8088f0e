"""`mnist-gan sweep`: train K runs of one architecture in one process as one batched computation (see
docs/sweep.md). The parser and the command; what it does is mnist_gan.training.sweep_results'.

    mnist-gan sweep --seeds 0-7 --out sweeps/seeds                    # 8 seeds of the default preset
    mnist-gan sweep --seeds 0-2 --lr 1e-4,2e-4,4e-4 --out sweeps/lr   # a grid: 3 settings x 3 seeds
    mnist-gan sweep --file sweep.toml --out sweeps/x                  # the same from a sweep file
    mnist-gan sweep --resume sweeps/lr                                # continue after a kill
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import DEFAULT_PRESET, PRESETS, SECTIONS, apply_overrides, preset
from mnist_gan.settings.fieldtypes import field_kinds
from mnist_gan.settings.sweep import (
    MODES,
    PER_RUN,
    SweepConfig,
    check_sweep,
    parse_seeds,
    parse_values,
    sweep_from_file,
)

logger = logging.getLogger(__name__)

SHOWN = ("fid", "kid", "precision", "recall")  # the figures printed per setting (results.csv has them all)


def add_sweep_parser(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="train several runs (seeds, learning rates, ...) together in one process",
        description="Train K runs of one architecture as one batched computation: each run is an ordinary run "
                    "directory under OUT/runs/, and OUT holds an index and a results table (mean, std, min, max "
                    "of each evaluated figure across seeds, one row per setting). Per-run settings take "
                    "comma-separated values (--lr 1e-4,2e-4); every other flag is the same for all runs.",
        usage="mnist-gan sweep [--preset NAME] [--seeds 0-7] [--file SWEEP_FILE] (--out DIR | --resume DIR) "
              "[options]")
    sweep.add_argument("--preset", choices=list(PRESETS), help=f"base configuration (default: {DEFAULT_PRESET})")
    sweep.add_argument("--seeds", help="seeds: a range 0-7, a list 0,3,5 or both (default: 0)")
    sweep.add_argument("--mode", choices=MODES, help="grid: every combination of the lists; zip: their i-th "
                                                     "values together (default: grid)")
    sweep.add_argument("--file", metavar="SWEEP_FILE", help="a .toml or .json sweep file (see docs/sweep.md); "
                                                            "flags override its base settings")
    sweep.add_argument("--out", metavar="DIR", help="the sweep directory")
    sweep.add_argument("--resume", metavar="DIR", help="continue this sweep's unfinished runs")
    sweep.add_argument("--overwrite", action="store_true", help="replace the sweep (and its runs) in --out")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.add_argument("--json", action="store_true", help="print the results table as JSON")
    values = preset(DEFAULT_PRESET).to_dict()
    for section, cls in SECTIONS.items():
        group = sweep.add_argument_group(f"{section} settings (per-run ones take a comma-separated list)")
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if key == "train.seed":
                continue
            kind, _ = field_kinds(cls)[f.name]
            help_text = f"{f.metadata.get('help', '')} (default: {values[section][f.name]})".replace("%", "%%")
            if kind is bool and key not in PER_RUN:
                group.add_argument("--" + f.name.replace("_", "-"), dest=key, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_text)
            else:
                group.add_argument("--" + f.name.replace("_", "-"), dest=key, default=argparse.SUPPRESS,
                                   metavar="V1,V2" if key in PER_RUN else f.name.upper(), help=help_text)


def sweep_from_args(args: argparse.Namespace) -> SweepConfig:
    """The sweep the flags (and --file) describe: per-run flags with several values are varied, the rest set the
    base configuration of every run."""
    given = {key: value for key, value in vars(args).items() if "." in key}
    lists = {key: parse_values(key, text) for key, text in given.items()}
    varied = {key: values for key, values in lists.items() if len(values) > 1}
    if any(key not in PER_RUN for key in varied):
        name = next(key for key in varied if key not in PER_RUN)
        raise MnistGanError(f"--{name.split('.')[1].replace('_', '-')} takes one value: it changes shapes or the "
                            "code path, which every run of a sweep shares")
    fixed = {key: values[0] for key, values in lists.items() if len(values) == 1}
    if args.file:
        sweep = sweep_from_file(args.file, fixed)
        if args.preset:
            raise MnistGanError("--preset and --file: name the preset in the sweep file")
    else:
        sweep = SweepConfig(apply_overrides(preset(args.preset or DEFAULT_PRESET), fixed))
    if args.seeds is not None:
        sweep.seeds = parse_seeds(args.seeds)
    if args.mode is not None:
        sweep.mode = args.mode
    sweep.space = {**sweep.space, **varied}
    return check_sweep(sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from mnist_gan.training.sweep_results import TABLE_CSV, read_index, resume_sweep, run_sweep

    progress = not args.no_progress and logger.isEnabledFor(logging.INFO)
    if args.resume:
        if args.out or args.file or any("." in key for key in vars(args)):
            raise MnistGanError("--resume continues a sweep with its own settings; pass no other settings")
        rows, where = resume_sweep(args.resume, progress=progress), args.resume
    else:
        if not args.out:
            raise MnistGanError("name the sweep directory: --out DIR (or continue one: --resume DIR)")
        sweep = sweep_from_args(args)
        logger.info(f"sweep: {len(sweep.runs())} runs into {args.out}")
        rows, where = run_sweep(sweep, args.out, overwrite=args.overwrite, progress=progress), args.out
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        figures = "  ".join(f"{name} {row[name + '_mean']:.4g} ± {row[name + '_std']:.2g}"
                            for name in SHOWN if name + "_mean" in row)
        print(f"{row['setting']}: {row['finished']}/{row['runs']} finished"
              + (f", {row['diverged']} diverged" if row["diverged"] else "") + (f"  {figures}" if figures else ""))
    print(f"results: {where}/{TABLE_CSV}")
    interrupted = any(run.get("status") == "interrupted" for run in read_index(where)["runs"])
    return 130 if interrupted else 0
