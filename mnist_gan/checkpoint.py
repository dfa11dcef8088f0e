"""One self-describing checkpoint file, and the generator-only safetensors export.

A checkpoint is a dict: format version, iteration, epoch, the run's config, G, D, both optimizers and the RNG
states, and G_ema (the moving average of G's weights) when the run keeps one. It is loaded with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers, so a checkpoint can never run code. The export holds G's weights with its config in the
safetensors metadata, readable by any safetensors tool.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_gan.config import ModelConfig, RunConfig, validate
from mnist_gan.data import note
from mnist_gan.errors import MnistGanError
from mnist_gan.files import atomic_path
from mnist_gan.models import build_discriminator, build_generator

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "iteration", "epoch", "config", "G", "D", "optimizer_g", "optimizer_d", "rng")


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

    Any file that is not a complete, current checkpoint raises MnistGanError, whatever its bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise MnistGanError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols; the error below says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(error)
        if "global" not in reason.lower() and "class" not in reason.lower():
            raise MnistGanError(f"{path}: not a readable checkpoint ({reason})") from None
        raise MnistGanError(f"{path}: refused to load: the file holds objects a safe checkpoint cannot hold, "
                            f"and loading them could run code ({reason})") from None
    except Exception as error:  # the file is untrusted input: any failure to parse it is the file's fault
        raise MnistGanError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                            f"{_first_line(error)})") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise MnistGanError(f"{path}: not an mnist-gan checkpoint (missing fields)")
    version = state["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MnistGanError(f"{path}: not an mnist-gan checkpoint (format version {version!r})")
    if version > FORMAT_VERSION:
        raise MnistGanError(f"{path}: checkpoint format version {version} is newer than this mnist-gan "
                            f"understands ({FORMAT_VERSION}); upgrade mnist-gan")
    problem = _field_problem(state)
    if problem:
        raise MnistGanError(f"{path}: damaged checkpoint ({problem})")
    return state


def _field_problem(state: dict) -> str | None:
    """What is wrong with the fields of a loaded checkpoint, or None."""
    for key in ("iteration", "epoch"):
        if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0:
            return f"{key} is {state[key]!r}"
    for key in ("config", "G", "D", "optimizer_g", "optimizer_d", "rng"):
        if not isinstance(state[key], dict):
            return f"{key} is not a dict"
    for key in ("G", "D"):
        if not all(isinstance(value, torch.Tensor) for value in state[key].values()):
            return f"{key} holds something other than tensors"
    if not all(isinstance(state["rng"].get(key), torch.Tensor) for key in ("noise", "torch")):
        return "rng lacks the noise and torch generator states"
    return None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:200] if lines else "no detail"


def _unpickling_reason(error: BaseException) -> str:
    # torch's message advises retrying with weights_only=False or allowlisting the global: exactly what must not
    # be done with a file from a stranger. Keep only the words that say what was refused.
    text = str(error)
    match = (re.search(r"WeightsUnpickler error:\s*(.+)", text)
             or re.search(r"((?:Trying to load unsupported|Unsupported global).+)", text))
    return match.group(1).split(". Please use")[0].strip()[:200] if match else "unsupported content"


def config_from_checkpoint(state: dict, path: str | Path) -> RunConfig:
    """The run's config as a checkpoint records it, checked like one given on the command line."""
    try:
        config = RunConfig.from_dict(state["config"])
        validate(config)
    except (TypeError, ValueError, AttributeError) as error:  # e.g. a number stored as a string
        raise MnistGanError(f"{path}: invalid configuration in checkpoint ({error})") from None
    except MnistGanError as error:
        raise MnistGanError(f"{path}: invalid configuration in checkpoint ({error})") from None
    return config


def load_state(module: nn.Module, state_dict: dict, what: str, path: str | Path) -> None:
    """Load weights strictly, turning an architecture mismatch into one clear error."""
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as error:
        reason = str(error).strip().splitlines()
        raise MnistGanError(f"{path}: {what} weights do not fit this architecture "
                            f"({reason[1].strip() if len(reason) > 1 else reason[0] if reason else error})") from None


def models_from_checkpoint(state: dict, path: str | Path) -> tuple[RunConfig, nn.Module, nn.Module]:
    """Rebuild (config, G, D) from a loaded checkpoint, in eval mode on the CPU. G holds the moving average of
    G's weights when the run kept one (--ema-decay), as sampling and evaluation should use."""
    config = config_from_checkpoint(state, path)
    G, D = build_models(config.model, path)
    load_state(G, state.get("G_ema", state["G"]), "generator", path)
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
    """Read a `generator.safetensors` export back into (model config, G in eval mode)."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except Exception as error:  # untrusted bytes: any parse failure is the file's fault
        raise MnistGanError(f"{path}: not a readable safetensors file ({_first_line(error)})") from None
    if metadata.get("format") != "mnist-gan-generator" or "model_config" not in metadata:
        raise MnistGanError(f"{path}: safetensors file without mnist-gan generator metadata")
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise MnistGanError(f"{path}: export format version {version!r} is not a number")
    if int(version) > FORMAT_VERSION:
        raise MnistGanError(f"{path}: export format version {version} is newer than this "
                            "mnist-gan understands; upgrade mnist-gan")
    try:
        model_config = config_from_checkpoint({"config": {"model": json.loads(metadata["model_config"])}}, path).model
    except json.JSONDecodeError as error:
        raise MnistGanError(f"{path}: corrupt model config in metadata ({error})") from None
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
