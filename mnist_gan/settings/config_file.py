"""Run configurations from files: a run's own `config.json` (`read_config_file`, for --resume) and
`mnist-gan train --config FILE` with a JSON or TOML file of config fields (`config_from_file`).

The layout is a run's own `config.json`: an optional `preset` and the sections `model`, `data` and `train`, each a
table of fields of the matching dataclass. For --config, fields left out take the preset's values (the one
`--preset` names, else the file's `preset`; with neither, or `preset = "custom"`, the seed preset's, as for any
field a record lacks: see RunConfig.from_dict) and flags given on the command line override the file. Either
file is untrusted input: it must be a regular file of at most MAX_CONFIG_BYTES, and every section, field name
and value type is checked (mnist_gan.settings.fieldtypes), then every value's range
(mnist_gan.settings.validation.validate), before anything uses it, so a wrong one is refused with one line
naming the file and the field.

>>> import json, pathlib
>>> _ = pathlib.Path("rerun.json").write_text(json.dumps({"preset": "dcgan", "train": {"iterations": 500}}))
>>> config = config_from_file("rerun.json", overrides={"train.seed": 2})
>>> config.preset, config.model.architecture, config.train.iterations, config.train.seed
('dcgan', 'dcgan', 500, 2)
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.settings.config import (
    PRESETS,
    SECTIONS,
    RunConfig,
    apply_overrides,
    preset,
)
from mnist_gan.settings.fieldtypes import checked_sections
from mnist_gan.settings.validation import config_from_record, validate

MAX_CONFIG_BYTES = 64 * 1024  # a complete config.json is about 2 KB; a file far larger is not a configuration
# What RunConfig.from_dict records for a config that names no preset; its fields stand on the seed preset's
# values, which a record's missing fields have always meant (not the field defaults, which are recommended's).
CUSTOM_PRESET = "custom"
SUFFIXES = (".json", ".toml")


def read_config_file(path: str | Path) -> RunConfig:
    """The checked RunConfig of a run's config.json, or MnistGanError: one line naming the file and the field."""
    path = Path(path)
    return config_from_record(_parse_json(path, _read_text(path, "JSON")), f"{path}: invalid configuration")


def config_from_file(path: str | Path, preset_name: str | None = None,
                     overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run configuration FILE describes: the preset (`preset_name`, else the file's own, else the seed
    preset's values, named "custom"), then the file's fields, then `overrides` ({"train.seed": 2, ...}, the
    command line's flags).

    Raises MnistGanError, naming the file and the field, for anything wrong with the file.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise MnistGanError(f"{path}: a config file must end in .json or .toml")
    toml = path.suffix.lower() == ".toml"
    text = _read_text(path, "TOML" if toml else "JSON")
    raw = _parse_toml(path, text) if toml else _parse_json(path, text)
    try:
        named, sections = checked_sections(raw, SECTIONS)
    except MnistGanError as error:
        raise MnistGanError(f"{path}: invalid configuration ({error})") from None
    if named is not None and named not in PRESETS and named != CUSTOM_PRESET:
        raise MnistGanError(f"{path}: preset must be one of {', '.join([*PRESETS, CUSTOM_PRESET])}; "
                            f"got {quote(named)}")
    name = preset_name or named or CUSTOM_PRESET
    config = preset("seed") if name == CUSTOM_PRESET else preset(name)
    config.preset = name
    # the file's fields act like flags over the preset (conditional = true replaces the preset's clusters)
    apply_overrides(config, {f"{section}.{field_name}": value
                             for section, values in sections.items() for field_name, value in values.items()})
    try:
        validate(config)  # the file's values; the flags are validated with the rest before training
    except MnistGanError as error:
        raise MnistGanError(f"{path}: invalid configuration ({error})") from None
    return apply_overrides(config, overrides or {})


def _read_text(path: Path, language: str) -> str:
    """The file's text, read through one descriptor that is checked to be a regular file before it is read."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise MnistGanError(f"{path}: cannot open the config file ({error.strerror or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MnistGanError(f"{path}: not a regular file, so not a run configuration")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            payload = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise MnistGanError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    finally:
        os.close(fd)
    if len(payload) > MAX_CONFIG_BYTES:
        raise MnistGanError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB, so not a run configuration")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MnistGanError(f"{path}: not valid {language}: not UTF-8 text (byte {error.start})") from None


def _parse_json(path: Path, text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) < len(pairs):  # JSON would silently keep the last of two values; say so instead
            seen: set[str] = set()
            duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise MnistGanError(f"{path}: field {quote(duplicate)} is given twice")
        return result

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        raise MnistGanError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise MnistGanError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as error:  # an integer too long to convert
        raise MnistGanError(f"{path}: not valid JSON ({clip(error, 200)})") from None


def _parse_toml(path: Path, text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomllib arrived in 3.11
        raise MnistGanError(f"{path}: TOML config files need Python 3.11 or newer; use a .json file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MnistGanError(f"{path}: not valid TOML ({clip(error, 120)})") from None
    except RecursionError:
        raise MnistGanError(f"{path}: not valid TOML (nested too deeply)") from None
    except ValueError as error:
        raise MnistGanError(f"{path}: not valid TOML ({clip(error, 200)})") from None
