"""A sweep directory: the index of its runs (sweep.json), and the results table across seeds (results.csv,
results.json, results.png). Each run is an ordinary run directory under runs/ (mnist_gan.run.directory).

    SWEEP_DIR/sweep.json     the sweep (mode, seeds, varied settings, base config) and each run: name,
                             setting, seed, directory, status
    SWEEP_DIR/runs/NAME/     one ordinary run directory per run
    SWEEP_DIR/results.csv    one row per setting: mean, std, min and max across seeds of each evaluated figure
    SWEEP_DIR/results.json   the same rows; results.png: the FID (else the first figure) of each setting
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from mnist_gan.errors import MnistGanError
from mnist_gan.io.files import atomic_path
from mnist_gan.io.untrusted import open_regular
from mnist_gan.run.directory import RunDir
from mnist_gan.run.history import read_run
from mnist_gan.settings.sweep import SweepConfig, describe
from mnist_gan.training.sweep import SweepRunOutcome, resume_runs_together, train_runs_together

INDEX, TABLE_CSV, TABLE_JSON, PLOT, RUNS = "sweep.json", "results.csv", "results.json", "results.png", "runs"
INDEX_VERSION = 1
MAX_INDEX_BYTES = 16 * 2**20
STATISTICS = ("mean", "std", "min", "max")
SKIP = ("kind", "iteration", "epoch", "time", "eval_n", "eval_seconds", "warnings", "class_histogram", "source",
        "checkpoint")


def run_sweep(sweep: SweepConfig, sweep_dir: str | Path, *, overwrite: bool = False,
              progress: bool = False) -> list[dict]:
    """Train every run of `sweep` together into SWEEP_DIR/runs/, then write the index and the results table;
    return the table's rows. A sweep directory that holds a sweep is refused unless `overwrite`."""
    from mnist_gan.gan.stacked import check_stackable

    sweep_dir, runs = Path(sweep_dir), sweep.runs()
    if (sweep_dir / INDEX).exists() and not overwrite:
        raise MnistGanError(f"{sweep_dir} holds a sweep already: continue it with --resume {sweep_dir}, or pass "
                            "--overwrite to start again")
    check_stackable([config for _, _, config in runs])  # before anything is written
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_index(sweep_dir, sweep, runs, {})
    outcomes = train_runs_together([config for _, _, config in runs],
                                   [run_dir(sweep_dir, name) for name, _, _ in runs],
                                   overwrite=overwrite, progress=progress)
    write_index(sweep_dir, sweep, runs, _statuses(runs, outcomes))
    return finish(sweep_dir)


def resume_sweep(sweep_dir: str | Path, *, progress: bool = False) -> list[dict]:
    """Continue the runs of the sweep in `sweep_dir` that had not ended (each from its newest checkpoint),
    then rewrite the index and the results table."""
    sweep_dir = Path(sweep_dir)
    index = read_index(sweep_dir)
    pending = [run for run in index["runs"] if run.get("status") not in ("finished", "diverged", "stopped")]
    for run in pending:
        if not RunDir(run_dir(sweep_dir, run["name"])).config_file.is_file():
            raise MnistGanError(f"run {run['name']} of {sweep_dir} was never started: start the sweep again "
                                "with --overwrite")
    if pending:
        outcomes = resume_runs_together([run_dir(sweep_dir, run["name"]) for run in pending], progress=progress)
        for run, outcome in zip(pending, outcomes, strict=True):
            run["status"] = outcome.status
        _write_text(sweep_dir / INDEX, json.dumps(index, indent=2) + "\n")
    return finish(sweep_dir)


def finish(sweep_dir: Path) -> list[dict]:
    """Write the results table of the sweep in `sweep_dir` (CSV, JSON, plot); return its rows."""
    rows = results_table(sweep_dir, read_index(sweep_dir))
    write_results(sweep_dir, rows)
    return rows


def _statuses(runs: list, outcomes: list[SweepRunOutcome]) -> dict[str, str]:
    return {name: outcome.status for (name, _, _), outcome in zip(runs, outcomes, strict=True)}


def run_dir(sweep_dir: Path, name: str) -> Path:
    return Path(sweep_dir) / RUNS / name


def write_index(sweep_dir: Path, sweep: SweepConfig, runs: list[tuple[str, int, object]],
                statuses: dict[str, str]) -> Path:
    """Write SWEEP_DIR/sweep.json atomically: the sweep and each run's name, setting, seed and status."""
    settings = sweep.settings() if sweep.space else [{}]
    index = {"format_version": INDEX_VERSION, "mode": sweep.mode, "seeds": sweep.seeds, "space": sweep.space,
             "base": sweep.base.to_dict(),
             "settings": [{"index": i, "values": s, "label": describe(s)} for i, s in enumerate(settings)],
             "runs": [{"name": name, "setting": setting, "seed": config.train.seed, "dir": f"{RUNS}/{name}",
                       "status": statuses.get(name, "pending")} for name, setting, config in runs]}
    return _write_text(Path(sweep_dir) / INDEX, json.dumps(index, indent=2) + "\n")


def read_index(sweep_dir: Path) -> dict:
    """SWEEP_DIR/sweep.json, checked (a regular file, bounded, the fields the sweep needs)."""
    path = Path(sweep_dir) / INDEX
    try:
        with open_regular(path, "sweep index", MAX_INDEX_BYTES) as (stream, _):
            index = json.loads(stream.read(MAX_INDEX_BYTES + 1).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise MnistGanError(f"{path}: not a sweep index ({str(error)[:100]})") from None
    runs = index.get("runs") if isinstance(index, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                             and isinstance(r.get("setting"), int) for r in runs):
        raise MnistGanError(f"{path}: not a sweep index (no list of runs)")
    for run in runs:
        if "/" in run["name"] or run["name"] in ("", ".", ".."):
            raise MnistGanError(f"{path}: a run name is not a plain name: {run['name'][:40]!r}")
    return index


def results_table(sweep_dir: Path, index: dict) -> list[dict]:
    """One row per setting: its label, runs, how many finished, and mean/std/min/max across its seeds of each
    figure of each run's last evaluation (runs without one are left out of the figures)."""
    rows = []
    for setting in index.get("settings", []):
        runs = [r for r in index["runs"] if r["setting"] == setting["index"]]
        figures: dict[str, list[float]] = {}
        for run in runs:
            for key, value in _last_figures(run_dir(sweep_dir, run["name"])).items():
                figures.setdefault(key, []).append(value)
        row = {"setting": setting["label"], "runs": len(runs),
               "finished": sum(r.get("status") == "finished" for r in runs),
               "diverged": sum(r.get("status") == "diverged" for r in runs)}
        for key, values in figures.items():
            row |= {f"{key}_{name}": value for name, value in zip(STATISTICS, _statistics(values), strict=True)}
        rows.append(row)
    return rows


def write_results(sweep_dir: Path, rows: list[dict]) -> list[Path]:
    """results.csv, results.json and results.png in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(sweep_dir / TABLE_CSV) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    paths = [sweep_dir / TABLE_CSV, _write_text(sweep_dir / TABLE_JSON, json.dumps(rows, indent=2) + "\n")]
    figure = "fid" if any("fid_mean" in row for row in rows) else next(
        (key[:-5] for row in rows for key in row if key.endswith("_mean")), None)
    if figure is not None:
        paths.append(_plot(rows, figure, sweep_dir / PLOT))
    return paths


def _last_figures(path: Path) -> dict[str, float]:
    try:
        _, _, evaluations = read_run(path)
    except MnistGanError:
        return {}
    if not evaluations:
        return {}
    return {key: float(value) for key, value in evaluations[-1].items() if key not in SKIP
            and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def _statistics(values: list[float]) -> tuple[float, float, float, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std, min(values), max(values)


def _plot(rows: list[dict], figure: str, path: Path) -> Path:
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend stays as it is

    shown = [row for row in rows if f"{figure}_mean" in row]
    fig = Figure(figsize=(max(4.0, 0.8 * len(shown) + 2), 3.5))
    ax = fig.subplots()
    ax.errorbar(range(len(shown)), [r[f"{figure}_mean"] for r in shown], yerr=[r[f"{figure}_std"] for r in shown],
                fmt="o", capsize=4)
    ax.set_xticks(range(len(shown)), [r["setting"] for r in shown], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{figure} (mean ± std across seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def _write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path
