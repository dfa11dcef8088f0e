"""One self-describing checkpoint file, and the generator-only safetensors export.

A checkpoint is a dict: format version, iteration, epoch, the run's config, G, D, both optimizers and the RNG
states, and G_ema (the moving average of G's weights) when the run keeps one. It is loaded with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers, so a checkpoint can never run code. The export holds G's weights with its config in the
safetensors metadata, readable by any safetensors tool.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_gan.config import ModelConfig, RunConfig, validate
from mnist_gan.errors import MnistGanError, clip, note, quote
from mnist_gan.files import atomic_path
from mnist_gan.headers import open_safetensors
from mnist_gan.models import build_discriminator, build_generator
from mnist_gan.untrusted import MAX_TEXT_CHARS, ascii_int, check_zip, open_regular, tree_leaves

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "iteration", "epoch", "config", "G", "D", "optimizer_g", "optimizer_d", "rng")

# ~25x the largest preset's checkpoint (seed: G, D, their optimizer states and an EMA of G, ~150 MB).
MAX_CHECKPOINT_BYTES = 4 * 2**30
# A generator export holds G alone: the seed preset's is 27 MB.
MAX_EXPORT_BYTES = 2**30
# torch.save writes one zip member per tensor storage: a checkpoint has about 100.
MAX_CHECKPOINT_MEMBERS = 10_000
# The pickle holds the structure and small values (tensors are members of their own): a real one is ~10 KB.
MAX_PICKLE_BYTES = 32 * 2**20
# Values in a checkpoint's nested structure, shared parts counted per reference: a real one has ~400.
MAX_STATE_VALUES = 100_000
# Nesting depth of a checkpoint: a real one is 5 deep (optimizer_g -> state -> 0 -> momentum_buffer).
MAX_STATE_DEPTH = 16


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; `state` must hold REQUIRED_KEYS except format_version."""
    state = {"format_version": FORMAT_VERSION, **state}
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # Through a Python file object, a full disk surfaces as OSError (atomic_path reports it and keeps the
        # previous file); torch.save(state, path) would raise an opaque RuntimeError from its C++ writer.
        torch.save(state, handle)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint written by save_checkpoint; never executes code from the file.

    Any file that is not a complete, current checkpoint raises MnistGanError, whatever its bytes, in time and
    memory bounded by the limits above: the archive is checked before torch reads it, the loaded structure
    before anything walks it, and the weights' shapes against the config before any model is built.
    """
    path = Path(path)
    with open_regular(path, "checkpoint file", MAX_CHECKPOINT_BYTES) as (handle, size):
        data_bytes = _check_archive(handle, size, path)
        handle.seek(0)
        state = _unpickle(handle, path)
    _check_state(state, data_bytes, path)
    return state


def _check_archive(handle, size: int, path: Path) -> int:
    """The bytes of data a checkpoint file holds, its zip directory (torch.save's format) checked first."""
    if handle.read(4) != b"PK\x03\x04":
        return size  # not a zip: torch.load's legacy format, read directly from the file, or refused by it
    handle.seek(0)
    try:
        archive = zipfile.ZipFile(handle)
    except Exception as error:  # BadZipFile, OSError, EOFError, ValueError: damaged or forged
        raise MnistGanError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                            f"{clip(error)})") from None
    with archive:
        total = check_zip(archive, size, str(path), MAX_CHECKPOINT_MEMBERS, MAX_CHECKPOINT_BYTES)
        pickles = [m for m in archive.infolist() if m.filename.rsplit("/", 1)[-1] == "data.pkl"]
    if not pickles:
        raise MnistGanError(f"{path}: not a readable checkpoint (a zip archive without data.pkl, "
                            "so not one torch.save wrote)")
    if max(m.file_size for m in pickles) > MAX_PICKLE_BYTES:
        raise MnistGanError(f"{path}: not a readable checkpoint (its pickle declares "
                            f"{max(m.file_size for m in pickles):,} bytes; at most {MAX_PICKLE_BYTES:,})")
    return total


def _unpickle(handle, path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols; the error below says enough
            warnings.simplefilter("ignore")
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(error)
        if "global" not in reason.lower() and "class" not in reason.lower():
            raise MnistGanError(f"{path}: not a readable checkpoint ({reason})") from None
        raise MnistGanError(f"{path}: refused to load: the file holds objects a safe checkpoint cannot hold, "
                            f"and loading them could run code ({reason})") from None
    except Exception as error:  # the file is untrusted input: any failure to parse it is the file's fault
        raise MnistGanError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                            f"{_first_line(error)})") from None


def _check_state(state: Any, data_bytes: int, path: Path) -> None:
    """Refuse a loaded checkpoint whose structure, fields, config or weights are not a real checkpoint's."""
    try:
        leaves = tree_leaves(state, MAX_STATE_VALUES, MAX_STATE_DEPTH)
    except ValueError as error:
        raise MnistGanError(f"{path}: damaged checkpoint ({error})") from None
    # Views can make tensors look larger than the bytes behind them; models are built to the weights' sizes.
    tensor_bytes = sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))
    if tensor_bytes > data_bytes:
        raise MnistGanError(f"{path}: damaged checkpoint (its tensors claim {tensor_bytes:,} bytes; the file holds "
                            f"{data_bytes:,})")
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise MnistGanError(f"{path}: not an mnist-gan checkpoint (missing fields)")
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MnistGanError(f"{path}: not an mnist-gan checkpoint (format version {quote(version)})")
    if version > FORMAT_VERSION:
        raise MnistGanError(f"{path}: checkpoint format version {version} is newer than this mnist-gan "
                            f"understands ({FORMAT_VERSION}); upgrade mnist-gan")
    problem = _field_problem(state)
    if problem:
        raise MnistGanError(f"{path}: damaged checkpoint ({problem})")
    check_weights_fit(config_from_checkpoint(state, path).model, state, path)


def _field_problem(state: dict) -> str | None:
    """What is wrong with the fields of a loaded checkpoint, or None."""
    for key in ("iteration", "epoch"):
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            return f"{key} is {quote(state[key])}"
    for key in ("config", "G", "D", "optimizer_g", "optimizer_d", "rng") + (("G_ema",) if "G_ema" in state else ()):
        if not isinstance(state[key], dict):
            return f"{key} is {quote(state[key])}, not a dict"
    for key in ("G", "D") + (("G_ema",) if "G_ema" in state else ()):
        if not all(isinstance(value, torch.Tensor) for value in state[key].values()):
            return f"{key} holds something other than tensors"
    if not all(isinstance(state["rng"].get(key), torch.Tensor) for key in ("noise", "torch")):
        return "rng lacks the noise and torch generator states"
    return None


def _first_line(error: BaseException) -> str:
    return clip(str(error), 200)


def _unpickling_reason(error: BaseException) -> str:
    # torch's message advises retrying with weights_only=False or allowlisting the global: exactly what must not
    # be done with a file from a stranger. Keep only the words that say what was refused.
    text = str(error)
    match = (re.search(r"WeightsUnpickler error:\s*(.+)", text)
             or re.search(r"((?:Trying to load unsupported|Unsupported global).+)", text))
    return match.group(1).split(". Please use")[0].strip()[:200] if match else "unsupported content"


def _config_problem(raw: Any) -> str | None:
    """What makes a stored config unusable before it is even read (types, sizes), or None."""
    if not isinstance(raw, dict):
        return f"config is {quote(raw)}, not a dict"
    if not isinstance(raw.get("preset", ""), str) or len(raw.get("preset", "")) > MAX_TEXT_CHARS:
        return f"preset is {quote(raw.get('preset'))}"
    for section in ("model", "data", "train"):
        values = raw.get(section, {})
        if not isinstance(values, dict):
            return f"{section} is {quote(values)}, not a dict"
        for name, value in values.items():
            plain = value is None or isinstance(value, (bool, float)) or (
                isinstance(value, int) and value.bit_length() <= 64) or (
                isinstance(value, str) and len(value) <= MAX_TEXT_CHARS)
            if not isinstance(name, str) or not plain:
                return f"{section} field {quote(name)} is {quote(value)}"
    return None


def config_from_checkpoint(state: dict, path: str | Path) -> RunConfig:
    """The run's config as a checkpoint records it, checked like one given on the command line."""
    problem = _config_problem(state["config"])
    if problem:
        raise MnistGanError(f"{path}: invalid configuration in checkpoint ({problem})")
    try:
        config = RunConfig.from_dict(state["config"])
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:  # e.g. a number stored as a string
        raise MnistGanError(f"{path}: invalid configuration in checkpoint ({_first_line(error)})") from None
    except MnistGanError as error:
        raise MnistGanError(f"{path}: invalid configuration in checkpoint ({_first_line(error)})") from None
    return config


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Weight initialisers do nothing: on the meta device there is nothing to fill, and torch's first meta
    normal_() costs seconds of imports."""

    SKIPPED = {"normal_", "uniform_", "zero_", "zeros_", "ones_", "fill_", "xavier_uniform_", "kaiming_uniform_"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self.SKIPPED:
            return args[0] if args else kwargs.get("tensor")
        return func(*args, **kwargs)


def shapes_on_meta(build: Callable[[], nn.Module | tuple[nn.Module, ...]]) -> list[dict[str, tuple[int, ...]]]:
    """{name: shape} of the state dict of each module build() makes, found without allocating any weights."""
    with torch.device("meta"), _SkipInit():
        modules = build()
    return [{name: tuple(t.shape) for name, t in module.state_dict().items()}
            for module in (modules if isinstance(modules, tuple) else (modules,))]


def expected_shapes(model_config: ModelConfig, path: str | Path) -> tuple[dict, dict]:
    """{name: shape} of G's and D's weights for a config, found without allocating them (on the meta device)."""
    plain = dataclasses.replace(model_config, spectral_norm=False)  # its power iteration takes seconds on meta
    G_shapes, D_shapes = shapes_on_meta(lambda: build_models(plain, path))
    if model_config.spectral_norm:  # what apply_spectral_norm makes of each Conv2d and Linear weight
        with torch.device("meta"), _SkipInit():
            D = build_models(plain, path)[1]
        for layer in [name for name, module in D.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]:
            shape = D_shapes.pop(f"{layer}.weight")
            D_shapes[f"{layer}.parametrizations.weight.original"] = shape
            D_shapes[f"{layer}.parametrizations.weight.0._u"] = shape[:1]
            D_shapes[f"{layer}.parametrizations.weight.0._v"] = (math.prod(shape[1:]),)
    return G_shapes, D_shapes


def fit_problem(expected: dict[str, tuple], weights: dict) -> str | None:
    """How weights (tensors or shapes, by name) differ from the expected shapes, or None."""
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    if missing or unexpected:
        return "; ".join(part for part in (
            f"missing {', '.join(quote(k) for k in missing[:3])}" if missing else "",
            f"unexpected {', '.join(quote(k) for k in unexpected[:3])}" if unexpected else "") if part)
    for key, shape in expected.items():
        found = tuple(weights[key].shape) if isinstance(weights[key], torch.Tensor) else weights[key]
        if found != shape:
            return f"size mismatch for {quote(key)}: the file has {found}, the configured model needs {shape}"
    return None


def check_weights_fit(model_config: ModelConfig, state: dict, path: str | Path) -> None:
    """Refuse G, G_ema or D weights whose names or shapes are not those the config builds, before it is built.

    A config that declares a huge model but holds small weights is refused here, without the allocation.
    """
    G_shapes, D_shapes = expected_shapes(model_config, path)
    for key, expected, what in (("G", G_shapes, "generator"), ("G_ema", G_shapes, "generator average"),
                                ("D", D_shapes, "discriminator")):
        problem = fit_problem(expected, state[key]) if key in state else None
        if problem:
            raise MnistGanError(f"{path}: {what} weights do not fit this architecture ({problem})")


def _nonfinite_problem(weights: dict) -> str | None:
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"{quote(name)} holds NaN or infinite values"
        if name.endswith("running_var") and bool((tensor < 0).any()):
            return f"{quote(name)} holds negative variances"
    return None


def check_finite(weights: dict, what: str, path: str | Path) -> None:
    """Refuse weights that can only draw noise (NaN, infinity, negative BatchNorm variances)."""
    problem = _nonfinite_problem(weights)
    if problem:
        raise MnistGanError(f"{path}: {what} weights are unusable ({problem}): the run that wrote them had "
                            "diverged, or the file is damaged; its samples would be noise")


def load_state(module: nn.Module, state_dict: dict, what: str, path: str | Path) -> None:
    """Load weights strictly, turning an architecture mismatch into one clear error."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as error:
        reason = [line for line in str(error)[:2000].strip().splitlines() if line.strip()]
        raise MnistGanError(f"{path}: {what} weights do not fit this architecture "
                            f"({clip(reason[1] if len(reason) > 1 else reason[0] if reason else error)})") from None


def models_from_checkpoint(state: dict, path: str | Path) -> tuple[RunConfig, nn.Module, nn.Module]:
    """Rebuild (config, G, D) from a loaded checkpoint, in eval mode on the CPU. G holds the moving average of
    G's weights when the run kept one (--ema-decay), as sampling and evaluation should use."""
    config = config_from_checkpoint(state, path)
    check_weights_fit(config.model, state, path)
    weights = state.get("G_ema", state["G"])
    check_finite(weights, "generator", path)
    G, D = build_models(config.model, path)
    load_state(G, weights, "generator", path)
    load_state(D, state["D"], "discriminator", path)
    return config, G.eval(), D.eval()


def build_models(model_config: ModelConfig, path: str | Path) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for a model config read from a file, turning a config no model can have into MnistGanError."""
    try:
        return build_generator(model_config), build_discriminator(model_config)
    except (TypeError, ValueError, RuntimeError, MemoryError, OverflowError) as error:
        raise MnistGanError(f"{path}: cannot build the model this file describes ({type(error).__name__}: "
                            f"{_first_line(error)})") from None


def export_generator(G: nn.Module, model_config: ModelConfig, path: str | Path, iteration: int) -> None:
    """Write G's weights and config to a safetensors file, atomically."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in G.state_dict().items()}
    metadata = {"format": "mnist-gan-generator", "format_version": str(FORMAT_VERSION),
                "model_config": json.dumps(asdict(model_config)), "iteration": str(iteration)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_exported_generator(path: str | Path) -> tuple[ModelConfig, nn.Module]:
    """Read a `generator.safetensors` export back into (model config, G in eval mode).

    The header, the metadata and every weight shape are checked against the declared config before the weights
    are read or the model is built; weights holding NaN or infinity are refused.
    """
    path = Path(path)
    with open_safetensors(path, "generator export", MAX_EXPORT_BYTES) as export:
        metadata = export.metadata
        if metadata.get("format") != "mnist-gan-generator" or "model_config" not in metadata:
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
                                f"{_first_line(error)})") from None
        model_config = config_from_checkpoint({"config": {"model": raw}}, path).model
        problem = fit_problem(expected_shapes(model_config, path)[0], export.shapes)
        if problem:
            raise MnistGanError(f"{path}: generator weights do not fit this architecture ({problem})")
        tensors = export.tensors()
    check_finite(tensors, "generator", path)
    G = build_models(model_config, path)[0]
    load_state(G, tensors, "generator", path)
    return model_config, G.eval()


def load_generator(path: str | Path) -> tuple[ModelConfig, nn.Module, nn.Module | None]:
    """Load (model config, G, D or None) from a checkpoint, a run directory, or a generator export."""
    path = Path(path)
    if path.is_dir():
        path, state = load_latest_checkpoint(path)
    elif path.suffix == ".safetensors":
        model_config, G = load_exported_generator(path)
        return model_config, G, None
    else:
        state = load_checkpoint(path)
    config, G, D = models_from_checkpoint(state, path)
    return config.model, G, D


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}.ckpt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("iter_*.ckpt"))


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint of a run directory that loads cleanly; each one passed over is noted on stderr."""
    return load_latest_checkpoint(run_dir)[0]


def load_latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(path, state) of the newest checkpoint that loads cleanly, read once."""
    run_dir = Path(run_dir)
    candidates = list_checkpoints(run_dir)
    reasons = []
    for candidate in reversed(candidates):
        try:
            return candidate, load_checkpoint(candidate)
        except MnistGanError as error:
            note(f"skipping {candidate}: {str(error).removeprefix(f'{candidate}: ')}")
            reasons.append(str(error))
    detail = f" ({len(candidates)} unusable; newest: {reasons[0]})" if reasons else ""
    raise MnistGanError(f"{run_dir}: no usable checkpoint in {run_dir / 'checkpoints'}{detail}")
