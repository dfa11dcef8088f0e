"""The names of the classes a generator draws: those of the data set its run trained on (Fashion-MNIST's
"Sneaker", KMNIST's "tsu", an image folder's sub-folders), else their numbers "0", "1", ...

A checkpoint's config names its data set; a generator export may record the names in its metadata, and one at the
top of a run directory falls back on the run's config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from mnist_gan.data.datasets import SOURCES, STACKED_MNIST, data_class_names
from mnist_gan.data.images import MAX_CLASSES, names_for
from mnist_gan.errors import MnistGanError
from mnist_gan.io.headers import open_safetensors
from mnist_gan.run.checkpoint import load_checkpoint, load_latest_checkpoint, models_from_checkpoint
from mnist_gan.run.directory import RunDir
from mnist_gan.run.generator_file import MAX_EXPORT_BYTES, load_exported_generator
from mnist_gan.settings.config import ModelConfig

NAMED_SETS = (*SOURCES, STACKED_MNIST)
MAX_NAME_CHARS = 100  # a class name longer than this is not one a data set gave


def load_generator_with_classes(path: str | Path) -> tuple[ModelConfig, nn.Module, nn.Module | None, list[str]]:
    """load_generator's (model config, G, D or None) from a checkpoint, run directory or generator export, and the
    names of G's model_config.num_classes classes."""
    path = Path(path)
    if path.suffix == ".safetensors" and not path.is_dir():
        model_config, G = load_exported_generator(path)
        return model_config, G, None, class_names_of(path, model_config)
    state_path, state = load_latest_checkpoint(path) if path.is_dir() else (path, load_checkpoint(path))
    config, G, D = models_from_checkpoint(state, state_path)
    return config.model, G, D, names_for(data_class_names(config.data.data), config.model.num_classes)


def class_names_of(path: str | Path, model_config: ModelConfig) -> list[str]:
    """The class names of the generator at `path` without loading its weights: an export's own record, else
    those of the data set in its run's config.json, else the numbers."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        recorded = _recorded_names(path)
        if recorded is not None:
            return names_for(recorded, model_config.num_classes)
    name = run_data_name(path)
    return names_for(data_class_names(name) if name else None, model_config.num_classes)


def _recorded_names(path: Path) -> list[str] | None:
    """An export's metadata "class_names", when it is a list of short strings; else None."""
    try:
        with open_safetensors(path, "generator export", MAX_EXPORT_BYTES) as export:
            text = export.metadata.get("class_names")
        names = json.loads(text) if text else None
    except (MnistGanError, OSError, ValueError, RecursionError):
        return None
    if isinstance(names, list) and len(names) <= MAX_CLASSES and all(
            isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS for name in names):
        return names
    return None


def run_data_name(path: str | Path, named_only: bool = False) -> str | None:
    """The `--data` of the run that `path` (a run directory, a checkpoint or an export in one) belongs to, from
    its config.json; None when there is none. named_only: only a named set (mnist, fashion-mnist, ...), not a
    path, which may have been relative to another working directory."""
    data = RunDir.containing(path).config_dict().get("data")
    name = data.get("data") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name or (named_only and name not in NAMED_SETS):
        return None
    return name
