"""Command-line flags made from the config dataclasses' fields, so the CLI, the Python API and `config.json`
share one set of names and defaults: TrainConfig.batch_size is --batch-size, stored as "train.batch_size" in the
parsed arguments until `config_from_args` applies it to the preset.
"""

from __future__ import annotations

import argparse
import dataclasses

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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, e.g. TrainConfig.batch_size -> --batch-size; unset flags keep the preset's value."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings (defaults: the preset's)")
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind, nullable = field_kinds(cls)[f.name]
            help_text = f.metadata.get("help", "") + (f" (seed: {f.default})" if f.default is not None else "")
            kwargs = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS, "help": help_text}
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

