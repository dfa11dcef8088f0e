"""Follow a run directory while it trains, read-only: the metrics lines as they are appended, the newest sample
grid, the diagnosis' warnings, progress and an ETA. What `mnist-gan serve` shows under "Watch".

Nothing here writes to the run or takes its lock, so training never waits for a reader. Files are read only by
names the run itself wrote (fixed names, and `iter_*` names found by listing its folders); a request never names
a file.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter
from pathlib import Path

from mnist_gan.errors import MnistGanError
from mnist_gan.run.directory import RunDir
from mnist_gan.run.records import (
    EVAL,
    MAX_LINE_BYTES,
    TRAIN,
    EpochLength,
    is_number,
    parse_line,
    planned_iterations,
    read_limited,
    read_regular,
    record_kind,
    warn_damaged,
)

MAX_READ_BYTES = 8 << 20  # new metrics text read per poll, so one poll of a huge file stays quick; the rest waits
MAX_IMAGE_BYTES = 16 << 20  # a sample grid larger than this is not one a run wrote
MAX_RECORDS_PER_REPLY = 5000  # metrics records per reply; the page asks again for the rest
MAX_WARNINGS = 50  # the newest warnings shown; a run that warns more often than this has one story to tell
SESSION_SCAN = 200  # recent gaps between lines that set a run's usual pace (for telling a resume from a pause)
LIVE_SECONDS = 60.0  # a run that wrote nothing for this long (and 3 logging intervals) is shown as stopped
RATE_WINDOW = 10  # recent metrics lines the speed (and so the ETA) is measured over
DEADLINE_SLACK = 2.0  # seconds of error allowed in estimating when --max-minutes stops a run
MAX_RECORDS_KEPT = 10_000  # records the page's plot holds: a longer run is thinned evenly (every 2nd, 4th, ... line)
MAX_TRAIN_KEPT = 4096  # the newest train lines kept at full resolution, for progress, speed and the ETA
MAX_EVAL_FIELDS = 32  # numbers of an evaluation line the page gets (a run logs about 8: fid, kid, ...)
MAX_NAME_CHARS = 80  # a field's name, a warning's code, a preset's or a loss's name, as the page shows them
MAX_MINUTES = 1e7  # a --max-minutes beyond this (19 years) is shown as no limit
TRAIN_FIELDS = ("iteration", "epoch", "d_loss", "g_loss", "d_x", "d_g_z", "images_per_s", "time")


def _number(value) -> float | int | None:
    """A JSON-safe number: NaN and infinities (which JSON cannot carry) and non-numbers become None."""
    return value if is_number(value) and math.isfinite(value) else None


def _text(value) -> str | None:
    return value[:MAX_NAME_CHARS] if isinstance(value, str) else None


def _positive(value, high: float) -> float | int | None:
    """A config.json setting that must be a number in (0, high]; anything else (a hand-edited NaN, a list) None."""
    return value if _number(value) is not None and 0 < value <= high else None


def _settings(config: dict) -> dict:
    """The settings of config.json's "train" section that the page's progress reads, each checked (the file is a
    stranger's: it may hold NaN, huge numbers or any JSON at all) or left out."""
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    counts = {key: train[key] for key in ("iterations", "epochs", "batch_size", "log_every")
              if _positive(train.get(key), 2**63 - 1) is not None and isinstance(train[key], int)}
    return {**counts, "loss": _text(train.get("loss")), "max_minutes": _positive(train.get("max_minutes"), MAX_MINUTES)}


def _json_safe(value):
    """`value` with every float JSON cannot carry (NaN, infinities) as None, in a dict of the status's depth."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def compact_record(record: dict) -> dict | None:
    """The fields the page plots from one metrics line, or None for a line it does not plot."""
    kind = record_kind(record)
    if kind is None or _number(record.get("iteration")) is None:
        return None
    if kind == TRAIN:
        compact = {"kind": kind, **{key: _number(record.get(key)) for key in TRAIN_FIELDS}}
        warnings = record.get("warnings")
        if isinstance(warnings, list):
            compact["warnings"] = [str(code)[:MAX_NAME_CHARS] for code in warnings[:20]]
        return compact
    numbers = [(key[:MAX_NAME_CHARS], value) for key, value in record.items() if _number(value) is not None]
    return {"kind": kind, "fid": None, **dict(numbers[:MAX_EVAL_FIELDS])}


class MetricsFollower:
    """Reads `metrics.jsonl` incrementally as a run appends to it. A replaced file (a resume rewrites it) or a
    shorter one starts a new generation: the page then drops what it had and reads again from the start.

    What it holds stays bounded however long the run: at most MAX_RECORDS_KEPT records for the page's plot (past
    that, every other line of the more frequent kind is dropped, evenly, and a new generation begins), the newest
    MAX_TRAIN_KEPT train lines for progress and speed, and the newest warnings."""

    def __init__(self, path: Path):
        self.path, self.generation, self._identity, self._lock = path, 0, None, threading.Lock()
        self._reset(None)

    def poll(self) -> None:
        """Take in the complete lines appended since the last poll (a half-written last line waits)."""
        with self._lock:
            try:
                stat = os.stat(self.path)
            except OSError:
                if self._identity is not None:
                    self._reset(None)
                return
            identity = (stat.st_dev, stat.st_ino)
            if identity != self._identity or stat.st_size < self._offset:
                self._reset(identity)
            if stat.st_size > self._offset:
                self._read(stat.st_size)

    def _reset(self, identity) -> None:
        """Forget everything read: the file is new (a resume rewrote it) or gone."""
        self.generation += 1 if self._identity is not None or identity is not None else 0
        self.records, self.skipped, self._offset, self._identity = [], 0, 0, identity
        self._ordinals: list[int] = []  # each kept record's number among the lines of its kind
        self._seen, self._strides = Counter(), {TRAIN: 1, EVAL: 1}  # lines of each kind read, and kept one in ...
        self._line = 0  # lines read, to name a damaged one
        self.train: list[dict] = []  # the newest loss lines, so a poll of a long run stays cheap
        self.warnings: list[dict] = []
        self.epoch_length = EpochLength()

    def _read(self, size: int) -> None:
        try:
            chunk = read_regular(self.path, min(size - self._offset, MAX_READ_BYTES), self._offset)
        except (OSError, MnistGanError):
            return  # the run is replacing the file this instant; the next poll sees the new one
        end = chunk.rfind(b"\n") + 1
        lines = chunk[:end].split(b"\n")[:-1]  # whole lines; a half-written last one waits
        if end == 0 and len(chunk) >= MAX_LINE_BYTES:
            end, lines = len(chunk), [chunk]  # one overlong line with no end in sight: skip past it
        damaged = []
        for line in lines:
            self._line += 1
            if not self._take(line):
                damaged.append(self._line)
        warn_damaged(self.path, damaged)
        self._offset += end

    def _take(self, line: bytes) -> bool:
        """Take one line in; False if it is damaged (see parse_line)."""
        if not line.strip():
            return True
        record = parse_line(line)
        compact = compact_record(record) if record is not None else None
        if compact is None:
            self.skipped += 1
            return record is not None
        self._keep(compact)
        if compact["kind"] == TRAIN:
            self.train.append(compact)
            if len(self.train) > MAX_TRAIN_KEPT:
                del self.train[:MAX_TRAIN_KEPT // 2]
            self.epoch_length.update(compact["iteration"], compact["epoch"])
            self.warnings += [{"iteration": compact["iteration"], "code": code} for code in compact.get("warnings", [])]
            del self.warnings[:-MAX_WARNINGS]
        return True

    def _keep(self, compact: dict) -> None:
        """Keep one line in every `stride` of its kind for the page."""
        kind = compact["kind"]
        ordinal, self._seen[kind] = self._seen[kind], self._seen[kind] + 1
        if ordinal % self._strides[kind] == 0:
            self.records.append(compact)
            self._ordinals.append(ordinal)
            if len(self.records) > MAX_RECORDS_KEPT:
                self._thin()

    def _thin(self) -> None:
        """Keep every other kept line of the kind with the most: the plot keeps its shape in half the records.
        The page then reads the thinned list afresh (a new generation)."""
        kind = Counter(record["kind"] for record in self.records).most_common(1)[0][0]
        self._strides[kind] *= 2
        kept = [(record, ordinal) for record, ordinal in zip(self.records, self._ordinals, strict=True)
                if record["kind"] != kind or ordinal % self._strides[kind] == 0]
        self.records, self._ordinals = [record for record, _ in kept], [ordinal for _, ordinal in kept]
        self.generation += 1

    def since(self, start: int, generation: int | None) -> dict:
        """The records from index `start` on (at most MAX_RECORDS_PER_REPLY); from 0 if `generation` is stale."""
        self.poll()
        with self._lock:
            reset = generation != self.generation
            start = 0 if reset else min(start, len(self.records))
            chunk = self.records[start:start + MAX_RECORDS_PER_REPLY]
            return {"generation": self.generation, "reset": reset, "start": start, "records": chunk,
                    "next": start + len(chunk), "total": len(self.records), "skipped": self.skipped}


class RunWatcher:
    """What the page shows of a run directory: its config, metrics, grids, checkpoints, progress and ETA."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.run = Path(run_dir), RunDir(run_dir)
        self.metrics = MetricsFollower(self.run.metrics)

    def config(self) -> dict:
        """The run's config.json as a dict ({} if missing or unreadable)."""
        return self.run.config_dict()

    def grids(self) -> dict[int, Path]:
        return self.run.grids()

    def grid_bytes(self, iteration: int | None) -> tuple[int, bytes] | None:
        """(iteration, PNG bytes) of the grid written at `iteration` (None: the newest), or None."""
        grids = self.grids()
        if not grids:
            return None
        iteration = max(grids) if iteration is None else iteration
        data = read_limited(grids[iteration], MAX_IMAGE_BYTES) if iteration in grids else None
        return None if data is None else (iteration, data)

    def newest_checkpoint(self) -> int | None:
        checkpoints = self.run.checkpoints_by_iteration()
        return max(checkpoints) if checkpoints else None

    def status(self) -> dict:
        """Progress, speed, ETA, state (waiting/training/stopped/finished), grids and warnings, for the page."""
        self.metrics.poll()
        config = self.config()
        train = _settings(config)
        records = self.metrics.train
        last = records[-1] if records else None
        iteration = last["iteration"] if last else 0
        total, exact = planned_iterations(train, self.metrics.epoch_length, bool(records))
        max_minutes = train["max_minutes"] or 0
        session = current_session(records, 60 * max_minutes + LIVE_SECONDS)
        rate = _rate(session, train.get("batch_size"))
        eta = max(0, total - iteration) / rate if rate and total else None
        deadline = _deadline(session, train)
        # A run stopped by the limit logs its last line at the deadline (give or take the estimate's error).
        timed_out = deadline is not None and last.get("time") is not None and \
            last["time"] >= deadline - max(DEADLINE_SLACK, 0.02 * 60 * train["max_minutes"])
        limited = deadline is not None and not timed_out and (eta is None or deadline - time.time() < eta)
        return _json_safe({
            "preset": _text(config.get("preset")), "loss": train["loss"], "iteration": iteration,
            "epoch": last["epoch"] if last else None, "total": total, "total_exact": exact,
            "progress": min(1.0, iteration / total) if total else None, "iterations_per_s": rate,
            "eta_s": max(0.0, deadline - time.time()) if limited else eta, "eta_by_time_limit": limited,
            "max_minutes": train.get("max_minutes"), "stopped_by_time_limit": timed_out,
            "state": "finished" if timed_out else self._state(records, iteration, total),
            "latest": last, "grids": sorted(self.grids()), "checkpoint": self.newest_checkpoint(),
            "warnings": self.metrics.warnings[-MAX_WARNINGS:], "generation": self.metrics.generation,
        })

    def _state(self, records: list[dict], iteration: int, total: int | None) -> str:
        if total and iteration >= total:
            return "finished"
        try:
            age = time.time() - os.stat(self.run.metrics).st_mtime
        except OSError:
            return "waiting"  # no metrics yet: a run that has just started, or one that never logged
        times = [r["time"] for r in records[-RATE_WINDOW:] if r.get("time") is not None]
        interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
        return "training" if age < max(LIVE_SECONDS, 3 * interval) else "stopped"


def current_session(records: list[dict], horizon: float) -> list[dict]:
    """The recent lines since the run last started or resumed: after the last pause longer than LIVE_SECONDS and
    five of its usual logging intervals (the time a stopped run waits to be resumed), looking back at most
    `horizon` seconds and RATE_WINDOW lines, so a poll of a long run reads only its end."""
    times = [r.get("time") for r in records[-SESSION_SCAN:]]
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False) if a is not None and b is not None)
    pause = max(LIVE_SECONDS, 5 * gaps[len(gaps) // 2]) if gaps else LIVE_SECONDS
    end = records[-1].get("time") if records else None
    index = len(records) - 1
    while index > 0:
        before, after = records[index - 1].get("time"), records[index].get("time")
        if before is not None and after is not None and after - before > pause:
            break
        if len(records) - index >= RATE_WINDOW and (end is None or before is None or end - before > horizon):
            break
        index -= 1
    return records[max(index, 0):]


def _window(record: dict, train: dict) -> float:
    """Seconds the logging window of `record` took, from its own images-per-second figure."""
    speed, log_every, batch_size = record.get("images_per_s"), train.get("log_every"), train.get("batch_size")
    if not speed or not isinstance(log_every, int) or not isinstance(batch_size, int):
        return 0.0
    return log_every * batch_size / speed


def _deadline(session: list[dict], train: dict) -> float | None:
    """When --max-minutes stops the current session (a time.time()), or None without a limit: the clock starts
    one logging window before the session's first line."""
    max_minutes = train.get("max_minutes")
    if not isinstance(max_minutes, (int, float)) or max_minutes <= 0 or not session:
        return None
    first = session[0]
    return None if first.get("time") is None else first["time"] - _window(first, train) + 60 * max_minutes


def _rate(session: list[dict], batch_size) -> float | None:
    """Iterations per second over the session's recent lines (grids, checkpoints and evaluations included)."""
    recent = [r for r in session[-RATE_WINDOW:] if r.get("time") is not None]
    if len(recent) >= 2 and recent[-1]["time"] > recent[0]["time"]:
        return (recent[-1]["iteration"] - recent[0]["iteration"]) / (recent[-1]["time"] - recent[0]["time"])
    speed = recent[-1].get("images_per_s") if recent else None
    if speed and isinstance(batch_size, int) and batch_size > 0:
        return speed / batch_size
    return None
