"""The series a run's records make (mnist_gan.run.history): grown line by line, it equals the series read at
once, and the rolling median's fast path agrees with its NaN-aware one."""

from __future__ import annotations

import json

import numpy as np
from helpers import MEASURED

from mnist_gan.diagnosis.detectors import record_problems
from mnist_gan.run.history import (
    CLASS_PROBE,
    CLASS_REFERENCE,
    FIELDS,
    Series,
    SeriesBuilder,
    newest,
    rolling_median,
)


def test_series_grown_line_by_line_equals_the_series_read_at_once():
    records = [json.loads(line) for line in (MEASURED / "lr-d-10x-minimax.jsonl").read_text().splitlines()[1:]]
    records = [r for r in records if "fid" not in r]
    records[3] = {k: v for k, v in records[3].items() if k not in FIELDS}  # a line without probes: NaN there
    builder, whole = SeriesBuilder(records[:5]), Series.from_records(records)
    for record in records[5:]:
        builder.append(record)
    grown = builder.series()
    assert np.array_equal(grown.iteration, whole.iteration) and set(grown.values) == set(whole.values)
    for name, values in whole.values.items():
        assert np.array_equal(grown.values[name], values, equal_nan=True), name
    reference = newest(records, CLASS_REFERENCE), newest(records, CLASS_PROBE)
    problems = record_problems(grown, True, *reference)
    assert problems and problems == record_problems(records)  # every detector reads them alike


def test_rolling_median_fast_path_matches_the_nan_aware_one():
    rng = np.random.default_rng(0)
    for n, width in ((1, 3), (2, 3), (7, 3), (50, 9)):
        values = rng.lognormal(size=n)
        with_nan = np.concatenate([values, [np.nan]])  # takes the NaN-aware path
        assert np.array_equal(rolling_median(values, width), rolling_median(with_nan, width)[:n])
