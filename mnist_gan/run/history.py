"""A run's logged history: the lines of metrics.jsonl, the optional fields the probes add to them, and the same
records as arrays, which the detectors of mnist_gan.diagnosis.detectors read.

Metrics records are plain dicts (one per metrics.jsonl line); a Series lines their numeric fields up as float
arrays (NaN where a record lacks a field), so that a detector reads a prefix of a long run without copying. A
training loop grows its Series one record at a time with a SeriesBuilder.
"""

from __future__ import annotations

import math
import os
import stat
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_gan.errors import MnistGanError
from mnist_gan.run.directory import RunDir
from mnist_gan.run.records import EVAL, format_line, is_number, read_records, record_kind

# The optional fields of train lines: logged at log steps (mnist_gan.diagnosis.probes measures them); old runs lack them.
GRAD_NORM_G = "grad_norm_g"
GRAD_NORM_D = "grad_norm_d"
D_TRAIN_REAL = "d_train_real"
D_HELDOUT = "d_heldout"
CLASS_HISTOGRAM = "class_histogram"
CLASS_REFERENCE = "class_reference"
CLASS_PROBE = "class_probe"
FIELDS = {  # name -> what it holds (docs/diagnose.md repeats this table)
    GRAD_NORM_G: "L2 norm of all of G's parameter gradients after the log step's G update",
    GRAD_NORM_D: "L2 norm of all of D's parameter gradients after the log step's last D update",
    D_TRAIN_REAL: "D's mean score (the loss's [0, 1] reading, like d_x) on 256 fixed training images",
    D_HELDOUT: "the same on 256 fixed held-out real images (the data's test split), never trained on",
    CLASS_HISTOGRAM: "fraction of 500 fixed-noise samples in each class (feature classifier) or cluster (k-means)",
    CLASS_REFERENCE: "the same fractions for real training images (logged once, at the first probe)",
    CLASS_PROBE: '"classes" (the metrics classifier) or "clusters" (k-means of the training pixels)',
}
EVALUATE = "evaluate"  # the `source` of an evaluation line that `mnist-gan evaluate RUN` recorded
HISTOGRAM_FIELD = CLASS_HISTOGRAM  # the one list-valued field a Series keeps, as a (n, C) array
# Class histograms wider than this are not kept in a Series: a data set of 28x28 digits has at most 62 classes
# (EMNIST ByClass) and the k-means probe 10 clusters. Every record gets a row of the histogram's width (NaN where
# it has none), so this bounds what a line costs: 800 bytes, however short the line.
MAX_HISTOGRAM_WIDTH = 100
GROWTH = 2  # a SeriesBuilder's arrays grow by this factor when full: appending stays O(1) on average


def newest(records: list[dict], name: str):
    """The value of `name` in the newest record that has it, else None."""
    return next((r[name] for r in reversed(records) if name in r), None)


def read_run(run_dir: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """(config, training records, evaluation records) of a run directory, finished or still training; lines a
    writer has not finished, and lines of neither kind, are skipped (see mnist_gan.run.records). A metrics.jsonl
    that is not a regular file (a FIFO, a link to a device) is refused, never waited on. The evaluations are the
    training loop's and those `mnist-gan evaluate RUN` recorded (`"source": "evaluate"`), by iteration."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise MnistGanError(f"{run.path}: not a run directory")
    if not os.path.lexists(run.metrics) and not os.path.lexists(run.config_file):
        raise MnistGanError(f"{run.path}: not a run directory (no metrics.jsonl or config.json)")
    records, evaluations = [], []
    for record in read_records(run.metrics):
        if isinstance(record.get("iteration"), int):
            kind = record_kind(record)
            if kind is not None:
                (evaluations if kind == EVAL else records).append(record)
    recorded = [r for r in read_records(run.evaluations) if isinstance(r.get("iteration"), int)
                and record_kind(r) == EVAL and r.get("source") == EVALUATE]
    evaluations = sorted(evaluations + recorded, key=lambda r: r["iteration"])  # stable: training's first
    return run.config_dict(), records, evaluations


def record_evaluation(run_dir: str | Path, result: dict, *, iteration: int, epoch: int, checkpoint: str) -> Path:
    """Append `result` (an Evaluator's figures for the run's generator of `iteration`, saved in `checkpoint`, as
    `mnist-gan evaluate RUN` computes them) to the run's evaluations.jsonl as one strict-JSON eval line with
    `"source": "evaluate"`, and return its path.

    Only ever appended, in one write, and never through a link or into anything but a regular file: a training
    process never writes this file, so appending while the run trains is safe, and a resume never truncates it
    (a resume reproduces the generator of each iteration bit for bit, so an evaluation recorded for one stays
    true; --overwrite removes it with the run). Raise OSError if it cannot be written, MnistGanError if the
    name holds something other than a regular file."""
    names = {"n": "eval_n", "seconds": "eval_seconds"}  # as the training loop's evaluation lines name them
    figures = {names.get(key, key): value for key, value in result.items() if key != "source"}  # source: a path
    record = {"kind": EVAL, "source": EVALUATE, "iteration": iteration, "epoch": epoch, "checkpoint": checkpoint,
              **figures, "time": time.time()}
    path = RunDir(run_dir).evaluations
    line = format_line(record).encode()
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        if os.path.islink(path) or (os.path.exists(path) and not path.is_file()):
            raise MnistGanError(f"{path}: not a regular file; refusing to write to it") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MnistGanError(f"{path}: not a regular file; refusing to write to it")
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


@dataclass
class Series:
    """Training records as aligned arrays: `iteration` (n,) and one float array (n,) per scalar field, NaN
    where a record lacks it; histograms (n, C) under their field name, NaN rows where absent."""

    iteration: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def from_records(cls, records: list[dict]) -> Series:
        iteration = np.array([r.get("iteration", i + 1) for i, r in enumerate(records)], dtype=np.int64)
        names = {k for r in records for k, v in r.items() if is_number(v)}
        values = {name: np.array([_number(r.get(name)) for r in records], dtype=np.float64) for name in names}
        # the most common width (ties: the first seen), so that one odd line cannot widen every row
        widths = Counter(len(h) for r in records if is_histogram(h := r.get(HISTOGRAM_FIELD)))
        width = widths.most_common(1)[0][0] if widths else 0
        if width:
            values[HISTOGRAM_FIELD] = np.array([_row(r.get(HISTOGRAM_FIELD), width) for r in records])
        return cls(iteration, values)

    def __len__(self) -> int:
        return len(self.iteration)

    def upto(self, n: int) -> Series:
        """The first n records (a view: nothing is copied)."""
        return Series(self.iteration[:n], {k: v[:n] for k, v in self.values.items()})

    def has(self, *names: str) -> bool:
        return all(name in self.values and bool(np.isfinite(self.values[name]).any()) for name in names)

    def get(self, name: str) -> np.ndarray:
        return self.values.get(name, np.full(len(self), np.nan))


def _number(value) -> float:
    return float(value) if is_number(value) else math.nan


def is_histogram(value) -> bool:
    """Whether a record's value can be a class histogram: a list of 1..MAX_HISTOGRAM_WIDTH numbers."""
    return isinstance(value, list) and 0 < len(value) <= MAX_HISTOGRAM_WIDTH and all(map(is_number, value))


def _row(value, width: int) -> list[float]:
    return [float(v) for v in value] if is_histogram(value) and len(value) == width else [math.nan] * width


def series(records) -> Series:
    """`records` as a Series (a Series is returned as it is)."""
    return records if isinstance(records, Series) else Series.from_records(records)


def rolling_median(values: np.ndarray, width: int) -> np.ndarray:
    """Median of each value and the width-1 before it (fewer at the start), NaNs ignored."""
    if len(values) >= width and not np.isnan(values).any():  # the common case, without nanmedian's slow path
        head = [np.median(values[:i + 1]) for i in range(width - 1)]
        full = np.median(np.lib.stride_tricks.sliding_window_view(values, width), axis=1)  # (n - width + 1,)
        return np.concatenate([np.asarray(head, dtype=np.float64), full])
    padded = np.concatenate([np.full(width - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)  # (n, width)
    with warnings.catch_warnings():  # an all-NaN window is expected (records without the field): NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(windows, axis=1)


class SeriesBuilder:
    """A Series grown one record at a time, each append O(1) on average: the history a training loop checks at
    every log step without re-reading its whole past. Its histograms keep the first width logged (a record with
    another width gets a NaN row); `Series.from_records` keeps the widest."""

    def __init__(self, records: list[dict] = ()) -> None:
        self.length, self.capacity = 0, 0
        self.iteration = np.zeros(0, dtype=np.int64)
        self.values: dict[str, np.ndarray] = {}
        for record in records:
            self.append(record)

    def append(self, record: dict) -> None:
        if self.length == self.capacity:
            self._grow(max(16, GROWTH * self.capacity))
        n = self.length
        self.iteration[n] = record.get("iteration", n + 1)
        for name, value in record.items():
            if is_number(value):
                self._column(name, ())[n] = float(value)
        histogram = record.get(HISTOGRAM_FIELD)
        if is_histogram(histogram):
            column = self._column(HISTOGRAM_FIELD, (len(histogram),))
            column[n] = _row(histogram, column.shape[1])
        self.length += 1

    def series(self) -> Series:
        """The records so far, as views of the builder's arrays (later appends leave a view as it was)."""
        n = self.length
        return Series(self.iteration[:n], {name: column[:n] for name, column in self.values.items()})

    def _column(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.values:
            self.values[name] = np.full((self.capacity, *shape), np.nan)
        return self.values[name]

    def _grow(self, capacity: int) -> None:
        self.iteration = np.concatenate([self.iteration, np.zeros(capacity - self.capacity, dtype=np.int64)])
        for name, column in self.values.items():
            self.values[name] = np.concatenate([column, np.full((capacity - self.capacity, *column.shape[1:]),
                                                                np.nan)])
        self.capacity = capacity
