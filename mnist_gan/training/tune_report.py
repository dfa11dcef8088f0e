"""What `mnist-gan tune` shows of a study: a table of its trials, its best trial, and two plots written into the
study directory, history.png (each trial's score, pruned trials where they stopped, the best so far) and
importance.png (Optuna's fANOVA importance of each parameter, which needs at least two complete trials).
Plain matplotlib Figures, not pyplot: a notebook's backend and open figures stay as they are.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from mnist_gan.errors import clip
from mnist_gan.io.files import atomic_write_bytes
from mnist_gan.settings.tune import TuneSpace

logger = logging.getLogger(__name__)

HISTORY_PLOT = "history.png"
IMPORTANCE_PLOT = "importance.png"
MIN_TRIALS_FOR_IMPORTANCE = 2


def trials_table(trials: list, space: TuneSpace, best_number: int | None) -> str:
    """One line per trial: number, state, score, iterations trained, the parameters; the best is starred."""
    names = [p.name for p in space.params]
    header = ["trial", "state", space.objective.figure, "iterations", *names]
    rows = [header]
    for trial in trials:
        score = "" if trial.value is None else f"{trial.value:.4g}"
        if trial.value is None and trial.intermediate_values:  # a pruned trial: its last report
            step = max(trial.intermediate_values)
            score = f"({trial.intermediate_values[step]:.4g})"
        mark = "*" if trial.number == best_number else ""
        rows.append([f"{trial.number}{mark}", trial.state.name.lower(), score,
                     str(trial.user_attrs.get("iterations", "")), *(_shown(trial.params.get(n)) for n in names)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)


def _shown(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_plots(study, study_dir: Path, figure: str) -> list[Path]:
    """history.png always; importance.png with two complete trials or more (else a note says why not)."""
    written = [_save(_history_figure(study, figure), study_dir / HISTORY_PLOT)]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        logger.info(f"no {IMPORTANCE_PLOT}: parameter importance needs {MIN_TRIALS_FOR_IMPORTANCE} complete "
                    f"trials, the study has {len(complete)}")
        return written
    import optuna

    try:
        importances = optuna.importance.get_param_importances(study)
    except Exception as error:  # noqa: BLE001 - e.g. every complete trial has the same parameters
        logger.warning(f"no {IMPORTANCE_PLOT}: {clip(error)}")
        return written
    written.append(_save(_importance_figure(importances), study_dir / IMPORTANCE_PLOT))
    return written


def _history_figure(study, figure: str):
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in study.trials if t.state.name == "PRUNED" and t.intermediate_values]
    ax.scatter([t.number for t in complete], [t.value for t in complete], label="complete", zorder=3)
    ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               marker="x", color="gray", label="pruned (last evaluation)", zorder=3)
    if complete:
        pick = min if study.direction.name == "MINIMIZE" else max
        best, best_so_far = None, []
        for trial in complete:
            best = trial.value if best is None else pick(best, trial.value)
            best_so_far.append(best)
        ax.step([t.number for t in complete], best_so_far, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(figure)
    ax.set_title(f"study {study.study_name}: {study.direction.name.lower()} {figure}")
    ax.legend()
    fig.tight_layout()
    return fig


def _importance_figure(importances: dict[str, float]):
    from matplotlib.figure import Figure

    names = list(importances)[::-1]  # the most important on top
    fig = Figure(figsize=(7, 1 + 0.5 * len(names)))
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA, share of the score's variance)")
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())  # two workers writing it at once: one whole plot wins
    return path
