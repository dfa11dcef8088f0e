"""The evidence of `mnist-gan diagnose` as plots: one PNG per kind of evidence a run logged, with the iterations
where problems were first seen marked. Drawn with matplotlib's Figure API (not pyplot, so a notebook's backend and
open figures stay as they are) and written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_gan.diagnosis.detectors import histogram_points
from mnist_gan.errors import MnistGanError
from mnist_gan.run.history import CLASS_HISTOGRAM, D_HELDOUT, D_TRAIN_REAL, GRAD_NORM_D, GRAD_NORM_G, Series
from mnist_gan.run.records import is_number


def write_plots(report, records: list[dict], evaluations: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per kind of evidence the run has (losses, D's scores, gradient norms, classes over time, FID),
    each with the iterations where problems were first seen marked; written atomically."""
    series = Series.from_records(records)
    steps = series.iteration
    panels = []
    if len(series):
        panels.append(("losses", "loss", [(steps, series.get("d_loss"), "d_loss"),
                                          (steps, series.get("g_loss"), "g_loss")], "linear"))
        scores = [(steps, series.get(k), label) for k, label in (("d_x", "D(x)"), ("d_g_z", "D(G(z))"),
                                                                 (D_TRAIN_REAL, "D(training reals), eval"),
                                                                 (D_HELDOUT, "D(held-out reals), eval"))
                  if series.has(k)]
        panels.append(("scores", "D's score (the loss's [0, 1] reading)", scores, "linear"))
    if series.has(GRAD_NORM_G) or series.has(GRAD_NORM_D):
        panels.append(("grad_norms", "gradient L2 norm", [(steps, series.get(k), k) for k in
                                                          (GRAD_NORM_G, GRAD_NORM_D)], "log"))
    fids = [(e["iteration"], float(e["fid"])) for e in evaluations if is_number(e.get("fid"))]
    if fids:
        panels.append(("fid", "FID (classifier features)", [(np.array([i for i, _ in fids]),
                                                             np.array([f for _, f in fids]), "FID")], "log"))
    marks = [(f.first_iteration, f.code) for f in report.findings if f.first_iteration is not None]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MnistGanError(f"{out_dir}: cannot write ({error.strerror or error})") from None
    written = [_save(_line_figure(title, lines, scale, marks), out_dir / f"{name}.png")
               for name, title, lines, scale in panels]
    histogram = _class_points(series, evaluations)
    if histogram is not None:
        written.append(_save(_class_figure(*histogram, marks), out_dir / "classes.png"))
    return written


def _class_points(series: Series, evaluations: list[dict]):
    if CLASS_HISTOGRAM in series.values:
        rows = np.isfinite(series.values[CLASS_HISTOGRAM]).all(1)
        if rows.any():
            return series.iteration[rows], series.values[CLASS_HISTOGRAM][rows], "fixed-noise probe"
    points = histogram_points(evaluations)
    if points:
        return np.array([e["iteration"] for e in points]), np.array([e[CLASS_HISTOGRAM] for e in points]), \
            "evaluations"
    return None


def _line_figure(title: str, lines, scale: str, marks):
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    for x, y, label in lines:
        if np.isfinite(y).any():
            keep = np.isfinite(y) & ((y > 0) if scale == "log" else True)
            ax.plot(x[keep], y[keep], label=label)
    if scale == "log" and ax.lines:
        ax.set_yscale("log")
    _mark(ax, marks)
    ax.set_xlabel("iteration")
    ax.set_ylabel(title)
    if ax.lines:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _class_figure(iterations: np.ndarray, shares: np.ndarray, source: str, marks):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    ax.stackplot(iterations, shares.T * 100, labels=[str(c) for c in range(shares.shape[1])])
    _mark(ax, marks)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"% of samples per class ({source})")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def _mark(ax, marks) -> None:
    for iteration, code in marks:
        ax.axvline(iteration, color="red", alpha=0.4, linestyle="--")
        ax.annotate(code, (iteration, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                    va="top", ha="right", color="red")


def _save(fig, path: Path) -> Path:
    import io

    from mnist_gan.io.files import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path
