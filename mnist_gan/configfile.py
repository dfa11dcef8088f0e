"""Run configurations from files: `mnist-gan train --config FILE` with a JSON or TOML file of config fields.

The layout is a run's own `config.json`: an optional `preset` and the sections `model`, `data` and `train`, each a
table of fields of the matching dataclass. Fields left out take the preset's values (the file's `preset`, or the
one `--preset` names); flags given on the command line override the file. The file is untrusted input: it must
be a regular file of at most MAX_CONFIG_BYTES, and every section, field name and value type is checked before
anything uses it, so a wrong one is refused with one line naming it.

>>> import json, pathlib
>>> _ = pathlib.Path("rerun.json").write_text(json.dumps({"preset": "dcgan", "train": {"iterations": 500}}))
>>> config = config_from_file("rerun.json", overrides={"train.seed": 2})
>>> config.preset, config.model.architecture, config.train.iterations, config.train.seed
('dcgan', 'dcgan', 500, 2)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
import typing
from pathlib import Path
from typing import Any

from mnist_gan.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset
from mnist_gan.errors import MnistGanError

MAX_CONFIG_BYTES = 64 * 1024  # a complete config.json is about 2 KB; a file far larger is not a configuration
MAX_INTEGER = 2**63 - 1  # every integer field ends up in a torch int64 or a C loop bound; larger ones overflow
MAX_SHOWN = 60  # characters of a value or name quoted in an error message, so a hostile file cannot flood it
CUSTOM_PRESET = "custom"  # what RunConfig.from_dict records for a config built from no preset: seed's defaults
SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
SUFFIXES = (".json", ".toml")


def config_from_file(path: str | Path, preset_name: str | None = None,
                     overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run configuration FILE describes: the preset (`preset_name`, else the file's own, else seed's
    defaults), then the file's fields, then `overrides` ({"train.seed": 2, ...}, the command line's flags).

    Raises MnistGanError, naming the file and the field, for anything wrong with the file.
    """
    path = Path(path)
    raw = parse_config_file(path)
    name = preset_name or raw.get("preset", CUSTOM_PRESET)
    config = preset("seed") if name == CUSTOM_PRESET else preset(name)
    config.preset = name
    for section, fields in raw.items():
        if section != "preset":
            for field_name, value in fields.items():
                setattr(getattr(config, section), field_name, value)
    for key, value in (overrides or {}).items():
        section, field_name = key.split(".")
        setattr(getattr(config, section), field_name, value)
    return config


def parse_config_file(path: Path) -> dict[str, Any]:
    """Read and check FILE: {"preset"?: name, section: {field: value}}, every name known, every value of its
    field's type (an integer is accepted for a float field). Nothing is applied yet."""
    if path.suffix.lower() not in SUFFIXES:
        raise MnistGanError(f"{path}: a config file must end in .json or .toml")
    text = _read_text(path)
    raw = _parse_toml(path, text) if path.suffix.lower() == ".toml" else _parse_json(path, text)
    if not isinstance(raw, dict):
        raise MnistGanError(f"{path}: a config file holds one object/table of sections, not a {_kind(raw)}")
    for key, value in raw.items():
        if key == "preset":
            _check_preset(path, value)
        elif key in SECTIONS:
            _check_section(path, key, value)
        else:
            owner = next((s for s, cls in SECTIONS.items() if key in _field_types(cls)), None)
            hint = f" (it belongs in the [{owner}] section)" if owner else ""
            raise MnistGanError(f"{path}: unknown top-level field {_name(key)}{hint}; expected preset, "
                                f"{', '.join(SECTIONS)}")
    return raw


def _read_text(path: Path) -> str:
    """The file's text, read through one descriptor that is checked to be a regular file before it is read."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before fstat can refuse it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise MnistGanError(f"{path}: cannot open the config file ({error.strerror or error})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MnistGanError(f"{path}: not a regular file; --config takes a .json or .toml file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            payload = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise MnistGanError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    finally:
        os.close(fd)
    if len(payload) > MAX_CONFIG_BYTES:
        raise MnistGanError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; not a config file")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MnistGanError(f"{path}: not UTF-8 text (byte {error.start})") from None


def _parse_json(path: Path, text: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        result = dict(pairs)
        if len(result) < len(pairs):  # JSON would silently keep the last of two values; say so instead
            seen: set[str] = set()
            duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise MnistGanError(f"{path}: field {_name(duplicate)} is given twice")
        return result

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as error:
        raise MnistGanError(f"{path}: not valid JSON ({error.msg}, line {error.lineno} column {error.colno})") from None
    except (RecursionError, ValueError) as error:  # absurd nesting; an integer too long to convert
        raise MnistGanError(f"{path}: not a usable JSON config ({type(error).__name__})") from None


def _parse_toml(path: Path, text: str) -> Any:
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomllib arrived in 3.11
        raise MnistGanError(f"{path}: TOML config files need Python 3.11 or newer; use a .json file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise MnistGanError(f"{path}: not valid TOML ({str(error)[:MAX_SHOWN * 2]})") from None
    except (RecursionError, ValueError) as error:
        raise MnistGanError(f"{path}: not a usable TOML config ({type(error).__name__})") from None


def _check_preset(path: Path, value: Any) -> None:
    if not isinstance(value, str) or (value not in PRESETS and value != CUSTOM_PRESET):
        raise MnistGanError(f"{path}: preset must be one of {', '.join([*PRESETS, CUSTOM_PRESET])}; "
                            f"got {_short(value)}")


def _check_section(path: Path, section: str, values: Any) -> None:
    if not isinstance(values, dict):
        raise MnistGanError(f"{path}: {section} must be a table of fields, not a {_kind(values)}")
    types = _field_types(SECTIONS[section])
    for name, value in values.items():
        if name not in types:
            raise MnistGanError(f"{path}: unknown field {section}.{_name(name)}; see mnist-gan train --help")
        kind, nullable = types[name]
        problem = _type_problem(value, kind, nullable)
        if problem:
            raise MnistGanError(f"{path}: {section}.{name} {problem}; got {_short(value)}")
        if kind is float and value is not None:
            values[name] = float(value)  # the dataclass holds floats: 1 in a file means 1.0
        choices = next(f for f in dataclasses.fields(SECTIONS[section]) if f.name == name).metadata.get("choices")
        if choices and value not in choices:
            raise MnistGanError(f"{path}: {section}.{name} must be one of {', '.join(choices)}; got {_short(value)}")


def _type_problem(value: Any, kind: type, nullable: bool) -> str | None:
    """Why `value` cannot be a field of type `kind` (None allowed when `nullable`), or None if it can."""
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
    if value is None:
        return None if nullable else f"must be {expected}, not null"
    if kind is bool:
        return None if isinstance(value, bool) else f"must be {expected}"
    if isinstance(value, bool):  # JSON true is a Python int: refuse it where a number is meant
        return f"must be {expected}, not true/false"
    if kind is int:
        if not isinstance(value, int):
            return f"must be {expected}"
        return None if abs(value) <= MAX_INTEGER else "is out of range"
    if kind is float:
        if not isinstance(value, (int, float)):
            return f"must be {expected}"
        if isinstance(value, int) and abs(value) > MAX_INTEGER:
            return "is out of range"
        return "must be a number, not NaN" if isinstance(value, float) and math.isnan(value) else None
    return None if isinstance(value, str) else f"must be {expected}"


def _field_types(cls: type) -> dict[str, tuple[type, bool]]:
    """{field name: (its scalar type, whether None is allowed)} of a config dataclass."""
    hints = typing.get_type_hints(cls)
    types = {}
    for f in dataclasses.fields(cls):
        args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
        types[f.name] = (args[0], True) if args else (hints[f.name], False)
    return types


def _kind(value: Any) -> str:
    return {dict: "table", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _name(key: str) -> str:
    """A field name as written in a message: bare when it looks like one, else quoted and cut."""
    return key if key.isidentifier() and len(key) <= MAX_SHOWN else _short(key)


def _short(value: Any) -> str:
    """repr(value), cut to MAX_SHOWN characters: a file's contents are never echoed at length."""
    if isinstance(value, (dict, list)):
        return f"a {_kind(value)}"
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**MAX_SHOWN else "a huge integer"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."
