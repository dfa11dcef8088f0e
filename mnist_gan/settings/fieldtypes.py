"""Strict reading of untrusted values into the config dataclasses: each field's declared type, and the one check
of plain data (a config.json, a checkpoint's record, a --config file) against it.

Every value must have its field's type (an int where an int is due, not a string, a float or a bool); unknown
names are refused, naming the first few. Values are checked before they are formatted or used, and a refusal is
a MnistGanError of one short line naming the field. Ranges are checked later, by mnist_gan.settings.validation.validate.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing

from mnist_gan.errors import MnistGanError, quote

MAX_TEXT_CHARS = 4096  # a text setting is a name, a device or a path, and Linux's PATH_MAX is 4,096
MAX_NAME_CHARS = 40  # of an unknown field's name quoted in a refusal
MAX_UNKNOWN_SHOWN = 3  # unknown names listed in one refusal; the rest are counted

_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
_KINDS: dict[type, dict[str, tuple[type, bool]]] = {}


def field_kinds(cls: type) -> dict[str, tuple[type, bool]]:
    """Field name -> (type, may be None), read from the dataclass' annotations (e.g. `int | None`)."""
    if cls not in _KINDS:
        hints = typing.get_type_hints(cls)
        kinds = {}
        for f in dataclasses.fields(cls):
            args = [a for a in typing.get_args(hints[f.name]) if a is not type(None)]
            kinds[f.name] = (args[0], True) if args else (hints[f.name], False)
        _KINDS[cls] = kinds
    return _KINDS[cls]


def type_problem(value: object, kind: type, nullable: bool) -> str | None:
    """Why `value` cannot be a setting of type `kind` ("must be an integer, got '12'"), or None if it can."""
    if value is None:
        return None if nullable else f"must be {_KIND_WORDS[kind]}, got null"
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)  # (numpy's bool is no Real)
    fits = {bool: isinstance(value, bool), int: is_number and isinstance(value, numbers.Integral),
            float: is_number, str: isinstance(value, str)}[kind]
    if not fits:
        shown = str(value).lower() if isinstance(value, bool) else quote(value)  # JSON's true, not Python's True
        return f"must be {_KIND_WORDS[kind]}{' or null' if nullable else ''}, got {shown}"
    if kind is str and len(value) > MAX_TEXT_CHARS:
        return f"must be at most {MAX_TEXT_CHARS:,} characters, got {len(value):,}"
    if kind is float:
        try:
            float(value)
        except OverflowError:
            return f"must be a number within floating-point range, got {quote(value)}"
    return None


def checked_sections(raw: object, sections: dict[str, type]) -> tuple[str | None, dict[str, dict[str, object]]]:
    """(preset name or None, {section: {field: value}}) from plain data laid out as RunConfig.to_dict() writes it:
    an optional "preset" and a table of fields per section, each value of its field's type (an int given for a
    float field becomes a float). Nothing is applied; fields left out are simply absent."""
    if not isinstance(raw, dict):
        raise MnistGanError(f"a run configuration must be a JSON object (a TOML table), got {quote(raw)}")
    owners = {name: section for section, cls in sections.items() for name in field_kinds(cls)}
    _refuse_unknown(raw, ("preset", *sections), "run configuration", owners)
    preset_name = raw.get("preset")
    if "preset" in raw:
        problem = type_problem(preset_name, str, nullable=False)
        if problem:
            raise MnistGanError(f"preset {problem}")
    checked = {}
    for name, section_cls in sections.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise MnistGanError(f"{name} must be a JSON object (a TOML table) of settings, got {quote(values)}")
        kinds = field_kinds(section_cls)
        _refuse_unknown(values, kinds, name)
        for key, value in values.items():
            problem = type_problem(value, *kinds[key])
            if problem:
                raise MnistGanError(f"{name}.{key} {problem}")
        checked[name] = {key: _as_kind(value, kinds[key][0]) for key, value in values.items()}
    return preset_name, checked


def _as_kind(value: object, kind: type) -> object:
    """A checked value as its field's plain Python type (an int given for a float field becomes a float)."""
    if value is None or kind is str or kind is bool:
        return value
    return float(value) if kind is float else int(value)


def _refuse_unknown(values: dict, known, where: str, owners: dict[str, str] | None = None) -> None:
    unknown = [key for key in values if key not in known]
    if unknown:
        shown = ", ".join(quote(key, MAX_NAME_CHARS) for key in unknown[:MAX_UNKNOWN_SHOWN])
        if len(unknown) > MAX_UNKNOWN_SHOWN:
            shown += f" and {len(unknown) - MAX_UNKNOWN_SHOWN:,} more"
        owner = (owners or {}).get(unknown[0]) if isinstance(unknown[0], str) else None
        hint = f" (it belongs in the {owner} section)" if owner and len(unknown) == 1 else ""
        raise MnistGanError(f"unknown {where} field{'s' if len(unknown) > 1 else ''}: {shown}{hint}")
