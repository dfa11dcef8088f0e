"""One self-describing checkpoint file, and the generator-only safetensors export.

A checkpoint is a dict: format version, iteration, epoch, the run's config, G, D, both optimizers and the RNG
states, and G_ema (the moving average of G's weights) when the run keeps one. It is loaded with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers, so a checkpoint can never run code. The export holds G's weights with its config in the
safetensors metadata, readable by any safetensors tool.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_gan.config import ModelConfig, RunConfig
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
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint written by save_checkpoint; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise MnistGanError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unsafe content"
        raise MnistGanError(f"{path}: refused to load: the file holds objects a safe checkpoint cannot "
                            f"({first_line[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError,
            UnicodeDecodeError, TypeError, AttributeError) as error:
        raise MnistGanError(f"{path}: not a readable checkpoint ({type(error).__name__}: "
                            f"{str(error).splitlines()[0][:200] if str(error) else 'no detail'})") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise MnistGanError(f"{path}: not an mnist-gan checkpoint (missing fields)")
    version = state["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise MnistGanError(f"{path}: checkpoint format version {version} is newer than this mnist-gan "
                            f"understands ({FORMAT_VERSION}); upgrade mnist-gan")
    if not isinstance(state["config"], dict):
        raise MnistGanError(f"{path}: checkpoint config is not a dict")
    return state


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
    config = RunConfig.from_dict(state["config"])
    G, D = build_generator(config.model), build_discriminator(config.model)
    load_state(G, state.get("G_ema", state["G"]), "generator", path)
    load_state(D, state["D"], "discriminator", path)
    return config, G.eval(), D.eval()


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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise MnistGanError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != "mnist-gan-generator" or "model_config" not in metadata:
        raise MnistGanError(f"{path}: safetensors file without mnist-gan generator metadata")
    if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
        raise MnistGanError(f"{path}: export format version {metadata['format_version']} is newer than this "
                            "mnist-gan understands; upgrade mnist-gan")
    try:
        model_config = RunConfig.from_dict({"model": json.loads(metadata["model_config"])}).model
    except json.JSONDecodeError as error:
        raise MnistGanError(f"{path}: corrupt model config in metadata ({error})") from None
    G = build_generator(model_config)
    load_state(G, tensors, "generator", path)
    return model_config, G.eval()


def load_generator(path: str | Path) -> tuple[ModelConfig, nn.Module, nn.Module | None]:
    """Load (model config, G, D or None) from a checkpoint, a run directory, or a generator export."""
    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path)
    if path.suffix == ".safetensors":
        model_config, G = load_exported_generator(path)
        return model_config, G, None
    config, G, D = models_from_checkpoint(load_checkpoint(path), path)
    return config.model, G, D


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:08d}.ckpt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("iter_*.ckpt"))


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint of a run directory that loads cleanly."""
    run_dir = Path(run_dir)
    candidates = list_checkpoints(run_dir)
    for candidate in reversed(candidates):
        try:
            load_checkpoint(candidate)
            return candidate
        except MnistGanError:
            continue
    raise MnistGanError(f"{run_dir}: no usable checkpoint in {run_dir / 'checkpoints'}")
