"""Command-line flags made from the config dataclasses' fields, so the CLI, the Python API and `config.json`
share one set of names and defaults: TrainConfig.batch_size is --batch-size, stored as "train.batch_size" in the
parsed arguments until `config_from_args` applies it to the preset. Each flag's help shows the value the preset
gives it, and `preset_differences` says, as flags, where a preset differs from the default one.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from mnist_gan.settings.config import DEFAULT_PRESET, SECTIONS, RunConfig, apply_overrides, preset
from mnist_gan.settings.fieldtypes import field_kinds


def _nullable(kind: type):
    """An argparse type for an `X | None` field: `none` (or nothing) is None, anything else is parsed as X."""
    def parse(text: str):
        if text.lower() in ("none", ""):
            return None
        return kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_config_flags(parser: argparse.ArgumentParser, preset_name: str = DEFAULT_PRESET) -> None:
    """One flag per config field, e.g. TrainConfig.batch_size -> --batch-size; unset flags keep the preset's value.

    Each help ends with the flag's value under `preset_name` ("(default: 0.0004)", "(default: none)"): what a
    command that names this preset, and not the flag, runs.
    """
    values = preset(preset_name).to_dict()
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings (defaults: the {preset_name} preset's)")
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind, nullable = field_kinds(cls)[f.name]
            value = values[section][f.name]
            shown = f" (default: {'none' if value is None else value})".replace("%", "%%")  # argparse formats help
            kwargs = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS,
                      "help": f.metadata.get("help", "") + shown}
            if kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            else:
                group.add_argument(flag, type=_nullable(kind) if nullable else kind,
                                   choices=f.metadata.get("choices"), metavar=f.name.upper(), **kwargs)


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, dict[str, object]]:
    """The preset named by --preset (default: DEFAULT_PRESET, recommended) with every flag the user gave applied
    (config.apply_overrides); also returns those overrides."""
    overrides = {key: value for key, value in vars(args).items() if "." in key}
    return apply_overrides(preset(args.preset or DEFAULT_PRESET), overrides), overrides


def preset_differences(name: str) -> dict[str, object]:
    """{"section.field": value} for every setting where preset `name` differs from DEFAULT_PRESET (whose values
    are the field defaults): `--preset NAME` runs what `--preset recommended` with these settings as flags runs."""
    default, named = preset(DEFAULT_PRESET).to_dict(), preset(name).to_dict()
    return {f"{section}.{key}": value for section in SECTIONS for key, value in named[section].items()
            if value != default[section][key]}


def flag_words(key: str, value: object) -> str:
    """The command line's spelling of one setting: ("train.lr", 0.001) -> "--lr 0.001", ("data.shuffle",
    False) -> "--no-shuffle", ("train.lr_d", None) -> "--lr-d none"."""
    name = key.split(".")[1].replace("_", "-")
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {'none' if value is None else shlex.quote(str(value))}"
