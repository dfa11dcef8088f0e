"""Export a trained G for other tools: safetensors (the file a run writes as generator.safetensors) or ONNX.

The exported G is the one sampling uses: the moving average of G's weights where the run keeps one. An ONNX
export takes `z` (batch, z_dim) float32, and for a conditional G also `labels` (batch,) int64 digits in
0..num_classes-1, and returns `images` (batch, 1, 28, 28) in [-1, 1]; the batch size is free. A label outside
0..num_classes-1 gives an image of NaNs, not a silent wrong digit (ONNX's OneHot would make it no class or, for a
negative one, the last class), and `run_onnx` refuses such labels outright. Before the file is
written, onnxruntime runs it on ONNX_CHECK_SAMPLES noise vectors and its images must match PyTorch's to within
ONNX_TOLERANCE. The model's config and iteration are stored in the ONNX file's metadata, as in the safetensors
export. ONNX needs the optional packages onnx and onnxruntime (`pip install 'mnist-gan[onnx]'`).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import sample_z
from mnist_gan.io.files import atomic_path, check_replaceable
from mnist_gan.run.checkpoint import load_checkpoint, load_latest_checkpoint, models_from_checkpoint
from mnist_gan.run.generator_file import export_generator, generator_metadata, read_generator_export
from mnist_gan.settings.config import ModelConfig

logger = logging.getLogger(__name__)

FORMATS = ("safetensors", "onnx")
ONNX_OPSET = 17  # supported by every onnxruntime since 1.11 (2022) and by torch's TorchScript exporter
ONNX_CHECK_SAMPLES = 8  # noise vectors (and digits) run through both runtimes before the file is written
ONNX_TOLERANCE = 1e-4  # largest pixel difference (images in [-1, 1]) accepted between onnxruntime and PyTorch
ONNX_EXTRA = "pip install 'mnist-gan[onnx]'"


def export(source: str | Path, out: str | Path | None = None, format: str = "safetensors", *,
           overwrite: bool = False) -> Path:
    """Write the sampling G of `source` (a .ckpt, a run directory or a generator.safetensors) to `out` in
    `format` and return its path. An existing `out` is refused unless `overwrite`, which replaces a regular
    file only; the file appears whole or not at all."""
    if format not in FORMATS:
        raise MnistGanError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    if format == "onnx":
        require_onnx()  # before loading anything: a missing package is the first thing to say
    if not Path(source).exists():
        raise MnistGanError(f"{source}: no such file or directory")
    out = Path(out) if out is not None else Path(f"generator.{format}")
    if out.is_dir():
        raise MnistGanError(f"{out}: is a directory; --out takes a file name")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise MnistGanError(f"{out}: already exists; pass --overwrite or another --out")
    check_replaceable(out)  # a device or FIFO is never replaced (atomic_path checks again as it renames)
    model_config, G, iteration = load_for_export(source)
    if format == "safetensors":
        with atomic_path(out, replace=overwrite) as tmp:  # without overwrite, published only if out is still new
            export_generator(G, model_config, tmp, iteration)
    else:
        try:
            payload = onnx_bytes(G, model_config, iteration)
            difference = onnx_difference(payload, G, model_config)
        except MnistGanError:
            raise
        except Exception as error:  # onnx's and onnxruntime's own errors, e.g. an onnxruntime too old for the opset
            detail = (str(error).strip().splitlines() or ["no detail"])[0][:200]
            raise MnistGanError(f"ONNX export failed ({type(error).__name__}: {detail}); onnx and onnxruntime "
                                f"must be recent: {ONNX_EXTRA} --upgrade") from None
        logger.info(f"onnxruntime matches PyTorch on {ONNX_CHECK_SAMPLES} samples: largest pixel difference "
                    f"{difference:.2e} (limit {ONNX_TOLERANCE:g})")
        with atomic_path(out, replace=overwrite) as tmp:
            tmp.write_bytes(payload)
    return out


def require_onnx() -> None:
    """Raise MnistGanError, naming the missing package and the install command, unless onnx and onnxruntime import."""
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            raise MnistGanError(f"--format onnx needs the {name} package: {ONNX_EXTRA}") from None


def load_for_export(source: str | Path) -> tuple[ModelConfig, nn.Module, int]:
    """(model config, G in eval mode on the CPU, training iteration) from a checkpoint, the newest usable
    checkpoint of a run directory, or a generator.safetensors. G is the moving average where the run keeps one,
    as `load_generator` returns it."""
    path = Path(source)
    if path.is_file() and path.suffix == ".safetensors":
        return read_generator_export(path)
    path, state = load_latest_checkpoint(path) if path.is_dir() else (path, load_checkpoint(path))
    config, G, _ = models_from_checkpoint(state, path)
    return config.model, G, state["iteration"]


def example_inputs(model_config: ModelConfig, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(z (n, z_dim) float32, labels (n,) int64 or None): n inputs from G's prior, the digits 0, 1, ... in turn."""
    z = sample_z(n, model_config, torch.Generator().manual_seed(seed))
    labels = torch.arange(n) % model_config.num_classes if model_config.conditional else None
    return z, labels


def onnx_bytes(G: nn.Module, model_config: ModelConfig, iteration: int) -> bytes:
    """G as a checked ONNX model (inputs z [, labels], output images, a free batch size), config in its metadata.

    Uses torch's TorchScript-based exporter (dynamo=False): it needs neither onnxscript nor a network, and traces
    these small feed-forward networks exactly.
    """
    import onnx

    z, labels = example_inputs(model_config, 2)
    inputs, names = ((z, labels), ["z", "labels"]) if labels is not None else ((z,), ["z"])
    buffer = io.BytesIO()
    options = {"dynamo": False} if _has_dynamo_option() else {}
    exported = _LabelChecked(G, model_config.num_classes) if labels is not None else G
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are about our choice, not the user's
        torch.onnx.export(exported.eval(), inputs, buffer, input_names=names, output_names=["images"],
                          dynamic_axes={name: {0: "batch"} for name in [*names, "images"]},
                          opset_version=ONNX_OPSET, **options)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in generator_metadata(model_config, iteration).items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = "mnist-gan generator: z [, labels] -> images (batch, 1, 28, 28) in [-1, 1]"
    onnx.checker.check_model(model)
    return model.SerializeToString()


class _LabelChecked(nn.Module):
    """A conditional G whose images are all NaN for a label outside 0..num_classes-1: two comparisons and a
    Where in the ONNX graph, which has no way to raise an error."""

    def __init__(self, G: nn.Module, num_classes: int):
        super().__init__()
        self.G, self.num_classes = G, num_classes

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = self.G(z, labels)  # (B, C, 28, 28)
        valid = (labels >= 0) & (labels < self.num_classes)  # (B,)
        offset = torch.where(valid, torch.tensor(0.0), torch.tensor(float("nan")))  # (B,): 0, or NaN to poison
        return images + offset[:, None, None, None].to(images.dtype)  # a constant image would fix the batch size


def _has_dynamo_option() -> bool:
    import inspect

    return "dynamo" in inspect.signature(torch.onnx.export).parameters  # torch 2.5 and newer


def run_onnx(model: bytes | str | Path, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Run an exported ONNX G with onnxruntime on the CPU: images (B, 1, 28, 28) as a float32 tensor. Labels
    outside 0..num_classes-1 (the model's, from its metadata) are refused with MnistGanError."""
    import json

    import onnxruntime

    session = onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model),
                                           providers=["CPUExecutionProvider"])
    feed = {"z": z.float().numpy()}
    if labels is not None:
        config = json.loads(session.get_modelmeta().custom_metadata_map.get("model_config", "{}"))
        classes = config.get("num_classes", 10) if isinstance(config, dict) else 10
        if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < classes):
            raise MnistGanError(f"labels must be in 0..{classes - 1}, got {int(labels.min())}..{int(labels.max())}")
        feed["labels"] = labels.long().numpy()
    return torch.from_numpy(session.run(["images"], feed)[0])


def onnx_difference(payload: bytes, G: nn.Module, model_config: ModelConfig) -> float:
    """Largest |onnxruntime - PyTorch| pixel difference on ONNX_CHECK_SAMPLES inputs; raise MnistGanError above
    ONNX_TOLERANCE (nothing is written then)."""
    z, labels = example_inputs(model_config, ONNX_CHECK_SAMPLES, seed=1)
    with torch.no_grad():
        expected = G.eval()(z, labels).float()
    difference = float((run_onnx(payload, z, labels) - expected).abs().max())
    if not difference <= ONNX_TOLERANCE:  # also catches NaN
        raise MnistGanError(f"the ONNX export differs from PyTorch by {difference:.2e} (limit {ONNX_TOLERANCE:g}); "
                            "nothing was written")
    return difference
