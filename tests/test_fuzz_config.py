"""Property-based tests of the run configuration a user can hand-edit: whatever a run's config.json holds (random
types, nesting, shared or deep structures, huge numbers, broken text), `mnist-gan train --resume` ends with
status 0 or 2 and at most one short error line, never a traceback, and never hangs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tempfile
import typing
from pathlib import Path

import pytest
from helpers import deep, time_limit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_gan.cli.parser import main
from mnist_gan.errors import MAX_MESSAGE_CHARS, MnistGanError
from mnist_gan.settings.config import SECTIONS, RunConfig
from mnist_gan.settings.validation import validate

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LIMIT_S = 10  # one resume stuck this long counts as hung
DATA_REACHED = "fuzz: the configuration was accepted and the data would load now"

scalars = (st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_subnormal=False)
           | st.text(max_size=12)
           | st.sampled_from([0, 1, 2, 16, 100, 2**32, 2**63, -1, 1e-4, 0.5, 1e308, "cpu", "seed", "dcgan", "adam"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
FIELDS = {name: sorted(f.name for f in dataclasses.fields(cls)) for name, cls in SECTIONS.items()}
sections = st.dictionaries(st.sampled_from(sorted({f for names in FIELDS.values() for f in names}) + ["bogus"]),
                           json_values, max_size=5)
configs = st.dictionaries(st.sampled_from(["preset", "model", "data", "train", "other"]),
                          st.one_of(sections, json_values), max_size=4)

raw_texts = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.builds(deep, st.integers(1, 300_000), st.sampled_from(["[", "{"])),
    # nested inside a real field while Python's json can still write it, the raw text beyond that
    st.builds(lambda depth, f: json.dumps({"train": {f: json.loads(deep(depth))}}) if depth < 500 else deep(depth),
              st.integers(1, 2000), st.sampled_from(FIELDS["train"])),
    st.integers(1, 6000).map(lambda n: '{"train": {"seed": ' + "9" * n + "}}"),
)


@pytest.fixture
def no_data(monkeypatch):
    """Stop an accepted configuration at the data load: the fuzzing is about reading it, not training on it."""
    import mnist_gan.training.loop as train_module

    def stop(*args, **kwargs):
        raise MnistGanError(DATA_REACHED)

    monkeypatch.setattr(train_module, "load_dataset", stop)


def resume_with(text: str) -> tuple[int, str]:
    """Write `text` as the config.json of a run that has no checkpoint yet, resume it; (status, stderr)."""
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory) / "run"
        (run_dir / "checkpoints").mkdir(parents=True)
        (run_dir / "config.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        err = io.StringIO()
        with time_limit(LIMIT_S), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = main(["train", "--resume", str(run_dir), "--no-progress"])
            except SystemExit as exit_:
                status = exit_.code
    return status, err.getvalue()


def check_outcome(status: int, err: str) -> None:
    assert status in (0, 2), err[:2000]
    assert "Traceback" not in err, err[:2000]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) <= 1 and all(len(line) <= MAX_MESSAGE_CHARS + 100 for line in errors), err[:2000]
    assert (status == 2) == bool(errors), err[:2000]


@FUZZ
@given(config=configs, allow_nan=st.booleans())
def test_resume_on_random_config_json_is_exit_0_or_2(no_data, config, allow_nan):
    try:
        text = json.dumps(config, allow_nan=allow_nan)
    except ValueError:  # a NaN with allow_nan False: the strict writer refuses, so write its text form
        text = repr(config)
    check_outcome(*resume_with(text))


@settings(FUZZ, max_examples=60)
@given(text=raw_texts)
def test_resume_on_broken_or_deeply_nested_text_is_exit_0_or_2(no_data, text):
    check_outcome(*resume_with(text))


def test_an_accepted_fuzzed_config_reaches_the_data(no_data):
    """Sanity check for the fuzzing above: a good configuration gets past every check, to the data load."""
    status, err = resume_with(json.dumps({"preset": "seed", "train": {"device": "cpu", "iterations": 1}}))
    assert status == 2 and DATA_REACHED in err


@settings(FUZZ, max_examples=200)
@given(config=configs)
def test_from_dict_accepts_only_the_declared_types(config):
    """RunConfig.from_dict and validate: either our one-line error, or a config whose every field has exactly its
    declared type (no string for a number, no bool for an int), however the input is nested or shared."""
    with time_limit(LIMIT_S):
        try:
            result = RunConfig.from_dict(config)
            validate(result)
        except MnistGanError as error:
            assert str(error) and "\n" not in str(error) and len(str(error)) <= MAX_MESSAGE_CHARS
            return
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value = getattr(getattr(result, name), f.name)
            allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
            assert type(value) in allowed, (name, f.name, value)
