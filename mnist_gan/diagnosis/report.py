"""The report of `mnist-gan diagnose RUN_DIR`: what happened to a run and when, the evidence, and what to try.

It reads what a run wrote (its config, metrics lines, sample grids and checkpoints), whatever version of
mnist-gan wrote it, while the run trains or after it stopped; it replays the detectors of
mnist_gan.diagnosis.detectors over the run's history, so each problem is dated at the log step where training
would have raised it, and assembles their findings, with DETECTORS' advice, into a Report. Detectors whose data
the run did not log are listed with the reason.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_gan.diagnosis.detectors import (
    DETECTORS,
    evaluation_problems,
    record_problems,
    sample_problems,
    untried,
)
from mnist_gan.diagnosis.signs import Problem
from mnist_gan.gan.losses import LOSSES
from mnist_gan.run.directory import RunDir
from mnist_gan.run.history import CLASS_HISTOGRAM, CLASS_PROBE, CLASS_REFERENCE, Series, newest, read_run
from mnist_gan.run.history import EVALUATE as EVALUATE_SOURCE
from mnist_gan.run.records import EpochLength, finite_values, is_number, read_limited
from mnist_gan.run.records import planned_iterations as planned_length
from mnist_gan.sampling.grids import read_grid

LOSS_FIELDS = ("d_loss", "g_loss")
REPLAYS = 2000  # at most this many log steps are replayed (a long run's problems are dated to within a few lines)
MAX_GRID_BYTES = 16 << 20  # a sample grid larger than this is not one a run wrote (a grid of 64 digits: ~60 KB)
GRID_STRIDE = 20  # at most this many-th grid is re-read for flat/collapse checks, so long runs stay quick


@dataclass
class Finding:
    code: str
    title: str
    first_iteration: int | None
    last_iteration: int | None
    active_at_end: bool
    message: str  # what the detector found the first time (what to try is in `flags`)
    evidence: dict
    causes: list[str]
    flags: list[str]
    source: str  # "records", "evaluations", "grids" or "warnings logged during training"
    last_message: str = ""  # what the detector said the last time it fired, where that differs


@dataclass
class Report:
    run_dir: str
    status: str  # "finished", "stopped", "running", "empty", or "ended" (its planned length is unknown)
    iteration: int
    planned_iterations: int | None
    config: dict
    records: int
    evaluations: int
    findings: list[Finding] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # detector -> why it could not run
    timeline: list[dict] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}

    def to_json(self) -> str:
        """The report as strict JSON (`diagnose --json`): a NaN or infinity anywhere in it (a hand-edited
        config.json's setting, a figure) is written as null, as JSON has no NaN."""
        return json.dumps(finite_values(self.to_dict()), allow_nan=False)


# ------------------------------------------------------------------------------------ reading a run
def run_status(run_dir: Path, iteration: int, planned: int | None) -> str:
    if _locked(run_dir):
        return "running"
    if iteration == 0:
        return "empty"
    if planned is None:
        return "ended"
    return "finished" if iteration >= planned else "stopped"


def _locked(run_dir: Path) -> bool:
    """Whether a training process holds the run's lock (mnist_gan.io.files.exclusive_lock); probed, not taken."""
    try:
        import fcntl
        import os
    except ImportError:
        return False
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock at once
    return False


def planned_iterations(config: dict, records: list[dict]) -> int | None:
    """The run's total when it is known exactly: --iterations, else --epochs times the batches per epoch its
    records pin down (mnist_gan.run.records' rule); None otherwise."""
    total, exact = planned_length(_train(config), EpochLength.of(records), bool(records))
    return total if exact else None


def _preset(config: dict) -> str:
    """config.json's preset as the report names it: '?' unless it is a short text (the file is a stranger's)."""
    preset = config.get("preset")
    return preset if isinstance(preset, str) and len(preset) <= 80 else "?"


def _train(config: dict) -> dict:
    return config.get("train") if isinstance(config.get("train"), dict) else {}


# ------------------------------------------------------------------------------------ replaying the detectors
def build_report(run_dir: str | Path, history: tuple[dict, list[dict], list[dict]] | None = None) -> Report:
    """The diagnosis of a run: every detector replayed over its history (read_run's, unless given); see the
    module docstring."""
    run = RunDir(run_dir)
    config, records, evaluations = history or read_run(run.path)
    last = max([r["iteration"] for r in records + evaluations], default=0)
    planned = planned_iterations(config, records)
    report = Report(str(run.path), run_status(run.path, last, planned), last, planned, config, len(records),
                    len(evaluations))
    loss_name = _train(config).get("loss", "non-saturating")
    loss = LOSSES.get(loss_name) if isinstance(loss_name, str) else None
    absolute_score = loss is None or loss.absolute_score  # D's scores read on a fixed scale (not a WGAN critic's)
    events: dict[str, list[Problem]] = {}
    series = Series.from_records(records)
    reference, kind = newest(records, CLASS_REFERENCE), newest(records, CLASS_PROBE)
    stride = max(1, len(series) // REPLAYS)
    for n in [*range(stride, len(series), stride), len(series)] if len(series) else []:
        for problem in record_problems(series.upto(n), absolute_score, reference, kind, config=config):
            events.setdefault(problem.code, []).append(problem)
    for n in range(1, len(evaluations) + 1):
        for problem in evaluation_problems(evaluations[:n], reference if kind == "classes" else None, config=config):
            events.setdefault(problem.code, []).append(problem)
    grid_problems, last_grid = _grid_problems(run, config)
    for problem in grid_problems:
        events.setdefault(problem.code, []).append(problem)
    ends = {"records": int(series.iteration[-1]) if len(series) else None,
            "evaluations": evaluations[-1]["iteration"] if evaluations else None, "grids": last_grid}
    for code, seen in events.items():
        report.findings.append(_finding(code, seen, ends, config))
    report.findings += _non_finite_losses(records, config)
    _logged_warnings(sorted(records + evaluations, key=lambda r: r["iteration"]), report)
    report.findings.sort(key=lambda f: (f.first_iteration is None, f.first_iteration or 0))
    report.skipped = {code: _why_not(code, records, evaluations, run, absolute_score) for code in DETECTORS}
    report.skipped = {code: why for code, why in report.skipped.items() if why}
    report.timeline = timeline(report, records, evaluations, run)
    return report


def _finding(code: str, seen: list[Problem], ends: dict, config: dict) -> Finding:
    title, causes, flags = _advice(code, config)
    source = DETECTORS[code].reads if code in DETECTORS else "records"
    first, newest = seen[0], seen[-1]
    active = newest.iteration == ends.get(source)
    return Finding(code, title, first.iteration, newest.iteration, active, first.finding, first.evidence,
                   causes, flags, source, newest.finding if newest.finding != first.finding else "")


def _non_finite_losses(records: list[dict], config: dict) -> list[Finding]:
    """A finding when logged losses are NaN or infinite (a run of this version stops before logging one; an older
    run, or one whose lines were edited, may hold them): no detector reads them, so without this a run whose every
    loss is NaN would read as healthy."""
    logged = [r for r in records if any(is_number(r.get(k)) for k in LOSS_FIELDS)]
    bad = [r["iteration"] for r in logged if any(is_number(r.get(k)) and not math.isfinite(r[k]) for k in LOSS_FIELDS)]
    if not bad:
        return []
    _, causes, flags = _advice("divergence", config)
    what = f"every logged loss is NaN or infinite ({len(bad)} log lines)" if len(bad) == len(logged) else \
        f"{len(bad)} of {len(logged)} log lines hold a NaN or infinite loss, the first at iteration {bad[0]}"
    return [Finding("non-finite-losses", "losses are non-finite (NaN or infinite)", bad[0], bad[-1],
                    bad[-1] == logged[-1]["iteration"], f"{what}: training diverged, and nothing it learned after "
                    "that point is usable.", {"non_finite_lines": len(bad), "logged_lines": len(logged)},
                    causes, flags, "records")]


def _advice(code: str, config: dict) -> tuple[str, list[str], list[str]]:
    """(title, likely causes, flags to try) of a problem: its entry in DETECTORS, less the flags the run uses."""
    entry = DETECTORS.get(code)
    return (entry.title, list(entry.causes), list(untried(code, config))) if entry else (code, [], [])


def _grid_problems(run: RunDir, config: dict) -> tuple[list[Problem], int | None]:
    """sample_problems on the run's saved grids (every grid of a short run, a spread of a long one's), and the
    iteration of the newest grid read."""
    grids = [(iteration, path) for iteration, path in sorted(run.grids().items()) if iteration > 0]
    if len(grids) > GRID_STRIDE:
        grids = [grids[i] for i in np.linspace(0, len(grids) - 1, GRID_STRIDE).round().astype(int)]
    problems = []
    for iteration, path in grids:
        images = _read_grid(path)
        if images is None:
            continue
        for problem in sample_problems(images, config) if len(images) > 1 else []:
            problem.iteration = iteration
            problems.append(problem)
    return problems, (grids[-1][0] if grids else None)


def _read_grid(path: Path):
    """A grid's tiles as a tensor, or None if it is not a regular file of at most MAX_GRID_BYTES (a FIFO named
    like a grid is never waited on) holding a PNG of at most MAX_IMAGE_PIXELS (checked before it is decoded)."""
    import io

    import torch
    from PIL import Image

    from mnist_gan.data.image_folder import MAX_IMAGE_PIXELS

    data = read_limited(path, MAX_GRID_BYTES)
    try:
        with Image.open(io.BytesIO(data or b"")) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return None
        return torch.from_numpy(read_grid(io.BytesIO(data)))
    except (OSError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return None


def _logged_warnings(records: list[dict], report: Report) -> None:
    """Warnings the training loop raised (on train or eval lines) that no replayed detector accounts for (e.g. from
    grids not kept)."""
    known = {f.code for f in report.findings}
    for record in records:
        for code in record.get("warnings", []) if isinstance(record.get("warnings"), list) else []:
            if code not in known:
                title, causes, flags = _advice(code, report.config)
                report.findings.append(Finding(code, title, record["iteration"], record["iteration"], False,
                                               f"the training loop warned '{code}' at iteration "
                                               f"{record['iteration']}", {}, causes, flags,
                                               "warnings logged during training"))
                known.add(code)


def missing_fields(code: str, records: list[dict], evaluations: list[dict]) -> list[str]:
    """The fields the detector of `code` needs (see DETECTORS) that no record (or evaluation) of the run carries."""
    missing = []
    for name in DETECTORS[code].needs:
        pool, key = (evaluations, name[5:]) if name.startswith("eval:") else (records, name)
        if not any(key in r for r in pool):
            missing.append(name)
    if code == "class-drift" and missing and any(CLASS_HISTOGRAM in e for e in evaluations):
        return []
    return missing


def _why_not(code: str, records: list[dict], evaluations: list[dict], run: RunDir, absolute_score: bool) -> str:
    """Why the detector of `code` could not run on this run ("" if it could)."""
    if DETECTORS[code].reads == "grids":
        return "" if run.grids() else "no sample grids in samples/"
    if code == "d-wins" and not absolute_score:
        return "a WGAN critic's scores have no fixed scale, so D winning cannot be read from them"
    missing = missing_fields(code, records, evaluations)
    if not missing:
        return ""
    return f"needs {', '.join(m.removeprefix('eval:') for m in missing)}, which this run did not log " \
           f"({DETECTORS[code].how})"


def timeline(report: Report, records: list[dict], evaluations: list[dict], run: RunDir) -> list[dict]:
    """What happened and when: start, problems (first seen, cleared), best FID, checkpoints kept, the end."""
    events = [{"iteration": 0, "event": f"run started (preset {_preset(report.config)})",
               "time": records[0].get("time") if records else None}]
    for f in report.findings:
        events.append({"iteration": f.first_iteration, "event": f"{f.code}: {f.title}"})
        if not f.active_at_end and f.last_iteration is not None and f.source != "warnings logged during training":
            events.append({"iteration": f.last_iteration, "event": f"{f.code}: last seen"})
    fids = [(e["iteration"], e["fid"]) for e in evaluations if is_number(e.get("fid")) and math.isfinite(e["fid"])
            and e.get("source") != EVALUATE_SOURCE]  # the training loop's, on the same noise each time
    events += [{"iteration": e["iteration"], "event": _evaluated(e)} for e in evaluations
               if e.get("source") == EVALUATE_SOURCE]
    if fids:
        events.append({"iteration": fids[0][0], "event": f"first evaluation: FID {fids[0][1]:.1f}"})
        best = min(fids, key=lambda p: p[1])
        events.append({"iteration": best[0], "event": f"best FID {best[1]:.1f}"})
    for path in run.list_checkpoints():
        number = re.search(r"(\d+)", path.name)
        events.append({"iteration": int(number.group(1)) if number else None, "event": f"checkpoint {path.name}"})
    end = {"finished": "run finished", "stopped": "run stopped (resume with mnist-gan train --resume)",
           "running": "run still training", "empty": "nothing logged yet", "ended": "run ended"}[report.status]
    events.append({"iteration": report.iteration, "event": end, "time": records[-1].get("time") if records else None})
    return sorted(events, key=lambda e: (e["iteration"] is None, e["iteration"] or 0))


def _evaluated(evaluation: dict) -> str:
    """A timeline event for an evaluation `mnist-gan evaluate RUN` recorded: its FID and sample count."""
    fid, n = evaluation.get("fid"), evaluation.get("eval_n")
    fid = f"FID {fid:.1f}" if is_number(fid) and math.isfinite(fid) else "FID not a number"
    return f"mnist-gan evaluate: {fid}" + (f" ({n:,} samples)" if isinstance(n, int) and n > 0 else "")


# ------------------------------------------------------------------------------------ the report as text
def format_report(report: Report) -> str:
    """The report for people: the verdict, the timeline, each problem with causes and flags, what was not run."""
    length = f"{report.iteration} of {report.planned_iterations}" if report.planned_iterations else \
        str(report.iteration)
    lines = [f"run: {report.run_dir} (preset {_preset(report.config)}, {report.status}, {length} "
             f"iterations, {report.records} log lines, {report.evaluations} evaluations)",
             "verdict: healthy: no problem found" if report.healthy else
             f"verdict: {len(report.findings)} problem(s) found", "", "timeline:"]
    lines += [f"  iteration {e['iteration'] if e['iteration'] is not None else '?':>7}  {e['event']}"
              for e in report.timeline]
    for f in report.findings:
        when = f"first at iteration {f.first_iteration}" + (", still present at the end" if f.active_at_end else
                                                            f", last seen at {f.last_iteration}")
        lines += ["", f"[{f.code}] {f.title} ({when}; from {f.source})", f"  {f.message}"]
        if f.last_message:
            lines.append(f"  last seen (iteration {f.last_iteration}): {f.last_message}")
        if f.causes:
            lines.append(f"  likely causes: {'; '.join(f.causes)}")
        if f.flags:
            lines.append(f"  try: {'  |  '.join(f.flags)}")
    if report.skipped:
        lines += ["", "detectors that could not run:"]
        lines += [f"  {name}: {why}" for name, why in report.skipped.items()]
    if report.plots:
        lines += ["", "evidence: " + ", ".join(report.plots)]
    return "\n".join(lines)
