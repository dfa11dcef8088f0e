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
import logging
import math
import os
import stat
from pathlib import Path

from mnist_gan.errors import MnistGanError

logger = logging.getLogger(__name__)

TRAIN, EVAL = "train", "eval"  # the kinds of metrics.jsonl line
MAX_LINE_BYTES = 1 << 16  # a metrics line longer than this was not written by a run: skipped, not parsed
MAX_METRICS_BYTES = 1 << 30  # a metrics.jsonl larger than this is refused: a line every iteration of a million-
#                              iteration run is ~300 MB; its records cost a few times the file (docs/reliability.md)
MAX_NUMBER_CHARS = 40  # a number written with more characters is no number a run wrote (a float's repr: 24)
MAX_INTEGER = 2**63 - 1  # a field holding an integer beyond 64 bits is dropped (counts, iterations, times)
MAX_TEXT_CHARS = 200  # a text field (a kind, a probe's name, a warning's code) longer than this is dropped
MAX_LIST_ITEMS = 1000  # a list field (a class histogram: MAX_CLASSES entries at most; warnings) longer is dropped
MAX_LINE_WARNINGS = 10  # damaged lines named one by one per read; the rest are counted in one more warning


class DamagedLine(ValueError):
    """A metrics line no run wrote: a number too long to read."""


def _number_text(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:  # before int() or float(): converting thousands of digits is what costs
        raise DamagedLine(f"a number of {len(text):,} characters")
    return text


def _integer(text: str) -> int:
    return int(_number_text(text))


def _float(text: str) -> float:
    return float(_number_text(text))  # beyond float range (1e400) reads as infinity, as the writer's Infinity


def parse_line(line: bytes) -> dict | None:
    """One metrics.jsonl line as a dict, or None for a line a run did not write whole: blank, longer than
    MAX_LINE_BYTES, not JSON (the half line a killed writer leaves), nested too deep to parse, a number longer
    than MAX_NUMBER_CHARS, or not an object. Fields whose value is not what a run writes (see `checked`) are
    dropped, so a kept record holds scalars and short flat lists only."""
    if len(line) > MAX_LINE_BYTES or not line.strip():
        return None
    try:
        record = json.loads(line, parse_int=_integer, parse_float=_float)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError: a run writes ASCII
        return None
    return checked(record) if isinstance(record, dict) else None


def checked(record: dict) -> dict:
    """`record` less the fields a run never writes: a value must be null, a boolean, an integer within 64 bits,
    a float (NaN and infinities included: a loss can be one), text of at most MAX_TEXT_CHARS, or a list of at
    most MAX_LIST_ITEMS such scalars, all numbers or all text. Nested containers (however deep) are dropped
    unread, so nothing a record keeps costs more than a small multiple of its line."""
    return {key: value for key, value in record.items() if len(key) <= MAX_TEXT_CHARS and _plain(value, True)}


def _plain(value, list_allowed: bool) -> bool:
    if isinstance(value, list):
        if not list_allowed or len(value) > MAX_LIST_ITEMS or not all(_plain(item, False) for item in value):
            return False
        return all(_is_text(item) for item in value) or not any(_is_text(item) for item in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -MAX_INTEGER <= value <= MAX_INTEGER
    return isinstance(value, str) and len(value) <= MAX_TEXT_CHARS or isinstance(value, (bool, float, type(None)))


def _is_text(value) -> bool:
    return isinstance(value, str)


def format_line(record: dict) -> str:
    """`record` as one metrics line: strict JSON with its newline, every non-finite number (NaN, inf) written as
    null, as JSON has no NaN. Every reader takes a null back as no number (a gap in a curve, not a figure)."""
    return json.dumps(finite_values(record), allow_nan=False) + "\n"


def finite_values(value):
    """`value` with every non-finite float, in lists and dicts too, replaced by None (JSON's null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [finite_values(item) for item in value]
    if isinstance(value, dict):
        return {key: finite_values(item) for key, item in value.items()}
    return value


def is_number(value) -> bool:
    """Whether a record's value is a number (an int or a float, NaN and infinities included; never a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    A run's whole history is read, as the diagnosis and a resume need all of it; each damaged line is skipped
    with a warning naming its number (a half line at the end, which a killed writer leaves, silently). Raise
    OSError if it cannot be read, MnistGanError if it is not a regular file or larger than MAX_METRICS_BYTES."""
    data = read_regular(path, MAX_METRICS_BYTES + 1, missing_ok=True)
    if data is None:
        return []
    if len(data) > MAX_METRICS_BYTES:
        raise MnistGanError(f"{path}: larger than {MAX_METRICS_BYTES >> 20:,} MiB, so not a run's metrics; "
                            "refusing to read it")
    records, damaged = [], []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        record = parse_line(line)
        if record is not None:
            records.append(record)
        elif line.strip() and number < len(lines):  # the last piece has no newline: a writer's half line
            damaged.append(number)
    warn_damaged(path, damaged)
    return records


def warn_damaged(path: Path, numbers: list[int]) -> None:
    """One warning per damaged line (the first MAX_LINE_WARNINGS), then one for the rest."""
    for number in numbers[:MAX_LINE_WARNINGS]:
        logger.warning(f"{path}: line {number} is damaged (not a whole JSON object of at most "
                       f"{MAX_LINE_BYTES:,} bytes, or a number too long to read); skipped")
    if len(numbers) > MAX_LINE_WARNINGS:
        logger.warning(f"{path}: {len(numbers) - MAX_LINE_WARNINGS:,} more damaged lines skipped "
                       f"(the last at line {numbers[-1]})")


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
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MnistGanError(f"{path}: not a regular file; refusing to read it")
        handle.seek(offset)
        # read(count) would reserve `count` bytes at once: ask for what the file holds (and some it may grow by)
        return handle.read() if count is None else handle.read(min(count, max(0, info.st_size - offset) + (1 << 16)))


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
        if _count(iteration) and _count(epoch):
            self.low = max(self.low, (iteration - 1) // epoch + 1)
            if epoch > 1:
                self.high = min(self.high, (iteration - 1) // (epoch - 1))


def planned_iterations(train: dict, epoch_length: EpochLength, logged: bool) -> tuple[int | None, bool]:
    """(iterations the run will make, whether that is exact), from its config.json's "train" section: its
    --iterations, or --epochs times the epoch length's lower bound once a train line has been logged (exact when
    the bounds meet); (None, False) when neither tells."""
    iterations, epochs = train.get("iterations"), train.get("epochs")
    if _count(iterations):
        return iterations, True
    if not _count(epochs) or not logged or epochs * epoch_length.low > MAX_INTEGER:
        return None, False
    return epochs * epoch_length.low, epoch_length.low == epoch_length.high


def _count(value) -> bool:
    """Whether a config.json value is a count a run can have: an integer in 1..MAX_INTEGER (a hand-edited or
    damaged file may hold anything)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_INTEGER
