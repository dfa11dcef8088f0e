"""What a sweep trains: one base configuration, the seeds, and the per-run settings it varies (no torch here).

    sweep = SweepConfig(preset("recommended"), seeds=parse_seeds("0-7"), space={"train.lr": [1e-4, 2e-4]})
    sweep.runs()   # [(name, RunConfig), ...]: every setting (grid or zip) times every seed

From flags (`--seeds 0-7 --lr 1e-4,2e-4,4e-4 --mode grid`) or a sweep file (TOML or JSON, strict keys):

    preset = "recommended"        # optional; the base's fields below override it
    seeds = "0-2"                 # or [0, 1, 2]
    mode = "grid"                 # or "zip": the i-th values of every list go together
    [base.train]                  # settings shared by every run
    iterations = 2000
    [vary]                        # per-run settings and their values
    "train.lr" = [1e-4, 2e-4]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from mnist_gan.errors import MnistGanError, quote
from mnist_gan.settings.config import SECTIONS, RunConfig, preset
from mnist_gan.settings.fieldtypes import checked_sections, field_kinds, type_problem
from mnist_gan.settings.validation import validate

# Per-run settings a sweep may vary: scalars the batched step reads per run, and each run's own bookkeeping and
# data. Anything else changes shapes or the code path, and is the same in every run of one sweep. Of the
# weights, 0 switches a term off (ON_OFF below): the runs of one sweep have it all on or all off.
PER_RUN = frozenset({
    "train.seed", "train.lr", "train.lr_d", "train.lr_g", "train.beta1", "train.beta2", "train.momentum",
    "train.label_smoothing", "train.ema_decay", "train.r1_gamma", "train.gp_weight", "train.diversity",
    "train.top_k_min", "train.iterations", "train.epochs", "train.max_minutes",
    "train.log_every", "train.sample_every", "train.checkpoint_every", "train.keep", "train.eval_every",
    "train.tensorboard", "data.data", "data.cache_dir", "data.shuffle", "data.limit", "preset",
})
# Per-run weights whose 0 skips a computation (the EMA, a penalty's pass through D, the pairs of z)
ON_OFF = ("train.ema_decay", "train.r1_gamma", "train.gp_weight", "train.diversity")
MODES = ("grid", "zip")
MAX_RUNS = 4096  # a guard against a typo like --seeds 0-99999999; memory refuses far sooner
FILE_KEYS = ("preset", "seeds", "mode", "base", "vary")


@dataclass
class SweepConfig:
    """A base configuration, the seeds, and {"section.field": [values]} of the per-run settings varied."""

    base: RunConfig
    seeds: list[int] = field(default_factory=lambda: [0])
    space: dict[str, list] = field(default_factory=dict)
    mode: str = "grid"

    def settings(self) -> list[dict[str, object]]:
        """Each setting of the varied fields (the grid's product, or the lists zipped), in order."""
        keys = list(self.space)
        if self.mode == "zip":
            return [dict(zip(keys, values, strict=True)) for values in zip(*self.space.values(), strict=True)]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.space.values())]

    def runs(self) -> list[tuple[str, int, RunConfig]]:
        """(name, setting index, config) of every run: each setting times each seed, validated."""
        runs = []
        for index, setting in enumerate(self.settings()):
            for seed in self.seeds:
                config = RunConfig.from_dict(self.base.to_dict())
                for key, value in {**setting, "train.seed": seed}.items():
                    section, name = key.split(".")
                    setattr(getattr(config, section), name, value)
                validate(config, training=True)
                runs.append((f"s{index:02d}-seed{seed}", index, config))
        return runs


def check_sweep(sweep: SweepConfig) -> SweepConfig:
    """Refuse (MnistGanError, one line) an unknown mode, a varied setting that is not per run, an empty list,
    zipped lists of unequal lengths, or more than MAX_RUNS runs; return `sweep`."""
    if sweep.mode not in MODES:
        raise MnistGanError(f"sweep mode must be one of {', '.join(MODES)}, got {quote(sweep.mode)}")
    if not sweep.seeds:
        raise MnistGanError("a sweep needs at least one seed")
    if len(set(sweep.seeds)) < len(sweep.seeds):
        raise MnistGanError("a seed is given twice")
    for key, values in sweep.space.items():
        if key not in PER_RUN or key == "train.seed":
            raise MnistGanError(f"a sweep cannot vary {quote(key)}: it changes shapes or the code path "
                                f"(per-run settings: {', '.join(sorted(PER_RUN - {'preset', 'train.seed'}))})")
        if not values:
            raise MnistGanError(f"the sweep's values of {key} are empty")
    lengths = {len(values) for values in sweep.space.values()}
    if sweep.mode == "zip" and len(lengths) > 1:
        raise MnistGanError(f"--mode zip pairs the i-th values of each list; the lists' lengths differ: "
                            f"{', '.join(f'{k} {len(v)}' for k, v in sweep.space.items())}")
    count = len(sweep.seeds) * (len(sweep.settings()) if sweep.space else 1)
    if count > MAX_RUNS:
        raise MnistGanError(f"the sweep has {count:,} runs; at most {MAX_RUNS:,}")
    return sweep


def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0, ..., 7]; '0,3,5' and '0-2,9' too. Refuses an empty range ('5-3') and negative seeds."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            first, last = (int(low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise MnistGanError(f"--seeds takes numbers and ranges like 0-7 or 0,3,5; got {quote(part)}") from None
        if last < first:
            raise MnistGanError(f"--seeds: the range {part} is empty")
        if last - first >= MAX_RUNS:
            raise MnistGanError(f"--seeds: the range {part} has more than {MAX_RUNS:,} seeds")
        seeds.extend(range(first, last + 1))
    return seeds


def parse_values(key: str, text: str) -> list:
    """A flag's comma-separated values for the setting `key` ("train.lr"), each of the field's type."""
    section, name = key.split(".")
    kind, nullable = field_kinds(SECTIONS[section])[name]
    values = []
    for word in str(text).split(","):
        word = word.strip()
        if nullable and word.lower() in ("none", ""):
            values.append(None)
            continue
        try:
            value = {bool: lambda w: {"true": True, "false": False}[w.lower()], int: int, float: float,
                     str: str}[kind](word)
        except (ValueError, KeyError):
            raise MnistGanError(f"--{name.replace('_', '-')}: {quote(word)} is not {kind.__name__}") from None
        values.append(value)
    return values


def sweep_from_file(path: str | Path, overrides: dict[str, object] | None = None) -> SweepConfig:
    """The sweep a TOML/JSON file describes (see the module's docstring); `overrides` (flags) set base fields.
    Refuses unknown keys, wrong types and everything check_sweep refuses, naming the file."""
    from mnist_gan.settings.config_file import _parse_json, _parse_toml, _read_text

    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise MnistGanError(f"{path}: a sweep file is .toml or .json")
    language = path.suffix[1:].upper()
    raw = (_parse_toml if language == "TOML" else _parse_json)(path, _read_text(path, language))
    try:
        return _sweep_from_raw(raw, overrides or {})
    except MnistGanError as error:
        raise MnistGanError(f"{path}: {error}") from None


def _sweep_from_raw(raw: object, overrides: dict[str, object]) -> SweepConfig:
    if not isinstance(raw, dict):
        raise MnistGanError("a sweep file is a table (a JSON object)")
    unknown = [key for key in raw if key not in FILE_KEYS]
    if unknown:
        raise MnistGanError(f"unknown sweep key {quote(unknown[0])}; known: {', '.join(FILE_KEYS)}")
    base = preset(raw.get("preset", "recommended")) if isinstance(raw.get("preset", ""), str) else None
    if base is None:
        raise MnistGanError("preset must be a string")
    _, sections = checked_sections(raw.get("base", {}), SECTIONS)
    values = {f"{section}.{name}": value for section, fields in sections.items() for name, value in fields.items()}
    for key, value in {**values, **overrides}.items():
        section, name = key.split(".")
        setattr(getattr(base, section), name, value)
    seeds = raw.get("seeds", [0])
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else seeds
    if not isinstance(seeds, list) or any(type_problem(s, int, False) or s < 0 for s in seeds):
        raise MnistGanError("seeds must be a range like \"0-7\" or a list of seeds (integers >= 0)")
    vary = raw.get("vary", {})
    if not isinstance(vary, dict):
        raise MnistGanError("vary must be a table of setting names and lists of values")
    space = {}
    for key, listed in vary.items():
        section, _, name = str(key).partition(".")
        if section not in SECTIONS or name not in field_kinds(SECTIONS[section]):
            raise MnistGanError(f"vary: unknown setting {quote(key)} (write section.field, e.g. train.lr)")
        if not isinstance(listed, list):
            raise MnistGanError(f"vary.{key} must be a list of values")
        for value in listed:
            problem = type_problem(value, *field_kinds(SECTIONS[section])[name])
            if problem:
                raise MnistGanError(f"vary.{key}: {problem}")
        space[key] = listed
    return check_sweep(SweepConfig(base, [int(s) for s in seeds], space, raw.get("mode", "grid")))


def describe(setting: dict[str, object]) -> str:
    """'lr=0.0001 beta2=0.99' for a setting; 'base' for none."""
    return " ".join(f"{key.split('.')[1]}={value}" for key, value in setting.items()) or "base"

