"""The search space of `mnist-gan tune SPACE.toml`: which settings a hyper-parameter search varies and over what
ranges, what it scores, on what budget, and how many trials it runs. Read strictly from a TOML or JSON file
(`read_space`) or plain data (`space_from_dict`); no torch, no optuna here (mnist_gan.training.tune runs it).

    name = "lr-search"        # the study's name (default: the file's stem)
    preset = "recommended"    # every trial starts from this preset ...
    trials = 20               # trials in the study, every worker together
    batch = 2                 # K: trials asked for at once and trained together
    seed = 0                  # the sampler's seed
    sampler = "tpe"           # or "random"

    [fixed]                   # ... then these settings (the same for every trial) ...
    batch_size = 32
    "data.limit" = 5000

    [objective]               # ... then the budget; the score is this figure at the last evaluation
    figure = "fid"            # a figure of an evaluation line (metrics.jsonl's "eval" lines)
    direction = "minimize"    # default: the figure's better way (fid: minimize)
    iterations = 2000
    eval_every = 500          # evaluations (and pruning decisions) every this many iterations

    [pruning]                 # Optuna's median pruner (enabled = false: none)
    startup_trials = 2        # complete trials before any trial is pruned
    warmup_evaluations = 1    # a trial is never pruned at its first this many evaluations

    [params.lr_d]             # a setting to vary: the field's name as in config.json, bare (lr_d), with its
    type = "float"            # section (train.lr_d) or as the flag spells it (lr-d); float, int or categorical
    low = 1e-4
    high = 2e-3
    log = true
    [params.loss]
    type = "categorical"
    choices = ["lsgan", "non-saturating"]

Every name is checked (an unknown key is refused, naming it), every value has its field's type, a range must
not be empty or inverted, and each end of each range (each choice) must be a setting `validate` accepts. A
refusal is one MnistGanError line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from mnist_gan.errors import MnistGanError, quote
from mnist_gan.settings.config import DEFAULT_PRESET, PRESETS, SECTIONS, RunConfig, apply_overrides, preset
from mnist_gan.settings.config_file import _parse_json, _parse_toml, _read_text
from mnist_gan.settings.fieldtypes import field_kinds, type_problem
from mnist_gan.settings.validation import MAX_COUNT, MAX_SEED, validate

# The figures of an evaluation line (mnist_gan.training.recorder) a study may score, each with its better way;
# None: no better way (density is about 1 for real data; memorization below 1 is bad, above says little), so a
# study that scores it must say its direction.
FIGURES: dict[str, str | None] = {
    "fid": "minimize", "kid": "minimize", "class_kl": "minimize", "classifier_score": "maximize",
    "confidence": "maximize", "classes_covered": "maximize", "precision": "maximize", "recall": "maximize",
    "coverage": "maximize", "density": None, "memorization": None,
}
DIRECTIONS = ("minimize", "maximize")
KINDS = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random")
MAX_TRIALS = 100_000  # a study's trials; each is a run directory
MAX_BATCH = 64  # trials trained together in one process
MAX_CHOICES = 1000
# Set by [objective] for every trial: a parameter or a [fixed] setting may not set them too.
BUDGET_FIELDS = ("train.iterations", "train.eval_every", "train.epochs")


@dataclass(frozen=True)
class Parameter:
    """One setting the search varies: a range of numbers (float or int, optionally on a log scale) or choices."""

    name: str  # "section.field", e.g. "train.lr_d"
    kind: str  # float, int or categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()


@dataclass(frozen=True)
class Objective:
    figure: str = "fid"
    direction: str = "minimize"
    iterations: int = 2000  # every trial's budget
    eval_every: int = 500


@dataclass(frozen=True)
class Pruning:
    enabled: bool = True
    startup_trials: int = 2
    warmup_evaluations: int = 1


@dataclass(frozen=True)
class TuneSpace:
    """A study's search space, objective and size; `config_for(params)` is one trial's RunConfig."""

    name: str
    params: tuple[Parameter, ...]
    objective: Objective = field(default_factory=Objective)
    pruning: Pruning = field(default_factory=Pruning)
    preset: str = DEFAULT_PRESET
    fixed: dict[str, object] = field(default_factory=dict)  # {"section.field": value}
    trials: int = 20
    batch: int = 2
    seed: int = 0
    sampler: str = "tpe"

    def config_for(self, values: dict[str, object]) -> RunConfig:
        """The preset, the fixed settings, one trial's parameter values ({"train.lr_d": 4e-4}) and the budget."""
        config = apply_overrides(preset(self.preset), dict(self.fixed))
        apply_overrides(config, dict(values))
        config.train.iterations, config.train.eval_every = self.objective.iterations, self.objective.eval_every
        return config

    def identity(self) -> dict:
        """What every worker of one study must agree on (the trial count and batch may differ between them)."""
        plain = dataclasses.asdict(self)
        return {key: plain[key] for key in ("params", "objective", "pruning", "preset", "fixed")}


def read_space(path: str | Path) -> TuneSpace:
    """The TuneSpace a .toml or .json file describes; MnistGanError naming the file and the key otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise MnistGanError(f"{path}: a search space file must end in .toml or .json")
    text = _read_text(path, suffix[1:].upper())
    raw = _parse_toml(path, text) if suffix == ".toml" else _parse_json(path, text)
    try:
        return space_from_dict(raw, default_name=path.stem)
    except MnistGanError as error:
        raise MnistGanError(f"{path}: invalid search space ({error})") from None


def space_from_dict(raw: object, default_name: str = "study") -> TuneSpace:
    """A checked TuneSpace from plain data laid out as the module's docstring shows."""
    table = _table(raw, "a search space", ("name", "preset", "trials", "batch", "seed", "sampler", "fixed",
                                            "objective", "pruning", "params"))
    name = _text(table, "name", default_name)
    preset_name = _choice(table, "preset", tuple(PRESETS), DEFAULT_PRESET)
    fixed = _fixed(_table(table.get("fixed", {}), "fixed"))
    params = tuple(_parameter(key, spec) for key, spec in _flat(_table(table.get("params", {}), "params"),
                                                                 "params", leaf=lambda v: "type" in v).items())
    if not params:
        raise MnistGanError("params: name at least one setting to search")
    twice = sorted({p.name for p in params} & set(fixed))
    if twice:
        raise MnistGanError(f"{twice[0]} is both fixed and searched")
    space = TuneSpace(name=name, params=params, objective=_objective(_table(table.get("objective", {}), "objective")),
                      pruning=_pruning(_table(table.get("pruning", {}), "pruning")), preset=preset_name,
                      fixed=fixed, trials=_integer(table, "trials", 20, 1, MAX_TRIALS),
                      batch=_integer(table, "batch", 2, 1, MAX_BATCH), seed=_integer(table, "seed", 0, 0, MAX_SEED),
                      sampler=_choice(table, "sampler", SAMPLERS, "tpe"))
    _check_settings(space)
    return space


def field_name(key: object) -> str:
    """'section.field' for a setting named bare (lr_d), with its section (train.lr_d) or as a flag (lr-d)."""
    if not isinstance(key, str) or not key:
        raise MnistGanError(f"a setting's name must be text, got {quote(key)}")
    section, dot, name = key.replace("-", "_").rpartition(".")
    if dot and section in SECTIONS and name in field_kinds(SECTIONS[section]):
        return f"{section}.{name}"
    owners = [s for s, cls in SECTIONS.items() if name in field_kinds(cls)] if not dot else []
    if not owners:
        raise MnistGanError(f"unknown setting {quote(key)} (a config field such as lr_d or train.lr_d)")
    return f"{owners[0]}.{name}"


def _kind(name: str) -> tuple[type, bool]:
    section, field_ = name.split(".")
    return field_kinds(SECTIONS[section])[field_]


def _fixed(table: dict) -> dict[str, object]:
    fixed = {}
    for key, value in _flat(table, "fixed", leaf=lambda v: False).items():
        name = _settable(key, "fixed")
        problem = type_problem(value, *_kind(name))
        if problem:
            raise MnistGanError(f"fixed.{key} {problem}")
        fixed[name] = float(value) if _kind(name)[0] is float and value is not None else value
    return fixed


def _settable(key: str, where: str) -> str:
    name = field_name(key)
    if name in BUDGET_FIELDS:
        raise MnistGanError(f"{where}.{key}: every trial's length is [objective]'s iterations and eval_every")
    if name == "data.cache_dir" and where == "params":
        raise MnistGanError(f"{where}.{key} cannot be searched")
    return name


def _flat(table: dict, where: str, leaf) -> dict:
    """A table whose keys may be nested by section ([params.train.lr_d], train.lr = 1 in TOML) made flat:
    {"train.lr_d": spec}. A sub-table under a section's name that is not itself a leaf is a section."""
    flat = {}
    for key, value in table.items():
        if key in SECTIONS and isinstance(value, dict) and not leaf(value):
            for inner, spec in value.items():
                flat[f"{key}.{inner}"] = spec
        else:
            flat[key] = value
    return flat


def _parameter(key: str, spec: object) -> Parameter:
    name = _settable(key, "params")
    where = f"params.{key}"
    spec = _table(spec, where, ("type", "low", "high", "log", "choices"))
    kind = _choice(spec, "type", KINDS, None, where)
    field_type, nullable = _kind(name)
    if kind == "categorical":
        if set(spec) - {"type", "choices"}:
            raise MnistGanError(f"{where}: a categorical parameter takes only choices")
        choices = spec.get("choices")
        if not isinstance(choices, list) or not 2 <= len(choices) <= MAX_CHOICES:
            raise MnistGanError(f"{where}.choices must be a list of 2 to {MAX_CHOICES} values, got {quote(choices)}")
        for value in choices:
            problem = type_problem(value, field_type, nullable)
            if problem:
                raise MnistGanError(f"{where}.choices: each {problem}")
        if field_type is float:  # 1 given for a float setting is 1.0, as in a config file
            choices = [None if c is None else float(c) for c in choices]
        if len({repr(c) for c in choices}) < len(choices):
            raise MnistGanError(f"{where}.choices names a value twice")
        return Parameter(name, kind, choices=tuple(choices))
    if "choices" in spec:
        raise MnistGanError(f"{where}: choices belong to a categorical parameter")
    if field_type is not {"float": float, "int": int}[kind]:
        raise MnistGanError(f"{where}: {name} is {_type_word(field_type)}, so its type cannot be {kind}")
    low, high = (_bound(spec, end, field_type, where) for end in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise MnistGanError(f"{where}.log must be true or false, got {quote(log)}")
    if low == high:
        raise MnistGanError(f"{where}: the range {low}..{high} is empty (a single value belongs in [fixed])")
    if low > high:
        raise MnistGanError(f"{where}: low {low} is above high {high}")
    if log and low <= 0:
        raise MnistGanError(f"{where}: a log scale needs low above 0, got {low}")
    return Parameter(name, kind, low, high, log)


def _bound(spec: dict, end: str, field_type: type, where: str) -> float | int:
    if end not in spec:
        raise MnistGanError(f"{where}: give low and high")
    value = spec[end]
    problem = type_problem(value, field_type, nullable=False)
    if problem:
        raise MnistGanError(f"{where}.{end} {problem}")
    if field_type is float and not math.isfinite(float(value)):
        raise MnistGanError(f"{where}.{end} must be finite, got {quote(value)}")
    return float(value) if field_type is float else int(value)


def _objective(table: dict) -> Objective:
    table = _table(table, "objective", ("figure", "direction", "iterations", "eval_every"))
    figure = _choice(table, "figure", tuple(FIGURES), "fid", "objective")
    natural = FIGURES[figure]
    direction = _choice(table, "direction", DIRECTIONS, natural, "objective")
    if direction is None:
        raise MnistGanError(f"objective.direction: say whether {figure} is to be minimized or maximized")
    iterations = _integer(table, "iterations", 2000, 1, MAX_COUNT, "objective")
    eval_every = _integer(table, "eval_every", min(500, iterations), 1, iterations, "objective")
    return Objective(figure, direction, iterations, eval_every)


def _pruning(table: dict) -> Pruning:
    table = _table(table, "pruning", ("enabled", "startup_trials", "warmup_evaluations"))
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise MnistGanError(f"pruning.enabled must be true or false, got {quote(enabled)}")
    return Pruning(enabled, _integer(table, "startup_trials", 2, 0, MAX_TRIALS, "pruning"),
                   _integer(table, "warmup_evaluations", 1, 0, MAX_COUNT, "pruning"))


def _check_settings(space: TuneSpace) -> None:
    """Each end of each range, and each choice, on top of the preset and the fixed settings, is a setting the
    runs accept (validate's ranges): a search never starts only to refuse its trials one by one."""
    validate(space.config_for({}))
    for parameter in space.params:
        for value in parameter.choices or (parameter.low, parameter.high):
            try:
                validate(space.config_for({parameter.name: value}))
            except MnistGanError as error:
                raise MnistGanError(f"params.{parameter.name} = {quote(value)}: {error}") from None


def _table(raw: object, where: str, known: tuple[str, ...] | None = None) -> dict:
    if not isinstance(raw, dict):
        raise MnistGanError(f"{where} must be a JSON object (a TOML table), got {quote(raw)}")
    unknown = [key for key in raw if known is not None and key not in known]
    if unknown:
        raise MnistGanError(f"unknown key {quote(unknown[0], 40)} in {where} (known: {', '.join(known)})")
    return raw


def _text(table: dict, key: str, default: str) -> str:
    value = table.get(key, default)
    problem = type_problem(value, str, nullable=False)
    if problem or not value.strip() or len(value) > 200:
        raise MnistGanError(f"{key} {problem or 'must be 1 to 200 characters of text'}")
    return value


def _choice(table: dict, key: str, choices: tuple, default, where: str = "") -> object:
    label = f"{where}.{key}" if where else key
    if key not in table and default is None and key == "type":
        raise MnistGanError(f"{label}: say float, int or categorical")
    value = table.get(key, default)
    if value is not None and value not in choices:
        raise MnistGanError(f"{label} must be one of {', '.join(map(str, choices))}; got {quote(value)}")
    return value


def _integer(table: dict, key: str, default: int, low: int, high: int, where: str = "") -> int:
    label = f"{where}.{key}" if where else key
    value = table.get(key, default)
    problem = type_problem(value, int, nullable=False)
    if problem:
        raise MnistGanError(f"{label} {problem}")
    if not low <= value <= high:
        raise MnistGanError(f"{label} must be in {low}..{high:,}, got {quote(value)}")
    return int(value)


def _type_word(kind: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}[kind]
