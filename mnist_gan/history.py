"""A run's logged history as arrays: what the detectors of mnist_gan.diagnose read.

Metrics records are plain dicts (one per metrics.jsonl line); a Series lines their numeric fields up as float
arrays (NaN where a record lacks a field), so that a detector reads a prefix of a long run without copying.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

HISTOGRAM_FIELD = "class_histogram"  # the one list-valued field a Series keeps, as a (n, C) array


@dataclass
class Series:
    """Training records as aligned arrays: `iteration` (n,) and one float array (n,) per scalar field, NaN
    where a record lacks it; histograms (n, C) under their field name, NaN rows where absent."""

    iteration: np.ndarray
    values: dict[str, np.ndarray]

    @classmethod
    def from_records(cls, records: list[dict]) -> Series:
        iteration = np.array([r.get("iteration", i + 1) for i, r in enumerate(records)], dtype=np.int64)
        names = {k for r in records for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        values = {name: np.array([_number(r.get(name)) for r in records]) for name in names}
        width = max((len(r[HISTOGRAM_FIELD]) for r in records if isinstance(r.get(HISTOGRAM_FIELD), list)), default=0)
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
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _row(value, width: int) -> list[float]:
    return [float(v) for v in value] if isinstance(value, list) and len(value) == width else [math.nan] * width


def series(records) -> Series:
    """`records` as a Series (a Series is returned as it is)."""
    return records if isinstance(records, Series) else Series.from_records(records)


def rolling_median(values: np.ndarray, width: int) -> np.ndarray:
    """Median of each value and the width-1 before it (fewer at the start), NaNs ignored."""
    padded = np.concatenate([np.full(width - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)  # (n, width)
    with warnings.catch_warnings():  # an all-NaN window is expected (records without the field): NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(windows, axis=1)
