"""losses.png: a run's losses, D's scores and (when evaluated) FID over its iterations."""

from __future__ import annotations

import io
import math
from pathlib import Path

from mnist_gan.io.files import atomic_write_bytes
from mnist_gan.run.records import is_number


def _values(records: list[dict], name: str) -> list[float]:
    """Each record's `name` as a float, NaN where a record lacks it or holds no number (a gap in the line)."""
    return [float(r[name]) if is_number(r.get(name)) else math.nan for r in records]


def plot_losses(history: list[dict], path: str | Path, evaluations: list[dict] | None = None) -> Path:
    """Plot d_loss and g_loss (and D's outputs, and FID when evaluated) over iterations to a PNG."""
    from matplotlib.figure import Figure  # not pyplot: a notebook's backend and open figures stay as they are

    steps = _values(history, "iteration")
    fig = Figure(figsize=(16.5 if evaluations else 11, 4))
    axes = fig.subplots(1, 3 if evaluations else 2)
    ax_loss, ax_prob = axes[:2]
    ax_loss.plot(steps, _values(history, "d_loss"), label="d_loss")
    ax_loss.plot(steps, _values(history, "g_loss"), label="g_loss")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_prob.plot(steps, _values(history, "d_x"), label="D(x)")
    ax_prob.plot(steps, _values(history, "d_g_z"), label="D(G(z))")
    ax_prob.set_xlabel("iteration")
    ax_prob.set_ylim(0, 1)
    ax_prob.legend()
    ax_prob.grid(alpha=0.3)
    if evaluations:
        ax_fid = axes[2]
        ax_fid.plot(_values(evaluations, "iteration"), _values(evaluations, "fid"), "o-", label="FID")
        ax_fid.set_xlabel("iteration")
        ax_fid.set_ylabel("FID (classifier features)")
        fids = [fid for fid in _values(evaluations, "fid") if math.isfinite(fid)]
        if fids and min(fids) > 0 and max(fids) > 10 * min(fids):  # FID falls by orders of magnitude as G learns
            ax_fid.set_yscale("log")
        ax_fid.legend()
        ax_fid.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
