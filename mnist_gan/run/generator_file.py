"""The generator export: G's weights in a safetensors file, with its model config and training iteration in the
file's metadata (a run's `generator.safetensors`), so that `generate` and any safetensors tool need nothing else.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.gan.weights import build_models, check_finite, expected_shapes, fit_problem, load_state
from mnist_gan.io.headers import open_safetensors, write_safetensors
from mnist_gan.io.untrusted import ascii_int
from mnist_gan.settings.config import ModelConfig
from mnist_gan.settings.validation import config_from_record

FORMAT = "mnist-gan-generator"  # the metadata's "format": what tells an export from other safetensors files
FORMAT_VERSION = 1  # bump when the weights' layout or the metadata changes meaning
# A generator export holds G alone: the seed preset's is 27 MB.
MAX_EXPORT_BYTES = 2**30
MAX_ITERATION = 2**63 - 1  # the iteration is a signed 64-bit count wherever it is used


def generator_metadata(model_config: ModelConfig, iteration: int,
                       class_names: list[str] | tuple[str, ...] | None = None) -> dict[str, str]:
    """The text metadata that describes a generator (in this export and in the ONNX one); `class_names`, when
    given, names its classes (mnist_gan.run.classes reads them back)."""
    names = {"class_names": json.dumps(list(class_names))} if class_names else {}
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "model_config": json.dumps(dataclasses.asdict(model_config)), "iteration": str(iteration), **names}


def export_generator(G: nn.Module, model_config: ModelConfig, path: str | Path, iteration: int,
                     class_names: list[str] | tuple[str, ...] | None = None) -> None:
    """Write G's weights and config (and its class names, when given) to a safetensors file, atomically."""
    write_safetensors(path, G.state_dict(), generator_metadata(model_config, iteration, class_names))


def read_generator_export(path: str | Path) -> tuple[ModelConfig, nn.Module, int]:
    """(model config, G in eval mode, training iteration) from a `generator.safetensors` export.

    The header, the metadata and every weight shape are checked against the declared config before the weights
    are read or the model is built; weights holding NaN or infinity are refused. An iteration the metadata does
    not hold as a plain number reads as 0.
    """
    path = Path(path)
    with open_safetensors(path, "generator export", MAX_EXPORT_BYTES) as export:
        model_config = _model_config(export.metadata, path)
        problem = fit_problem(expected_shapes(model_config, path)[0], export.shapes)
        if problem:
            raise MnistGanError(f"{path}: generator weights do not fit this architecture ({problem})")
        tensors = export.tensors()
        iteration = ascii_int(export.metadata.get("iteration", "0"), 0, MAX_ITERATION) or 0
    check_finite(tensors, "generator", path)
    G = build_models(model_config, path)[0]
    load_state(G, tensors, "generator", path)
    return model_config, G.eval(), iteration


def load_exported_generator(path: str | Path) -> tuple[ModelConfig, nn.Module]:
    """(model config, G in eval mode) from a `generator.safetensors` export, checked as read_generator_export."""
    model_config, G, _ = read_generator_export(path)
    return model_config, G


def _model_config(metadata: dict[str, str], path: Path) -> ModelConfig:
    """The model config an export's metadata records, checked like one given on the command line."""
    if metadata.get("format") != FORMAT or "model_config" not in metadata:
        raise MnistGanError(f"{path}: safetensors file without mnist-gan generator metadata")
    version = ascii_int(metadata.get("format_version", ""), 0, 10**9)
    if version is None:
        raise MnistGanError(f"{path}: export format version {quote(metadata.get('format_version', ''))} "
                            "is not a number")
    if version > FORMAT_VERSION:
        raise MnistGanError(f"{path}: export format version {version} is newer than this "
                            "mnist-gan understands; upgrade mnist-gan")
    try:
        raw = json.loads(metadata["model_config"])
    except (ValueError, RecursionError) as error:
        raise MnistGanError(f"{path}: corrupt model config in metadata ({type(error).__name__}: "
                            f"{clip(error, 200)})") from None
    return config_from_record({"model": raw}, f"{path}: invalid model config in metadata").model
