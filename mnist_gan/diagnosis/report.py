"""`mnist-gan diagnose RUN_DIR`: what happened to a run and when, the evidence, and what to try.

It reads what a run wrote (config.json, metrics.jsonl, samples/iter_*.png, checkpoints/), whatever version of
mnist-gan wrote it, while the run trains or after it stopped; it replays the detectors of mnist_gan.diagnosis.detectors over
the run's history, so each problem is dated at the log step where training would have raised it. Detectors whose
data the run did not log are listed with the reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mnist_gan.diagnosis import detectors as dx
from mnist_gan.run.history import Series, newest, read_run

ADVICE = {  # code -> (title, likely causes, flags to try)
    "flat-samples": ("G draws flat, single-tone images",
                     ["G's output unit is stuck (a ReLU output never goes negative: the seed-relu preset)",
                      "a learning rate so high that G saturated"],
                     ["--g-activation tanh", "--preset recommended", "--lr 0.0002"]),
    "mode-collapse": ("G draws the same image for every z",
                      ["G found one image D cannot reject and D forgets it as fast as G returns to it"],
                      ["--loss lsgan", "--spectral-norm", "--lr-g 0.0001", "--preset recommended"]),
    "d-wins": ("D rejects every fake with certainty",
               ["D learns much faster than G (learning rates, capacity)", "G cannot make digit-like images"],
               ["--lr-d 0.0001", "--label-smoothing 0.1", "--spectral-norm", "--augment-shift 2"]),
    "vanishing-gradient": ("G's gradient has vanished",
                           ["D saturates, so a saturating loss passes G no signal",
                            "dead ReLU units in G (the seed-relu failure)"],
                           ["--g-activation tanh", "--loss lsgan", "--lr-d 0.0001", "--spectral-norm",
                            "--r1-gamma 1"]),
    "divergence": ("gradient norms are exploding",
                   ["a learning rate too high for the loss and optimizer", "no normalisation in D"],
                   ["--lr 0.00002 (10x smaller)", "--spectral-norm", "--r1-gamma 1", "--train --resume from an "
                    "earlier checkpoint with a lower --lr"]),
    "oscillation": ("D and G keep overshooting each other",
                    ["learning rates too high", "Adam's momentum (beta1) amplifying the swings"],
                    ["--lr 0.0001", "--beta1 0.5", "--spectral-norm", "--loss hinge"]),
    "d-overfits": ("D memorises its training images",
                   ["too few training images for D's capacity", "D trains much more than G"],
                   ["--augment-shift 2", "--r1-gamma 1", "--lr-d 0.0001", "--spectral-norm", "drop --limit"]),
    "class-drift": ("some digits dominate the samples, others vanish",
                    ["partial mode collapse: G drifts towards the classes D rejects least",
                     "a long run past its best point"],
                    ["--ema-decay 0.999", "--spectral-norm", "--lr-g 0.0001", "--conditional",
                     "--eval-every 500 --checkpoint-every 500 (keep the best checkpoint)"]),
    "memorisation": ("G copies training images",
                     ["a small training set trained for long", "D memorised the set (see d-overfits)"],
                     ["--augment-shift 2", "drop --limit", "fewer --iterations", "an earlier checkpoint"]),
    "no-progress": ("FID is flat or rising",
                    ["training has converged or stalled", "training is making samples worse (drift)"],
                    ["--preset recommended", "--loss lsgan", "--lr 0.0002", "stop at the best FID (--iterations)"]),
}
NEEDS = {  # detector -> (fields any train record must carry, or "eval:<field>" of evaluations; how to get them)
    "flat-samples": ((), "the sample grids"),
    "mode-collapse": ((), "the sample grids"),
    "d-wins": (("d_x", "d_g_z"), "every run logs them"),
    "vanishing-gradient": ((dx.GRAD_NORM_G, dx.GRAD_NORM_D), "logged at log steps by the training loop"),
    "divergence": (("d_x", "d_g_z"), "gradient norms sharpen it when logged"),
    "d-overfits": ((dx.D_TRAIN_REAL, dx.D_HELDOUT), "logged when the data set has a test split (a held-out set)"),
    "class-drift": ((dx.CLASS_HISTOGRAM,), "logged at log steps, or from evaluations (--eval-every)"),
    "memorisation": (("eval:memorization",), "needs evaluations: train with --eval-every N"),
    "no-progress": (("eval:fid",), "needs evaluations: train with --eval-every N"),
}


def missing_fields(detector: str, records: list[dict], evaluations: list[dict]) -> list[str]:
    """The fields `detector` needs that no record (or evaluation) of the run carries."""
    needed, _ = NEEDS[detector]
    missing = []
    for name in needed:
        pool, key = (evaluations, name[5:]) if name.startswith("eval:") else (records, name)
        if not any(key in r for r in pool):
            missing.append(name)
    if detector == "class-drift" and missing and any(dx.CLASS_HISTOGRAM in e for e in evaluations):
        return []
    return missing


REPLAYS = 2000  # at most this many log steps are replayed (a long run's problems are dated to within a few lines)
GRID_PADDING = 2  # mnist_gan.sampling.sample.grid_image's spacing between the 28x28 tiles
GRID_STRIDE = 20  # at most this many-th grid is re-read for flat/collapse checks, so long runs stay quick


@dataclass
class Finding:
    code: str
    title: str
    first_iteration: int | None
    last_iteration: int | None
    active_at_end: bool
    message: str
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
    """The run's total: --iterations, else --epochs times the batches per epoch its records pin down."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    if isinstance(train.get("iterations"), int):
        return train["iterations"]
    # epoch = (iteration - 1) // per_epoch + 1, so per_epoch >= iteration / epoch and < iteration / (epoch - 1)
    pairs = [(r["iteration"], r["epoch"]) for r in records if isinstance(r.get("epoch"), int) and r["epoch"] > 0]
    low = max((math.ceil(i / e) for i, e in pairs), default=None)
    high = min((math.ceil(i / (e - 1)) - 1 for i, e in pairs if e > 1), default=None)
    if isinstance(train.get("epochs"), int) and low is not None and high is not None and low == high:
        return train["epochs"] * low
    return None


def read_grid(path: Path, count: int = 64, nrow: int = 8) -> np.ndarray:
    """The 28x28 tiles of a training grid PNG as floats (count, 1, 28, 28) in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    rows = (pixels.shape[0] - GRID_PADDING) // (28 + GRID_PADDING)
    tiles = []
    for index in range(min(count, rows * nrow)):
        row, col = divmod(index, nrow)
        top, left = GRID_PADDING + row * (28 + GRID_PADDING), GRID_PADDING + col * (28 + GRID_PADDING)
        tiles.append(pixels[top:top + 28, left:left + 28])
    return (np.stack(tiles)[:, None] / 127.5 - 1) if tiles else np.zeros((0, 1, 28, 28), np.float32)


# ------------------------------------------------------------------------------------ replaying the detectors
def diagnose(run_dir: str | Path) -> Report:
    """Replay every detector over the run's history; see the module docstring."""
    run_dir = Path(run_dir)
    config, records, evaluations = read_run(run_dir)
    last = max([r["iteration"] for r in records + evaluations], default=0)
    planned = planned_iterations(config, records)
    report = Report(str(run_dir), run_status(run_dir, last, planned), last, planned, config, len(records),
                    len(evaluations))
    loss = (config.get("train") or {}).get("loss", "non-saturating")
    events: dict[str, list[dx.Problem]] = {}
    series = Series.from_records(records)
    reference, kind = newest(records, dx.CLASS_REFERENCE), newest(records, dx.CLASS_PROBE)
    stride = max(1, len(series) // REPLAYS)
    for n in [*range(stride, len(series), stride), len(series)] if len(series) else []:
        for problem in dx.record_problems(series.upto(n), loss != "wgan-gp", reference, kind):
            events.setdefault(problem.code, []).append(problem)
    for n in range(1, len(evaluations) + 1):
        for problem in dx.evaluation_problems(evaluations[:n], reference if kind == "classes" else None):
            events.setdefault(problem.code, []).append(problem)
    grid_problems, last_grid = _grid_problems(run_dir)
    for problem in grid_problems:
        events.setdefault(problem.code, []).append(problem)
    ends = {"records": int(series.iteration[-1]) if len(series) else None,
            "evaluations": evaluations[-1]["iteration"] if evaluations else None, "grids": last_grid}
    for code, seen in events.items():
        report.findings.append(_finding(code, seen, ends))
    _logged_warnings(sorted(records + evaluations, key=lambda r: r["iteration"]), report)
    report.findings.sort(key=lambda f: (f.first_iteration is None, f.first_iteration or 0))
    report.skipped = {name: _why_not(name, records, evaluations, run_dir, loss) for name in NEEDS}
    report.skipped = {name: why for name, why in report.skipped.items() if why}
    report.timeline = timeline(report, records, evaluations, run_dir)
    return report


def _finding(code: str, seen: list[dx.Problem], ends: dict) -> Finding:
    title, causes, flags = ADVICE.get(code, (code, [], []))
    source = "evaluations" if code in ("memorisation", "no-progress") else \
        "grids" if code in ("flat-samples", "mode-collapse") else "records"
    first, newest = seen[0], seen[-1]
    active = newest.iteration == ends.get(source)
    return Finding(code, title, first.iteration, newest.iteration, active, first.message, first.evidence,
                   causes, flags, source, newest.message if newest.message != first.message else "")


def _grid_problems(run_dir: Path) -> tuple[list[dx.Problem], int | None]:
    """sample_problems on the run's saved grids (every grid of a short run, a spread of a long one's), and the
    iteration of the newest grid read."""
    import torch

    grids = sorted((run_dir / "samples").glob("iter_*.png"))
    grids = [g for g in grids if _grid_iteration(g) > 0]
    if len(grids) > GRID_STRIDE:
        grids = [grids[i] for i in np.linspace(0, len(grids) - 1, GRID_STRIDE).round().astype(int)]
    problems = []
    for path in grids:
        try:
            images = torch.from_numpy(read_grid(path))
        except (OSError, ValueError):
            continue
        for problem in dx.sample_problems(images) if len(images) > 1 else []:
            problem.iteration = _grid_iteration(path)
            problems.append(problem)
    return problems, (_grid_iteration(grids[-1]) if grids else None)


def _grid_iteration(path: Path) -> int:
    match = re.fullmatch(r"iter_(\d+)\.png", path.name)
    return int(match.group(1)) if match else -1


def _logged_warnings(records: list[dict], report: Report) -> None:
    """Warnings the training loop raised (on train or eval lines) that no replayed detector accounts for (e.g. from
    grids not kept)."""
    known = {f.code for f in report.findings}
    for record in records:
        for code in record.get("warnings", []) if isinstance(record.get("warnings"), list) else []:
            if code not in known:
                title, causes, flags = ADVICE.get(code, (code, [], []))
                report.findings.append(Finding(code, title, record["iteration"], record["iteration"], False,
                                               f"the training loop warned '{code}' at iteration "
                                               f"{record['iteration']}", {}, causes, flags,
                                               "warnings logged during training"))
                known.add(code)


def _why_not(name: str, records: list[dict], evaluations: list[dict], run_dir: Path, loss: str) -> str:
    if name in ("flat-samples", "mode-collapse"):
        return "" if any((run_dir / "samples").glob("iter_*.png")) else "no sample grids in samples/"
    if name == "d-wins" and loss == "wgan-gp":
        return "a WGAN critic's scores have no fixed scale, so D winning cannot be read from them"
    missing = missing_fields(name, records, evaluations)
    if not missing:
        return ""
    return f"needs {', '.join(m.removeprefix('eval:') for m in missing)}, which this run did not log " \
           f"({NEEDS[name][1]})"


def timeline(report: Report, records: list[dict], evaluations: list[dict], run_dir: Path) -> list[dict]:
    """What happened and when: start, problems (first seen, cleared), best FID, checkpoints kept, the end."""
    events = [{"iteration": 0, "event": f"run started (preset {report.config.get('preset', '?')})",
               "time": records[0].get("time") if records else None}]
    for f in report.findings:
        events.append({"iteration": f.first_iteration, "event": f"{f.code}: {f.title}"})
        if not f.active_at_end and f.last_iteration is not None and f.source != "warnings logged during training":
            events.append({"iteration": f.last_iteration, "event": f"{f.code}: last seen"})
    fids = [(e["iteration"], e["fid"]) for e in evaluations if isinstance(e.get("fid"), (int, float))]
    if fids:
        events.append({"iteration": fids[0][0], "event": f"first evaluation: FID {fids[0][1]:.1f}"})
        best = min(fids, key=lambda p: p[1])
        events.append({"iteration": best[0], "event": f"best FID {best[1]:.1f}"})
    for path in sorted((run_dir / "checkpoints").glob("iter_*.ckpt")):
        number = re.search(r"(\d+)", path.name)
        events.append({"iteration": int(number.group(1)) if number else None, "event": f"checkpoint {path.name}"})
    end = {"finished": "run finished", "stopped": "run stopped (resume with mnist-gan train --resume)",
           "running": "run still training", "empty": "nothing logged yet", "ended": "run ended"}[report.status]
    events.append({"iteration": report.iteration, "event": end, "time": records[-1].get("time") if records else None})
    return sorted(events, key=lambda e: (e["iteration"] is None, e["iteration"] or 0))


# ------------------------------------------------------------------------------------ the report as text
def format_report(report: Report) -> str:
    """The report for people: the verdict, the timeline, each problem with causes and flags, what was not run."""
    length = f"{report.iteration} of {report.planned_iterations}" if report.planned_iterations else \
        str(report.iteration)
    lines = [f"run: {report.run_dir} (preset {report.config.get('preset', '?')}, {report.status}, {length} "
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
