"""Property-based tests: the data readers and the checkpoint loaders, fed random bytes and damaged files, either
succeed or raise MnistGanError. They never fail any other way and never hang."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_gan.checkpoint import (
    build_models,
    config_from_checkpoint,
    load_checkpoint,
    load_exported_generator,
)
from mnist_gan.config import RunConfig
from mnist_gan.data import load_image_folder, load_npz, parse_idx, read_idx
from mnist_gan.errors import MnistGanError

FUZZ = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LIMIT_S = 10  # a reader stuck this long on one input counts as hung


class Hung(BaseException):  # not an Exception, so no reader's `except Exception` can swallow it
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise Hung(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_or_our_error(read, payload: bytes, name: str = "input.bin"):
    """Write payload to a fresh file and read it; return the result, or None for a MnistGanError."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        path.write_bytes(payload)
        with time_limit(LIMIT_S):
            try:
                return read(path)
            except MnistGanError as error:
                assert str(error) and "\n" not in str(error).strip()  # one line for the user
                return None


def damage(blob: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """Truncate blob to `cut` bytes, then overwrite some bytes."""
    damaged = bytearray(blob[:cut])
    for position, value in flips:
        if damaged:
            damaged[position % len(damaged)] = value
    return bytes(damaged)


damages = st.tuples(st.integers(0, 2**20), st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)),
                                                     max_size=4))


def _idx(array: np.ndarray, magic: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


_rng = np.random.default_rng(0)
_IMAGES = _rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
_LABELS = np.array([3, 1, 4, 1], dtype=np.uint8)
VALID_IDX = {"images": _idx(_IMAGES, 2051), "labels": _idx(_LABELS, 2049)}


# ------------------------------------------------------------------------------------------ IDX

@FUZZ
@given(payload=st.binary(max_size=4000), compress=st.booleans())
def test_idx_reader_on_random_bytes(payload, compress):
    read_or_our_error(read_idx, gzip.compress(payload) if compress else payload)


@FUZZ
@given(kind=st.sampled_from(sorted(VALID_IDX)), compress=st.booleans(), hurt=damages)
def test_idx_reader_on_damaged_files(kind, compress, hurt):
    blob = gzip.compress(VALID_IDX[kind], mtime=0) if compress else VALID_IDX[kind]
    result = read_or_our_error(read_idx, damage(blob, hurt[0] % (len(blob) + 1), hurt[1]))
    if result is not None:
        assert result.dtype == np.uint8 and result.ndim in (1, 3)


@FUZZ
@given(magic=st.sampled_from([2051, 2049, 2050, 0]), dims=st.lists(st.integers(0, 2**32 - 1), max_size=4),
       body=st.binary(max_size=3200))
def test_idx_parser_on_forged_headers(magic, dims, body):
    raw = magic.to_bytes(4, "big")[:3] + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body
    with time_limit(LIMIT_S):
        try:
            array = parse_idx(raw, "forged")
        except MnistGanError:
            return
    assert array.size == len(body)


# ------------------------------------------------------------------------------------------ npz and images

def _npz(compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, x_train=_IMAGES, y_train=_LABELS.astype(np.int64))
    return buffer.getvalue()


VALID_NPZ = {False: _npz(False), True: _npz(True)}


@FUZZ
@given(compressed=st.booleans(), hurt=damages)
def test_npz_reader_on_damaged_files(compressed, hurt):
    blob = VALID_NPZ[compressed]
    dataset = read_or_our_error(load_npz, damage(blob, hurt[0] % (len(blob) + 1), hurt[1]), "data.npz")
    if dataset is not None:
        assert dataset.images.dtype == torch.uint8 and dataset.images.shape[1:] == (28, 28)


@FUZZ
@given(payload=st.binary(max_size=2000), zip_header=st.booleans())
def test_npz_reader_on_random_bytes(payload, zip_header):
    read_or_our_error(load_npz, (b"PK\x03\x04" if zip_header else b"") + payload, "data.npz")


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_IMAGES[0], mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


VALID_PNG = _png()


def _read_folder_with(path: Path):
    return load_image_folder(path.parent)


@FUZZ
@given(hurt=damages, random_bytes=st.one_of(st.none(), st.binary(max_size=2000)))
def test_image_folder_reader_on_damaged_images(hurt, random_bytes):
    payload = random_bytes if random_bytes is not None else damage(VALID_PNG, hurt[0] % (len(VALID_PNG) + 1),
                                                                   hurt[1])
    dataset = read_or_our_error(_read_folder_with, payload, "digit.png")
    if dataset is not None:
        assert dataset.images.shape == (1, 28, 28)


# ------------------------------------------------------------------------------------------ checkpoints

def _small_checkpoint() -> bytes:
    """A structurally complete checkpoint with tiny stand-in weights: what load_checkpoint checks, in 20 KB."""
    state = {"format_version": 1, "iteration": 2, "epoch": 0, "config": RunConfig().to_dict(),
             "G": {"weight": torch.arange(6.0)}, "D": {"weight": torch.ones(2, 2)},
             "optimizer_g": {"state": {0: {"momentum_buffer": torch.zeros(6)}}, "param_groups": [{"lr": 0.1}]},
             "optimizer_d": {"state": {}, "param_groups": []},
             "rng": {"noise": torch.Generator().get_state(), "torch": torch.get_rng_state()}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


VALID_CHECKPOINT = _small_checkpoint()


def test_the_small_checkpoint_is_valid():
    state = read_or_our_error(load_checkpoint, VALID_CHECKPOINT, "x.ckpt")
    assert state is not None and state["iteration"] == 2


@FUZZ
@given(hurt=damages)
def test_checkpoint_loader_on_damaged_checkpoints(hurt):
    blob = VALID_CHECKPOINT
    state = read_or_our_error(load_checkpoint, damage(blob, hurt[0] % (len(blob) + 1), hurt[1]), "x.ckpt")
    if state is not None:
        assert isinstance(state["G"], dict)


@FUZZ
@given(payload=st.binary(max_size=4000), zip_header=st.booleans())
def test_checkpoint_loader_on_random_bytes(payload, zip_header):
    read_or_our_error(load_checkpoint, (b"PK\x03\x04" if zip_header else b"") + payload, "x.ckpt")


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70)
                           | st.floats(allow_subnormal=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=3), max_leaves=6)
FIELD_NAMES = sorted({name for section in RunConfig().to_dict().values() if isinstance(section, dict)
                      for name in section})


@settings(FUZZ, max_examples=200)
@given(sections=st.dictionaries(st.sampled_from(["model", "data", "train", "other"]),
                                st.one_of(json_values, st.dictionaries(st.sampled_from(FIELD_NAMES), json_values,
                                                                       max_size=4)), max_size=3))
def test_checkpoint_config_is_checked(sections):
    """A checkpoint's config is untrusted too: any values at all give a config or MnistGanError."""
    with time_limit(LIMIT_S):
        try:
            config = config_from_checkpoint({"config": sections}, "x.ckpt")
        except MnistGanError:
            return
    assert isinstance(config, RunConfig)
    if config.model.z_dim <= 256:  # building is the slow part; small models show it accepts what passed
        with time_limit(LIMIT_S):
            try:
                build_models(config.model, "x.ckpt")
            except MnistGanError:
                pass


def _small_export() -> bytes:
    from safetensors.torch import save

    metadata = {"format": "mnist-gan-generator", "format_version": "1", "iteration": "2",
                "model_config": json.dumps({"z_dim": 100})}
    return save({"project.0.weight": torch.zeros(3, 2)}, metadata=metadata)


VALID_EXPORT = _small_export()


@settings(FUZZ, max_examples=60)
@given(hurt=damages, random_bytes=st.one_of(st.none(), st.binary(max_size=2000)))
def test_export_loader_on_damaged_files(hurt, random_bytes):
    blob = VALID_EXPORT
    payload = random_bytes if random_bytes is not None else damage(blob, hurt[0] % (len(blob) + 1), hurt[1])
    # The stand-in weights never fit G: the only acceptable outcome is our error.
    assert read_or_our_error(load_exported_generator, payload, "generator.safetensors") is None


@pytest.mark.parametrize("flips", [[], [(9, 0x41)]])
def test_export_loader_sees_the_damage(flips):
    """Sanity check for the fuzzing above: the undamaged export fails only at the weights."""
    with pytest.raises(MnistGanError, match="weights do not fit|not a readable safetensors"):
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "g.safetensors"
            path.write_bytes(damage(VALID_EXPORT, len(VALID_EXPORT), flips))
            load_exported_generator(path)
