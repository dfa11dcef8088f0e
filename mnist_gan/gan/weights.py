"""Weights checked against the networks their config describes: the names and shapes that config builds (found
on the meta device, without allocating a weight), values that can draw more than noise, and strict loading. A
file that declares a huge model but holds small weights is refused before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.gan.models import build_discriminator, build_generator
from mnist_gan.settings.config import ModelConfig


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


def build_models(model_config: ModelConfig, path: str | Path) -> tuple[nn.Module, nn.Module]:
    """Build (G, D) for a model config read from a file, turning a config no model can have into MnistGanError."""
    try:
        return build_generator(model_config), build_discriminator(model_config)
    except (TypeError, ValueError, RuntimeError, MemoryError, OverflowError) as error:
        raise MnistGanError(f"{path}: cannot build the model this file describes ({type(error).__name__}: "
                            f"{clip(error, 200)})") from None

