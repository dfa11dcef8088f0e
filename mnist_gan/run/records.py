"""Reading a run's records, finished or live: the one parser of a metrics.jsonl line, the one rule for a line's kind,
the one rule for a run's planned length, and the bounded reads of a run's files.

Three readers take a run's lines through here, so they agree on which lines a run wrote: mnist_gan.run.history
(a whole run, for the diagnosis), mnist_gan.run.watch (a live run, polled for the page) and
RunDir.truncate_metrics (a run cut back to the checkpoint it resumes from). Files are read as a stranger's
(docs/reliability.md): regular files only, never waited on (a FIFO is not opened for reading), and within a size
where the reader sets one.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

from mnist_gan.errors import MnistGanError

TRAIN, EVAL = "train", "eval"  # the kinds of metrics.jsonl line
MAX_LINE_BYTES = 1 << 16  # a metrics line longer than this was not written by a run: skipped, not parsed


def parse_line(line: bytes) -> dict | None:
    """One metrics.jsonl line as a dict, or None for a line a run did not write whole: blank, longer than
    MAX_LINE_BYTES, not JSON (the half line a killed writer leaves), nested too deep to parse, or not an object."""
    if len(line) > MAX_LINE_BYTES or not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError: a run writes ASCII
        return None
    return record if isinstance(record, dict) else None


def record_kind(record: dict) -> str | None:
    """TRAIN (a loss line), EVAL (a sample-quality line) or None (neither). Lines written before lines carried a
    `kind` are told apart as they always were: an evaluation has a `fid`, a loss line a `d_loss`."""
    # An unknown line is None, never TRAIN: a later version's kind, or a line someone else appended, has none of a
    # loss line's fields, and taken for one it would reach the detectors and the page as a step with no losses.
    kind = record.get("kind")
    if kind is None:
        return EVAL if "fid" in record else TRAIN if "d_loss" in record else None
    return kind if kind in (TRAIN, EVAL) else None


def read_records(path: Path) -> list[dict]:
    """Every line of the metrics file at `path` that parses (see parse_line), in order; [] if there is none.
    A run's whole history is read, as the diagnosis and a resume need all of it. Raise OSError if it cannot be
    read, MnistGanError if it is not a regular file."""
    data = read_regular(path, None, missing_ok=True)
    return [] if data is None else [record for line in data.splitlines() if (record := parse_line(line)) is not None]


def read_limited(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None if it is missing, unreadable, not a regular file or larger than `limit`."""
    try:
        data = read_regular(path, limit + 1)
    except (OSError, MnistGanError):
        return None
    return data if len(data) <= limit else None


def read_regular(path: Path, count: int | None, offset: int = 0, *, missing_ok: bool = False) -> bytes | None:
    """At most `count` bytes (None: all) of the regular file at `path`, from `offset`; None if it is missing and
    `missing_ok`. Raise OSError if it cannot be read, MnistGanError if it is not a regular file."""
    try:
        # builtins.open with a non-blocking opener: a FIFO planted under a run file's name cannot block the open
        handle = open(path, "rb", opener=_non_blocking)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise
    with handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise MnistGanError(f"{path}: not a regular file; refusing to read it")
        handle.seek(offset)
        return handle.read() if count is None else handle.read(count)


def _non_blocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


class EpochLength:
    """Bounds on a run's iterations per epoch, which its metrics lines do not record: each train line's
    epoch = (iteration - 1) // length + 1 narrows them down."""

    def __init__(self):
        self.low, self.high = 1, math.inf

    @classmethod
    def of(cls, records: list[dict]) -> EpochLength:
        """The bounds that `records` (train lines) set."""
        length = cls()
        for record in records:
            length.update(record.get("iteration"), record.get("epoch"))
        return length

    def update(self, iteration, epoch) -> None:
        if isinstance(iteration, int) and isinstance(epoch, int) and iteration >= 1 and epoch >= 1:
            self.low = max(self.low, (iteration - 1) // epoch + 1)
            if epoch > 1:
                self.high = min(self.high, (iteration - 1) // (epoch - 1))


def planned_iterations(train: dict, epoch_length: EpochLength, logged: bool) -> tuple[int | None, bool]:
    """(iterations the run will make, whether that is exact), from its config.json's "train" section: its
    --iterations, or --epochs times the epoch length's lower bound once a train line has been logged (exact when
    the bounds meet); (None, False) when neither tells."""
    if isinstance(train.get("iterations"), int) and train["iterations"] > 0:
        return train["iterations"], True
    epochs = train.get("epochs")
    if not isinstance(epochs, int) or epochs < 1 or not logged:
        return None, False
    return epochs * epoch_length.low, epoch_length.low == epoch_length.high
