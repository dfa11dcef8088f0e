"""One self-describing checkpoint file (.ckpt), and finding and loading a run's checkpoints.

A checkpoint is a dict: format version, iteration, epoch, the run's config, G, D, both optimizers and the RNG
states, G_ema (the moving average of G's weights) when the run keeps one, and a --self-condition run's clusters
(every training image's cluster id, the centres, the shares). It is loaded with
`torch.load(weights_only=True)`, which refuses anything but tensors and plain containers, so a checkpoint can never
run code. The generator-only export a run also writes is mnist_gan.run.generator_file's.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.gan.weights import build_models, check_finite, check_weights_fit, load_state
from mnist_gan.io.files import atomic_path
from mnist_gan.io.untrusted import check_zip, open_regular, tree_leaves
from mnist_gan.run.generator_file import load_exported_generator
from mnist_gan.settings.config import ModelConfig, RunConfig
from mnist_gan.settings.config_file import read_config_file
from mnist_gan.settings.validation import config_from_record

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "iteration", "epoch", "config", "G", "D", "optimizer_g", "optimizer_d", "rng")

# ~25x the largest preset's checkpoint (seed: G, D, their optimizer states and an EMA of G, ~150 MB).
MAX_CHECKPOINT_BYTES = 4 * 2**30
# A generator export holds G alone: the seed preset's is 27 MB.
# torch.save writes one zip member per tensor storage: a checkpoint has about 100.
MAX_CHECKPOINT_MEMBERS = 10_000
# The pickle holds the structure and small values (tensors are members of their own): a real one is ~10 KB.
MAX_PICKLE_BYTES = 32 * 2**20
# Values in a checkpoint's nested structure, shared parts counted per reference: a real one has ~400.
MAX_STATE_VALUES = 100_000
# Nesting depth of a checkpoint: a real one is 5 deep (optimizer_g -> state -> 0 -> momentum_buffer).
MAX_STATE_DEPTH = 16
# The settings --resume may change (--iterations, --epochs): a run's length. Any other edit of config.json is refused.
LENGTH_FIELDS = ("train.iterations", "train.epochs")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; `state` must hold REQUIRED_KEYS except format_version."""
    state = {"format_version": FORMAT_VERSION, **state}
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # on any error the temporary file is removed
        writer = _Writer(handle)
        try:
            torch.save(state, writer)
        except RuntimeError as error:  # torch's C++ writer turns the file's OSError (ENOSPC) into this
            reason = writer.error.strerror or writer.error if writer.error is not None else \
                clip(re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(error)), 200)  # no C++ source line
            raise MnistGanError(f"{path}: cannot write ({reason}); the run's earlier checkpoints are "
                                "untouched") from None


class _Writer:
    """A file's write and flush for torch.save, remembering the first OSError: torch re-raises it as a
    RuntimeError that no longer says what failed (a full disk, a lost network drive)."""

    def __init__(self, handle) -> None:
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.handle.flush()


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
    logger.debug(f"{path}: a checkpoint of iteration {state['iteration']} ({size:,} bytes)")
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
                            f"{clip(error, 200)})") from None


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
    clusters = state.get("clusters", {})  # a --self-condition run's (mnist_gan.gan.clusters checks their shapes)
    if not isinstance(clusters, dict) or not all(isinstance(value, torch.Tensor) for value in clusters.values()):
        return "clusters is not a dict of tensors"
    return None


def _unpickling_reason(error: BaseException) -> str:
    # torch's message advises retrying with weights_only=False or allowlisting the global: exactly what must not
    # be done with a file from a stranger. Keep only the words that say what was refused.
    text = str(error)
    match = (re.search(r"WeightsUnpickler error:\s*(.+)", text)
             or re.search(r"((?:Trying to load unsupported|Unsupported global).+)", text))
    return match.group(1).split(". Please use")[0].strip()[:200] if match else "unsupported content"


def config_from_checkpoint(state: dict, path: str | Path) -> RunConfig:
    """The run's config as a checkpoint records it, checked like one given on the command line."""
    return config_from_record(state["config"], f"{path}: invalid configuration in checkpoint")


def check_config_edits(config_file: Path, saved: RunConfig, checkpoint: Path, length_given: bool) -> None:
    """Refuse a run's config.json (`config_file`) edited by hand away from `saved`, the settings of `checkpoint`,
    which --resume continues with: it cannot apply the edit, so the message names the first field changed. A
    changed length (LENGTH_FIELDS) is only said to be ignored (--iterations/--epochs set it); the file is then
    rewritten with what the resumed run uses. A missing config.json is fine."""
    if not (config_file.exists() or config_file.is_symlink()):
        return
    try:
        recorded = _settings(read_config_file(config_file))
    except MnistGanError as error:
        raise MnistGanError(f"{error}; --resume continues with the settings of {checkpoint}: delete the file to "
                            "have them written there again") from None
    settings = _settings(saved)
    changed = [key for key, value in recorded.items() if value != settings.get(key)]
    edits = [key for key in changed if key not in LENGTH_FIELDS]
    if edits:
        key = edits[0]
        raise MnistGanError(f"{config_file}: {key} is {quote(recorded[key])}, but the run was trained with "
                            f"{quote(settings.get(key))} ({checkpoint}); --resume continues a run as its checkpoint "
                            f"records it and cannot apply an edit: undo it, or start a new run with --config "
                            f"{config_file}")
    if changed and not length_given:
        logger.warning(f"{config_file}: the edited {' and '.join(changed)} is ignored: --resume keeps the length "
                       f"of {checkpoint.name} (pass --iterations or --epochs to change it)")


def _settings(config: RunConfig) -> dict[str, Any]:
    """{"preset": ..., "train.lr": ..., ...}: every setting of a config by its dotted name."""
    flat: dict[str, Any] = {}
    for section, fields in config.to_dict().items():
        flat |= {f"{section}.{key}": value for key, value in fields.items()} if isinstance(fields, dict) else \
            {section: fields}
    return flat


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
    """The newest checkpoint of a run directory that loads cleanly; each one passed over is a warning."""
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
            logger.warning(f"skipping {candidate}: {str(error).removeprefix(f'{candidate}: ')}")
            reasons.append(str(error))
    detail = f" ({len(candidates)} unusable; newest: {reasons[0]})" if reasons else ""
    raise MnistGanError(f"{run_dir}: no usable checkpoint in {run_dir / 'checkpoints'}{detail}")
